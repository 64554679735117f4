"""Weights files that cannot be converted or loaded, and writes that fail.

Every converter (keras, tf, timm with its Hugging Face folder, efficientnet_pytorch) is
given a file cut to half its bytes, a file of another format, an empty directory and
weights of another family or variant: each raises a ValueError whose message names the
path given and the problem, before anything is written; through efficientnet-convert the
same message is on stderr, the exit status is 1, there is no traceback and no DST (nor
its parent) appears. A weights directory whose model.json or checkpoint is cut is refused
by name. A write that fails midway (in Orbax's save, or writing model.json) leaves neither
DST nor a `.DST.partial-*` directory, and with overwrite the old DST stays as it was.

The source files are written by their own frameworks from random B0 and Lite0 variables
(10 classes): Keras's save_weights (a Keras B0 of its own), TF's Saver, torch.save and
safetensors; tensor names come from each converter's `rules`, in the framework's layout.
"""

import json
import os
import pathlib
import shutil
import subprocess
import sys

import numpy as np
import pytest

from efficientnet_jax.models import registry
from efficientnet_jax.weights import converters
from efficientnet_jax.weights import efficientnet_pytorch as convert_ep
from efficientnet_jax.weights import tf_checkpoint
from efficientnet_jax.weights import timm as convert_timm
from efficientnet_jax.weights import weights_directory

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NUM_CLASSES = 10
# Our layout → the framework's, the inverse of each rule's transform.
_THEIR_LAYOUT = {converters.torch_conv: lambda x: x.transpose(3, 2, 0, 1),
                 np.transpose: np.transpose, converters.tf_depthwise: converters.tf_depthwise,
                 None: lambda x: x}
pytestmark = pytest.mark.filterwarnings(  # Keras's own numpy 2 deprecation
    "ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning")


def laid_out(variant, rules):
  """Random variables of `variant`, by the source's names (`rules(network, classes)`)."""
  network = registry.variant_network(variant)
  shapes = converters.variable_shapes(network, NUM_CLASSES)
  rng = np.random.default_rng(0)
  ours = {k: rng.normal(size=s).astype(np.float32) for k, s in shapes.items()}
  return {name: np.ascontiguousarray(_THEIR_LAYOUT[rule.transform](ours[rule.target]))
          for name, rule in rules(network, NUM_CLASSES).items()}


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
  """A directory of whole source files, each written by its framework."""
  import keras
  import tensorflow as tf
  import torch
  from safetensors.numpy import save_file
  d = tmp_path_factory.mktemp("sources")
  for variant in ("b0", "lite0"):
    save_file(laid_out(variant, convert_timm.rules), d / f"timm_{variant}.safetensors")
    save_file(laid_out(variant, convert_ep.rules), d / f"ep_{variant}.safetensors")
  for name, rules in (("timm", convert_timm.rules), ("ep", convert_ep.rules)):
    torch.save({k: torch.from_numpy(v) for k, v in laid_out("b0", rules).items()},
               d / f"{name}_b0.pth")
  (d / "hf").mkdir()  # timm's Hugging Face folder
  shutil.copy(d / "timm_b0.safetensors", d / "hf" / "model.safetensors")
  (d / "hf" / "config.json").write_text(json.dumps(
      {"architecture": "efficientnet_b0", "num_classes": NUM_CLASSES,
       "pretrained_cfg": {"input_size": [3, 224, 224], "crop_pct": 0.875}}))
  tensors = laid_out("b0", lambda n, c: tf_checkpoint.rules(n, c, "efficientnet-b0"))
  (d / "tf").mkdir()
  saver = tf.compat.v1.train.Saver(var_list={n: tf.Variable(v) for n, v in tensors.items()})
  saver.save(None, str(d / "tf" / "model.ckpt"))
  model = keras.applications.EfficientNetB0(weights=None, input_shape=(64, 64, 3),
                                            classes=NUM_CLASSES)
  model.save_weights(d / "b0.weights.h5")
  (d / "notes.txt").write_text("weights are in the other folder\n")
  return d


