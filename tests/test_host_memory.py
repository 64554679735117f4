"""The malloc re-exec: once, with every tunable, and never over the user's own setting."""

import os
import subprocess
import sys

from efficientnet_jax import host_memory

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CODE = ("import os; from efficientnet_jax import host_memory; "
        "print('start', flush=True); host_memory.reexec_with_fast_malloc(); "
        "print(repr(os.environ.get('GLIBC_TUNABLES')))")


def run(env_update):
  env = {k: v for k, v in os.environ.items() if k != "GLIBC_TUNABLES"}
  env.update(env_update, PYTHONPATH=REPO)
  done = subprocess.run([sys.executable, "-c", CODE], env=env, capture_output=True,
                        text=True, check=True)
  return done.stdout.split()


def test_reexecs_once_with_the_tunables():
  # "start" twice: the program ran again from the top, then went on without a third run.
  assert run({}) == ["start", "start", repr(":".join(host_memory.TUNABLES))]


def test_an_existing_setting_is_left_alone():
  assert run({"GLIBC_TUNABLES": ""}) == ["start", "''"]
