"""timm state dicts → ours: logit parity with timm itself, conventions, and strictness.

Parity: timm's tf_efficientnet_b0, tf_efficientnet_b3 and efficientnet_b0 (native), and of
the other families tf_efficientnetv2_b0/s, tf_efficientnet_lite0, efficientnet_lite0 and
tf_efficientnet_es, built with pretrained=False, are given non-trivial BatchNorm values
(random gamma/beta, running statistics of a real batch), random SE/classifier biases,
saved as safetensors, converted and run on 2 random images: timm's eval-mode logits
against ours within 1e-4 absolute, float32. Resolutions: each at its native size (224×224,
b3 300×300) and at an odd one: b0 at 225×257 (odd height and width), b3 at 130×97 (even
height, odd width: both padding cases in one run). At even sizes 'same' and 'symmetric'
padding differ, which test_native_weights_need_symmetric_padding shows. torch, torchvision
and timm are in requirements.txt, so CI always runs this file.

Hugging Face folders: timm's own `save_for_hf` writes efficientnet_b0 (pytorch_model.bin)
and tf_efficientnetv2_s (model.safetensors) with their config.json; converted from the
folder alone, the logits match timm's at the native size and the recorded preprocessing is
config.json's. A bare state dict without a name is refused.

timm runs in a child process (`make_reference`): importing timm loads torchvision →
triton, which segfaults a process that has already loaded TensorFlow (as the rest of the
suite does). This process only reads the files and, for `.pth`, calls torch.load.
"""

import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from efficientnet_jax.weights import converters
from efficientnet_jax.weights import timm as convert_timm
from efficientnet_jax.weights import weights_directory

import jax

ATOL = 1e-4
CASES = {  # timm name → resolutions (H, W)
    "tf_efficientnet_b0": [(224, 224), (225, 257)],
    "efficientnet_b0": [(224, 224), (225, 257)],
    "tf_efficientnet_b3": [(300, 300), (130, 97)],
    # The other families: Fused-MBConv (ConvBnAct and EdgeResidual), no-SE, ReLU/ReLU6.
    "tf_efficientnetv2_b0": [(224, 224), (225, 257)],
    "tf_efficientnet_lite0": [(224, 224), (225, 257)],
    "efficientnet_lite0": [(224, 224), (225, 257)],
    "tf_efficientnet_es": [(224, 224), (225, 257)],
    "tf_efficientnetv2_s": [(384, 384), (129, 97)],  # residual ConvBnAct, SE, round_limit 0.9
}
OUR_VARIANT = {"tf_efficientnet_b0": "b0", "efficientnet_b0": "b0", "tf_efficientnet_b3": "b3",
               "tf_efficientnetv2_b0": "v2_b0", "tf_efficientnet_lite0": "lite0",
               "efficientnet_lite0": "lite0", "tf_efficientnet_es": "edgetpu_s",
               "tf_efficientnetv2_s": "v2_s"}
ROOT = pathlib.Path(__file__).resolve().parents[1]
HF_FOLDERS = {"efficientnet_b0": "pytorch_model.bin", "tf_efficientnetv2_s": "model.safetensors"}


def make_reference(out: str) -> None:
  """Child process: randomised timm models → safetensors, images and timm's logits."""
  import json
  import torch
  import timm
  from safetensors.torch import save_file
  configs = {}
  for seed, (name, sizes) in enumerate(CASES.items()):
    cfg = timm.models.get_pretrained_cfg(name)  # how timm evaluates the published weights
    configs[name] = {"mean": cfg.mean, "std": cfg.std, "crop_pct": cfg.crop_pct,
                     "size": (cfg.test_input_size or cfg.input_size)[1]}
    model = _randomised_timm(torch, timm, name, seed, sizes[0])
    save_file(model.state_dict(), os.path.join(out, f"{name}.safetensors"))
    rng = np.random.default_rng(seed)
    arrays = {}
    for h, w in sizes:
      images = rng.normal(size=(2, h, w, 3)).astype(np.float32)
      with torch.no_grad():
        logits = model(torch.from_numpy(images).permute(0, 3, 1, 2)).numpy()
      arrays[f"images_{h}x{w}"], arrays[f"logits_{h}x{w}"] = images, logits
    np.savez(os.path.join(out, f"{name}.npz"), **arrays)
    if name in HF_FOLDERS:  # timm's Hugging Face layout: config.json + weights
      from timm.models._hub import save_for_hf
      save_for_hf(model, os.path.join(out, f"hf_{name}"),
                  safe_serialization=HF_FOLDERS[name] == "model.safetensors")
    if name == "tf_efficientnet_b3":  # the two pickle layouts the converter reads
      torch.save(model.state_dict(), os.path.join(out, "b3.pth"))
      torch.save({"state_dict": model.state_dict(), "epoch": 3},
                 os.path.join(out, "train.pth.tar"))
  with open(os.path.join(out, "pretrained_cfgs.json"), "w") as f:
    json.dump(configs, f)


