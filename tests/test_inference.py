"""load / predict / evaluate on a briefly trained digits workdir, and the weights format.

The workdir comes from `train_and_evaluate` on the demo config shrunk to width and depth
0.25 (conftest's `trained_digits`, also used by test_finetune.py): the checks compare against
numbers that run itself produced. efficientnet-evaluate and efficientnet-convert run
as the user runs them, in a child process.
"""

import importlib.util
import json
import os
import pathlib
import subprocess
import sys

import jax
import numpy as np
import pytest
import tensorflow_datasets as tfds

import efficientnet_jax
from efficientnet_jax import inference
from efficientnet_jax.data import digits
from efficientnet_jax.training import checkpointing
from efficientnet_jax.weights import strict
from efficientnet_jax.weights import timm as convert_timm
from efficientnet_jax.weights import weights_directory


ROOT = pathlib.Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def test_split(trained_digits):
  """The digits test images (uint8 [360, 32, 32, 3]) and labels."""
  workdir, _ = trained_digits
  digits.register()  # the run may have been trained by another test process
  data = tfds.as_numpy(tfds.load("digits", split="test", batch_size=-1,
                                 data_dir=str(workdir.parent / "tfds")))
  return data["image"], data["label"]


def run_script(name, *args):
  env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT),
                                                      os.environ.get("PYTHONPATH", "")])}
  # The installed console command, as a user runs it.
  command = os.path.join(os.path.dirname(sys.executable), name)
  done = subprocess.run([command, *map(str, args)],
                        cwd=ROOT, env=env, capture_output=True, text=True)
  assert done.returncode == 0, done.stderr[-3000:]
  return done.stdout


def test_load_workdir_gives_its_ema_weights_and_settings(trained_digits):
  workdir, _ = trained_digits
  model, variables, info = efficientnet_jax.load(workdir)
  assert (info.num_classes, info.resolution, info.crop_fraction, info.width, info.padding) \
      == (10, 32, 1.0, 0.25, "same")
  assert info.source == {"format": "workdir", "file": str(workdir), "step": "150"}
  assert model.num_classes == 10 and len(model.network.blocks) == 7
  jax.tree.map(np.testing.assert_array_equal, variables,
               jax.tree.map(np.asarray, checkpointing.load_variables(str(workdir))))
  # A relative path, as users type it (Orbax reads no metadata from one as given).
  relative = os.path.relpath(workdir)
  assert efficientnet_jax.load(relative)[2] == info
  jax.tree.map(np.testing.assert_array_equal, variables,
               jax.tree.map(np.asarray, checkpointing.load_variables(relative)))


def test_evaluate_script_reproduces_the_training_eval(trained_digits):
  """Same weights, same pipeline, another batch size (padding masked): same numbers."""
  workdir, final = trained_digits
  out = run_script("efficientnet-evaluate", f"--weights={workdir}", "--dataset=digits",
                   "--split=test", f"--data_dir={workdir.parent / 'tfds'}", "--batch_size=64")
  results = json.loads(out.strip().splitlines()[-1])
  assert results["num_examples"] == 360.0 == final["eval_num_examples"]
  assert results["top1"] == final["eval_top1"] and results["top5"] == final["eval_top5"]
  np.testing.assert_allclose(results["loss"], final["eval_loss"], rtol=1e-5)


def test_predict_agrees_with_evaluation(trained_digits, test_split, tmp_path):
  """predict() on the raw test images scores exactly the training eval's top-1, and a
  weights directory made from the workdir predicts the same probabilities."""
  workdir, final = trained_digits
  images, labels = test_split
  predictions = efficientnet_jax.predict(list(images), workdir, top_k=10)
  assert np.mean([p[0].index for p in predictions] == labels) == final["eval_top1"]
  probabilities = np.array([[q.probability for q in p] for p in predictions])
  assert np.all(np.diff(probabilities, axis=1) <= 0)  # most probable first
  np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)

  model, variables, info = efficientnet_jax.load(workdir)
  weights_directory.save_weights(tmp_path / "w", variables, info)
  assert efficientnet_jax.predict(list(images), tmp_path / "w", top_k=10) == predictions
  assert efficientnet_jax.load(tmp_path / "w")[2] == info
  jax.tree.map(np.testing.assert_array_equal, variables,  # what config.init_from reads
               jax.tree.map(np.asarray, checkpointing.load_variables(str(tmp_path / "w"))))


