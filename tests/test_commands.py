"""Every console command is installed, answers --help with its own flags, and the README
names only installed commands."""

import os
import re
import subprocess
import sys
import tomllib

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
  SCRIPTS = tomllib.load(f)["project"]["scripts"]
# One flag each command defines itself: --help must list it.
OWN_FLAG = {
    "efficientnet-train": "--workdir", "efficientnet-convert": "--format",
    "efficientnet-evaluate": "--weights", "efficientnet-predict": "--top_k",
    "efficientnet-tables": "--sweep_dir", "efficientnet-sweep": "--sweep_dir",
    "efficientnet-grid-search": "--report_only", "efficientnet-latency": "--models",
    "efficientnet-benchmark": "--peer", "efficientnet-benchmark-input": "--num_images",
    "efficientnet-prepare-imagenet": "--data_dir",
    "efficientnet-export": "--include_preprocessing", "efficientnet-plot": "--x_axis",
    "efficientnet-profile": "--steps", "efficientnet-accelerator-table": "--memory_gib",
}


def test_every_command_is_listed_here():
  assert set(SCRIPTS) == set(OWN_FLAG)


@pytest.mark.parametrize("name", sorted(OWN_FLAG))
def test_command_help_shows_its_docstring_and_flags(name):
  command = os.path.join(os.path.dirname(sys.executable), name)
  done = subprocess.run([command, "--help"], capture_output=True, text=True, cwd=ROOT)
  # absl prints the usage and exits with 1 after --help.
  assert done.returncode == 1, done.stderr[-2000:]
  text = done.stdout + done.stderr
  flag = OWN_FLAG[name].removeprefix("--")
  assert re.search(rf"--(\[no\])?{flag}:", text), text[-2000:]  # booleans read --[no]flag
  assert name in text  # the module docstring shows how to run the command


def test_readme_commands_are_the_installed_ones():
  with open(os.path.join(ROOT, "README.md")) as f:
    named = set(re.findall(r"\befficientnet-[a-z][a-z-]*[a-z]\b", f.read()))
  named -= {"efficientnet-jax", "efficientnet-b0"}  # the project and a checkpoint's name
  assert named and named <= set(SCRIPTS), named - set(SCRIPTS)