def _randomised_timm(torch, timm, name, seed, size):
  """A timm model with random BN parameters, real-batch running stats, random biases.

  Residual branches start small (project BN gamma × 0.1) so random logits stay O(1).
  """
  torch.manual_seed(seed)
  model = timm.create_model(name, pretrained=False)
  gen = torch.Generator().manual_seed(seed)
  small = set()
  for block in model.blocks.modules():
    if getattr(block, "has_skip", False):  # the BN closing the residual branch
      small.add(getattr(block, "bn3", None) or getattr(block, "bn2", None) or block.bn1)
  with torch.no_grad():
    for module in model.modules():
      if isinstance(module, torch.nn.BatchNorm2d):
        c = module.num_features
        gamma = torch.rand(c, generator=gen) + 0.5
        module.weight.copy_(gamma * (0.1 if module in small else 1.0))
        module.bias.copy_(torch.randn(c, generator=gen) * 0.2)
        module.reset_running_stats()
        module.momentum = None  # cumulative average: one batch → its own statistics
      elif isinstance(module, (torch.nn.Conv2d, torch.nn.Linear)) and module.bias is not None:
        module.bias.copy_(torch.randn(module.bias.shape, generator=gen) * 0.2)
    model.train()(torch.randn(8, 3, *size, generator=gen))
  return model.eval()


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
  """The directory `make_reference` filled, in a fresh interpreter."""
  out = tmp_path_factory.mktemp("timm")
  code = (f"import sys; sys.path.insert(0, {str(ROOT / 'tests')!r}); "
          f"import test_convert_timm; test_convert_timm.make_reference({str(out)!r})")
  env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH",
                                                                               "")])}
  done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env,
                        capture_output=True, text=True)
  assert done.returncode == 0, done.stderr[-3000:]
  return out


def our_logits(variables, info, images):
  model = info.model(depthwise_impl="xla")  # compiles faster than shift-add on CPU
  return np.asarray(jax.jit(lambda v, x: model.apply(v, x))(variables, images))


@pytest.mark.parametrize("name", list(CASES))
def test_logits_match_timm(name, reference):
  variables, info = convert_timm.convert(reference / f"{name}.safetensors", timm_name=name)
  assert info.variant == OUR_VARIANT[name] and info.num_classes == 1000
  # The recorded preprocessing is timm's own evaluation setting for these weights.
  cfg = json.loads((reference / "pretrained_cfgs.json").read_text())[name]
  np.testing.assert_allclose(info.mean_rgb, np.array(cfg["mean"]) * 255, rtol=1e-6)
  np.testing.assert_allclose(info.stddev_rgb, np.array(cfg["std"]) * 255, rtol=1e-6)
  crop = info.crop_fraction or info.resolution / (info.resolution + info.crop_padding)
  assert (info.resolution, round(crop, 3)) == (cfg["size"], round(cfg["crop_pct"], 3))
  tf_port = name.startswith("tf_")
  assert (info.padding, info.bn_epsilon) == (("same", 1e-3) if tf_port else ("symmetric", 1e-5))
  arrays = np.load(reference / f"{name}.npz")
  for h, w in CASES[name]:
    expected = arrays[f"logits_{h}x{w}"]
    assert 0.1 < np.abs(expected).max() < 100  # the comparison is meaningful
    ours = our_logits(variables, info, arrays[f"images_{h}x{w}"])
    print(f"{name} {h}x{w}: max |ours - timm| = {np.abs(ours - expected).max():.2e}")
    np.testing.assert_allclose(ours, expected, rtol=0, atol=ATOL, err_msg=f"{name} {h}x{w}")