def cut(source, out):
  """`out`: the first half of `source`'s bytes, as a copy stopped midway leaves it."""
  data = source.read_bytes()
  out.write_bytes(data[:len(data) // 2])
  return out


def cut_tf(source, out, which):
  """A copy of the TF checkpoint with its `which` file ("index", "data-…") cut; its
  prefix (the `checkpoint` file names the original's absolute path)."""
  shutil.copytree(source, out)
  (target,) = out.glob(f"model.ckpt.{which}*")
  cut(target, target)
  return out / "model.ckpt"


def cut_json(folder, out):
  shutil.copytree(folder, out)
  cut(out / "config.json", out / "config.json")
  return out


def empty(out):
  out.mkdir()
  return out


TIMM = {"timm_name": "efficientnet_b0"}
# id → (format, the bad input made from (sources, tmp_path), options, words the message has)
CASES = {
    "keras-truncated": ("keras", lambda s, t: cut(s / "b0.weights.h5", t / "b0.weights.h5"),
                        {}, ["not a readable Keras weights file", "truncated"]),
    "keras-other_format": ("keras", lambda s, t: s / "timm_b0.pth", {},
                           ["is not Keras weights: it is a PyTorch file", "--format=timm"]),
    "keras-text_file": ("keras", lambda s, t: s / "notes.txt", {},
                        ["is not Keras weights: it is a text file"]),
    "keras-empty_dir": ("keras", lambda s, t: empty(t / "empty"), {},
                        ["is a directory", ".weights.h5"]),
    "keras-other_family": ("keras", lambda s, t: s / "b0.weights.h5", {"variant": "v2_b0"},
                           ["variant='v2_b0' (efficientnetv2) does not fit this file",
                            "those of 'b0' (efficientnet)", "problem(s) converting weights"]),
    "tf-truncated_data": ("tf", lambda s, t: cut_tf(s / "tf", t / "tf", "data"), {},
                          ["cannot read the tensors", "data file truncated"]),
    "tf-truncated_index": ("tf", lambda s, t: cut_tf(s / "tf", t / "tf", "index"), {},
                           ["cannot read a TF checkpoint", "truncated"]),
    "tf-other_format": ("tf", lambda s, t: s / "b0.weights.h5", {},
                        ["is not a TF checkpoint", "it is an HDF5 file", "--format=keras"]),
    "tf-empty_dir": ("tf", lambda s, t: empty(t / "empty"), {},
                     ["is an empty directory", "checkpoint"]),
    "tf-other_family": ("tf", lambda s, t: s / "tf", {"variant": "v2_b0"},
                        ["variant='v2_b0' contradicts the checkpoint's scope "
                         "'efficientnet-b0'"]),
    "timm-truncated_safetensors": (
        "timm", lambda s, t: cut(s / "timm_b0.safetensors", t / "b0.safetensors"), TIMM,
        ["not a readable safetensors file", "truncated"]),
    "timm-truncated_pth": ("timm", lambda s, t: cut(s / "timm_b0.pth", t / "b0.pth"), TIMM,
                           ["not a readable PyTorch weights file", "truncated"]),
    "timm-truncated_folder_config": ("timm", lambda s, t: cut_json(s / "hf", t / "hf"), {},
                                     ["config.json is not valid JSON", "truncated"]),
    "timm-other_format": ("timm", lambda s, t: s / "b0.weights.h5", TIMM,
                          ["is not timm weights: it is an HDF5 file", "--format=keras"]),
    "timm-other_naming": ("timm", lambda s, t: s / "ep_b0.pth", TIMM,
                          ["not a timm EfficientNet state dict",
                           "use --format=efficientnet_pytorch"]),
    "timm-empty_dir": ("timm", lambda s, t: empty(t / "empty"), {},
                       ["is an empty directory", "config.json"]),
    "timm-other_family": ("timm", lambda s, t: s / "timm_lite0.safetensors", TIMM,
                          ["variant='b0' (efficientnet) does not fit this file",
                           "those of 'lite0' (efficientnet_lite)",
                           "missing source tensor blocks.0.0.se.conv_reduce.weight"]),
    "efficientnet_pytorch-truncated": (
        "efficientnet_pytorch", lambda s, t: cut(s / "ep_b0.pth", t / "b0.pth"), {},
        ["not a readable PyTorch weights file", "truncated"]),
    "efficientnet_pytorch-other_format": (
        "efficientnet_pytorch", lambda s, t: s / "b0.weights.h5", {},
        ["is not efficientnet_pytorch weights: it is an HDF5 file"]),
    "efficientnet_pytorch-empty_dir": ("efficientnet_pytorch", lambda s, t: empty(t / "empty"),
                                       {}, ["is a directory", ".safetensors or .pth"]),
    "efficientnet_pytorch-other_family": (
        "efficientnet_pytorch", lambda s, t: s / "ep_lite0.safetensors", {"variant": "b0"},
        ["variant='b0' (efficientnet) does not fit this file",
         "those of 'lite0' (efficientnet_lite)"]),
    "efficientnet_pytorch-other_variant": (
        "efficientnet_pytorch", lambda s, t: s / "ep_b0.pth", {"variant": "b1"},
        ["variant='b1' (efficientnet) does not fit this file", "those of 'b0'",
         "missing source tensor _blocks.16._depthwise_conv.weight"]),
}


@pytest.mark.parametrize("case", list(CASES))
def test_converter_names_the_file_and_the_problem(case, sources, tmp_path):
  format, make, options, words = CASES[case]
  path = make(sources, tmp_path)
  before = sorted(os.listdir(tmp_path))
  with pytest.raises(ValueError) as error:
    converters.convert(path, format, **options)
  message = str(error.value)
  assert str(path) in message.splitlines()[0], message[:500]
  for word in words:
    assert word in message, message[:1000]
  assert sorted(os.listdir(tmp_path)) == before  # nothing written


# The command, for a few of the cases: each fault and each converter once or more (a
# process costs ~3 s; the message is the same ValueError's).
COMMAND_CASES = ["keras-truncated", "tf-other_family", "timm-empty_dir",
                 "efficientnet_pytorch-other_format", "timm-other_family"]


def run_convert(*args):
  command = os.path.join(os.path.dirname(sys.executable), "efficientnet-convert")
  return subprocess.run([command, *map(str, args)], capture_output=True, text=True, cwd=ROOT)


@pytest.mark.parametrize("case", COMMAND_CASES)
def test_command_names_the_file_and_the_problem(case, sources, tmp_path):
  format, make, options, words = CASES[case]
  path = make(sources, tmp_path)
  dst = tmp_path / "out" / "w"
  done = run_convert(path, dst, f"--format={format}",
                     *(f"--{key}={value}" for key, value in options.items()))
  assert done.returncode == 1, done.stderr[-2000:]
  assert f"error: {path}" in done.stderr, done.stderr[-2000:]
  for word in words:
    assert word in done.stderr, done.stderr[-2000:]
  assert "Traceback" not in done.stderr
  assert not (tmp_path / "out").exists()  # neither DST nor its parent


def test_command_refuses_dst_before_reading_and_names_a_failed_write(sources, tmp_path):
  (tmp_path / "w").mkdir()
  (tmp_path / "w" / "keep.txt").write_text("mine")
  done = run_convert(tmp_path / "absent.safetensors", tmp_path / "w", "--format=timm",
                     "--timm_name=efficientnet_b0")
  assert done.returncode == 1 and "Traceback" not in done.stderr
  assert f"error: {tmp_path / 'w'} exists and is not empty" in done.stderr, done.stderr
  assert "absent" not in done.stderr  # DST refused before SRC was read
  # DST under a file: the write fails (an OSError), named, after a whole conversion.
  (tmp_path / "file").write_text("")
  done = run_convert(sources / "timm_b0.safetensors", tmp_path / "file" / "w",
                     "--format=timm", "--timm_name=efficientnet_b0")
  assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr[-2000:]
  assert f"error: writing {tmp_path / 'file' / 'w'}: " in done.stderr, done.stderr[-2000:]
  assert sorted(os.listdir(tmp_path)) == ["file", "w"]
  assert os.listdir(tmp_path / "w") == ["keep.txt"]


@pytest.fixture(scope="module")
def converted(sources):
  return converters.convert(sources / "timm_b0.safetensors", "timm", **TIMM)


@pytest.fixture(scope="module")
def saved(converted, tmp_path_factory):
  """A whole weights directory of `converted`."""
  directory = tmp_path_factory.mktemp("saved") / "w"
  weights_directory.save_weights(directory, *converted)
  return directory


def _fail_after(original, error):
  def fail(*args, **kwargs):
    original(*args, **kwargs)  # midway: what it writes is written, then the disk is full
    raise error
  return fail


@pytest.mark.parametrize("where", ["orbax", "model.json"])
def test_failed_write_leaves_nothing_and_keeps_the_old(where, converted, saved, tmp_path,
                                                       monkeypatch):
  variables, info = converted
  full = OSError(28, "No space left on device")
  if where == "orbax":
    checkpointer = weights_directory.ocp.StandardCheckpointer
    monkeypatch.setattr(checkpointer, "save", _fail_after(checkpointer.save, full))
  else:
    monkeypatch.setattr(json, "dump", _fail_after(json.dump, full))
  dst = tmp_path / "new" / "w"
  with pytest.raises(OSError, match="No space left"):
    weights_directory.save_weights(dst, variables, info)
  assert os.listdir(tmp_path) == []  # no DST, no .w.partial-*, no parent made for it
  shutil.copytree(saved, tmp_path / "old")
  with pytest.raises(OSError, match="No space left"):
    weights_directory.save_weights(tmp_path / "old", variables, info, overwrite=True)
  assert os.listdir(tmp_path) == ["old"]
  assert sorted(os.listdir(tmp_path / "old")) == sorted(os.listdir(saved))
  monkeypatch.undo()
  old, old_info = weights_directory.load_weights(tmp_path / "old")  # whole, as it was
  assert old_info == info
  np.testing.assert_array_equal(old["params"]["stem_conv"]["conv"]["kernel"],
                                variables["params"]["stem_conv"]["conv"]["kernel"])


def test_overwrite_replaces_a_whole_directory(converted, saved, tmp_path):
  shutil.copytree(saved, tmp_path / "w")
  (tmp_path / "w" / "stale.txt").write_text("from before")
  weights_directory.save_weights(tmp_path / "w", *converted, overwrite=True)
  assert os.listdir(tmp_path) == ["w"]
  assert sorted(os.listdir(tmp_path / "w")) == sorted(os.listdir(saved))
  with pytest.raises(ValueError, match="exists and is a file"):
    weights_directory.save_weights(tmp_path / "w" / "model.json", *converted)


# Orbax's failed restore leaves a callback for its closed event loop: noise, not ours.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_cut_weights_directory_is_named(saved, tmp_path):
  shutil.copytree(saved, tmp_path / "json")
  cut(tmp_path / "json" / "model.json", tmp_path / "json" / "model.json")
  with pytest.raises(ValueError, match=rf"^{tmp_path / 'json' / 'model.json'} is not valid "
                     r"JSON \(truncated or damaged\?\)"):
    weights_directory.load_weights(tmp_path / "json")
  shutil.copytree(saved, tmp_path / "data")
  files = [os.path.join(d, f) for d, _, names in os.walk(tmp_path / "data") for f in names]
  largest = max(files, key=os.path.getsize)  # the tensors' data
  cut(pathlib.Path(largest), pathlib.Path(largest))
  with pytest.raises(ValueError, match=rf"^{tmp_path / 'data'}: cannot restore its weights: "
                     "the checkpoint is truncated, damaged or incomplete"):
    weights_directory.load_weights(tmp_path / "data")