def test_convert_script_writes_a_weights_directory(tmp_path):
  """A timm-named state dict (our random B0 laid out the PyTorch way) → convert_weights.py."""
  from safetensors.numpy import save_file
  info = weights_directory.WeightsInfo(variant="b0", width=1.0, depth=1.0, num_classes=1000,
                                  padding="symmetric", bn_epsilon=1e-5, dropout_rate=0.2,
                                  resolution=224, mean_rgb=weights_directory.IMAGENET_MEAN_RGB,
                                  stddev_rgb=weights_directory.IMAGENET_STDDEV_RGB)
  model = info.model(depthwise_impl="xla")
  rng = np.random.default_rng(0)
  flat = {k: rng.normal(size=shape).astype(np.float32)
          for k, shape in strict.variable_shapes(model).items()}
  torch_layout = {4: lambda x: x.transpose(3, 2, 0, 1), 2: np.transpose, 1: lambda x: x}
  state = {name: np.ascontiguousarray(torch_layout[flat[rule.target].ndim](flat[rule.target]))
           for name, rule in convert_timm.rules(model.network, 1000).items()}
  state["bn1.num_batches_tracked"] = np.array(7, np.int64)
  save_file(state, tmp_path / "b0.safetensors")
  out = run_script("efficientnet-convert", tmp_path / "b0.safetensors", tmp_path / "w",
                   "--format=timm", "--timm_name=efficientnet_b0", "--resolution=256",
                   "--crop_fraction=0.95")
  assert out.startswith(f"wrote {tmp_path / 'w'}")
  loaded, got = weights_directory.load_weights(tmp_path / "w")
  assert (got.variant, got.padding, got.bn_epsilon, got.resolution, got.crop_fraction) == (
      "b0", "symmetric", 1e-5, 256, 0.95)
  assert got.source["timm_name"] == "efficientnet_b0"
  jax.tree.map(np.testing.assert_array_equal, loaded, strict.unflatten(flat))
  # Without the name the convention is unknown: a usage message asking for it, no traceback.
  command = os.path.join(os.path.dirname(sys.executable), "efficientnet-convert")
  done = subprocess.run([command, str(tmp_path / "b0.safetensors"), str(tmp_path / "w2"),
                         "--format=timm"], cwd=ROOT, capture_output=True, text=True)
  assert done.returncode == 1 and "--timm_name" in done.stderr, done.stderr[-2000:]
  assert "Traceback" not in done.stderr and not (tmp_path / "w2").exists()


def test_imagenet_class_names_offline():
  names = inference.imagenet_class_names()
  assert len(names) == 1000 and len(set(names)) == 1000
  assert names[0].startswith("n01440764") and names[999].startswith("n15075141")
  if importlib.util.find_spec("timm"):
    assert names[0] == "n01440764 tench, Tinca tinca"
  assert inference.class_names(10) is None


def test_bad_input_is_named(trained_digits, tmp_path):
  workdir, _ = trained_digits
  with pytest.raises(ValueError, match="has no model.json"):
    efficientnet_jax.load(tmp_path)
  with pytest.raises(ValueError, match="image arrays must be uint8"):
    efficientnet_jax.predict(np.zeros((32, 32, 3), np.float32), workdir)
  with pytest.raises(ValueError, match="does not exist"):
    efficientnet_jax.predict(tmp_path / "absent.png", workdir)
  model, variables, info = efficientnet_jax.load(workdir)
  weights_directory.save_weights(tmp_path / "w", variables, info)
  with pytest.raises(ValueError, match="exists and is not empty"):
    weights_directory.save_weights(tmp_path / "w", variables, info)
  data = json.loads((tmp_path / "w" / "model.json").read_text())
  del data["preprocessing"]["crop_padding"]
  (tmp_path / "w" / "model.json").write_text(json.dumps(data))
  with pytest.raises(ValueError, match=r"model.json: missing preprocessing.crop_padding"):
    efficientnet_jax.load(tmp_path / "w")
  variables["params"]["head_bn"]["scale"] = np.ones(7, np.float32)
  del variables["batch_stats"]["stem_bn"]["mean"]
  with pytest.raises(ValueError) as error:
    weights_directory.save_weights(tmp_path / "w2", variables, info)
  assert "missing batch_stats/stem_bn/mean (8,)" in str(error.value)
  assert "wrong shape params/head_bn/scale (7,), model has (320,)" in str(error.value)
  assert not (tmp_path / "w2").exists()