def test_native_weights_need_symmetric_padding(reference):
  """The TF convention, given without a name: wrong for native weights at 224."""
  variables, info = convert_timm.convert(reference / "efficientnet_b0.safetensors",
                                         padding="same", bn_epsilon=1e-3)
  assert (info.variant, info.padding, info.bn_epsilon) == ("b0", "same", 1e-3)
  arrays = np.load(reference / "efficientnet_b0.npz")
  error = np.abs(our_logits(variables, info, arrays["images_224x224"])
                 - arrays["logits_224x224"]).max()
  assert error > 100 * ATOL


def test_variant_inferred_and_pth_equals_safetensors(reference):
  from safetensors.numpy import load_file
  from_safetensors, info = convert_timm.convert(  # no name: variant from the shapes
      reference / "tf_efficientnet_b3.safetensors", padding="same", bn_epsilon=1e-3)
  assert info.variant == "b3" and info.resolution == 300 and info.crop_padding == 32
  for pth in ("b3.pth", "train.pth.tar"):
    from_pth, _ = convert_timm.convert(reference / pth, variant="b3",
                                       timm_name="tf_efficientnet_b3")
    jax.tree.map(np.testing.assert_array_equal, from_pth, from_safetensors)
  state = load_file(reference / "tf_efficientnet_b3.safetensors")
  kernel = state["blocks.1.0.conv_dw.weight"]  # (144, 1, 3, 3)
  np.testing.assert_array_equal(
      from_safetensors["params"]["blocks_2"]["depthwise_conv"]["kernel"],
      kernel.transpose(2, 3, 1, 0))
  np.testing.assert_array_equal(from_safetensors["params"]["classifier"]["kernel"],
                                state["classifier.weight"].T)


def test_saved_directory_records_the_settings(reference, tmp_path):
  variables, info = convert_timm.convert(reference / "efficientnet_b0.safetensors",
                                         timm_name="efficientnet_b0.ra_in1k")
  weights_directory.save_weights(tmp_path / "w", variables, info)
  loaded, loaded_info = weights_directory.load_weights(tmp_path / "w")
  assert loaded_info == info
  assert (info.padding, info.bn_epsilon, info.resolution, info.crop_padding) == (
      "symmetric", 1e-5, 224, 32)
  np.testing.assert_allclose(info.mean_rgb, [123.675, 116.28, 103.53])
  jax.tree.map(np.testing.assert_array_equal, loaded, variables)
  for name in ("tf_efficientnet_b0_ap", "tf_efficientnet_b0.ap_in1k"):
    _, advprop = convert_timm.convert(reference / "tf_efficientnet_b0.safetensors",
                                      timm_name=name)
    assert advprop.mean_rgb == advprop.stddev_rgb == (127.5, 127.5, 127.5)


@pytest.mark.parametrize("edit, message", ids=["missing", "extra", "wrong_shape"], argvalues=[
    (lambda s: s.pop("blocks.2.1.se.conv_reduce.bias"),
     "missing source tensor blocks.2.1.se.conv_reduce.bias for variable "
     "params/blocks_4/se/reduce/conv/bias (10,)"),
    (lambda s: s.__setitem__("head.extra", np.zeros((3, 5), np.float32)),
     "unused source tensor head.extra (3, 5)"),
    (lambda s: s.__setitem__("bn2.weight", np.ones(1281, np.float32)),
     "wrong shape: source tensor bn2.weight (1281,) for variable params/head_bn/scale (1280,)"),
])
def test_strict_errors_name_the_tensor(reference, tmp_path, edit, message):
  from safetensors.numpy import load_file, save_file
  state = load_file(reference / "tf_efficientnet_b0.safetensors")
  edit(state)
  save_file(state, tmp_path / "bad.safetensors")
  with pytest.raises(ValueError) as error:
    convert_timm.convert(tmp_path / "bad.safetensors", variant="b0",
                         timm_name="tf_efficientnet_b0")
  assert message in str(error.value)
  assert str(error.value).startswith("1 problem(s)")


def test_bad_names_are_refused(reference):
  path = reference / "tf_efficientnet_b0.safetensors"
  with pytest.raises(ValueError, match="variant='b1' contradicts timm_name"):
    convert_timm.convert(path, variant="b1", timm_name="tf_efficientnet_b0")
  with pytest.raises(ValueError, match="not a timm EfficientNet name this converter knows"):
    convert_timm.convert(path, timm_name="efficientnetv2_rw_s")  # timm's own V2 variant
  with pytest.raises(ValueError, match="missing source tensor blocks.1.2.conv_pw.weight"):
    convert_timm.convert(path, variant="b1", padding="same",  # b1: one more block per stage
                         bn_epsilon=1e-3)
  with pytest.raises(ValueError, match="timm_name='tf_efficientnet_b0' contradicts .*"
                     "config.json \\(architecture 'efficientnet_b0'\\)"):
    convert_timm.convert(reference / "hf_efficientnet_b0", timm_name="tf_efficientnet_b0")


def test_bare_state_dict_is_refused(reference):
  """Without a name (or config.json) the convention is unknown: the error says what to pass."""
  for given in ({}, {"padding": "same"}, {"bn_epsilon": 1e-5}):
    with pytest.raises(ValueError) as error:
      convert_timm.convert(reference / "efficientnet_b0.safetensors", **given)
    for fix in ("timm_name=", "--timm_name=", "tf_efficientnet_b0", "efficientnet_b0",
                "--padding=same --bn_epsilon=1e-3"):
      assert fix in str(error.value), (fix, given)
    assert "pass the folder" not in str(error.value)
  # The weights file of a Hugging Face folder: the error points at the folder.
  with pytest.raises(ValueError, match="has a config.json: if timm wrote it, pass the folder"):
    convert_timm.convert(reference / "hf_efficientnet_b0" / "pytorch_model.bin")


@pytest.mark.parametrize("name", list(HF_FOLDERS))
def test_hugging_face_folder(name, reference):
  """timm's own folder: the name and preprocessing come from its config.json."""
  folder = reference / f"hf_{name}"
  config = json.loads((folder / "config.json").read_text())
  cfg = config["pretrained_cfg"]
  assert config["architecture"] == name and (folder / HF_FOLDERS[name]).is_file()
  variables, info = converters.convert(folder, "timm")  # what efficientnet-convert calls
  assert info.variant == OUR_VARIANT[name]
  assert info.source["timm_name"] == f"{name}.{cfg['tag']}"
  assert info.source["file"] == str(folder / HF_FOLDERS[name])
  tf_port = name.startswith("tf_")
  assert (info.padding, info.bn_epsilon) == (("same", 1e-3) if tf_port else ("symmetric", 1e-5))
  test_size = cfg.get("test_input_size")
  assert info.resolution == (test_size or cfg["input_size"])[1]
  assert info.train_resolution == cfg["input_size"][1]
  assert info.crop_fraction == (cfg.get("test_crop_pct") if test_size else None) or \
      cfg["crop_pct"]
  np.testing.assert_allclose(info.mean_rgb, np.array(cfg["mean"]) * 255, rtol=1e-6)
  np.testing.assert_allclose(info.stddev_rgb, np.array(cfg["std"]) * 255, rtol=1e-6)
  assert info.interpolation == cfg["interpolation"] == "bicubic"
  bare, _ = convert_timm.convert(reference / f"{name}.safetensors", timm_name=name)
  jax.tree.map(np.testing.assert_array_equal, variables, bare)
  h, w = CASES[name][0]
  arrays = np.load(reference / f"{name}.npz")
  ours = our_logits(variables, info, arrays[f"images_{h}x{w}"])
  print(f"{name} folder {h}x{w}: max |ours - timm| = "
        f"{np.abs(ours - arrays[f'logits_{h}x{w}']).max():.2e}")
  np.testing.assert_allclose(ours, arrays[f"logits_{h}x{w}"], rtol=0, atol=ATOL)
