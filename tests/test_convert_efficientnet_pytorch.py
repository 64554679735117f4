"""efficientnet_pytorch state dicts → ours: logit parity with the package, Lite, strictness.

Parity: `EfficientNet.from_name('efficientnet-b0')` and `('efficientnet-b3')` of
efficientnet-pytorch 0.7.1 (requirements.txt), given random BatchNorm parameters, running
statistics of a real batch (non-trivial mean and variance), random SE and classifier biases,
saved with torch.save, converted with the variant inferred from the shapes and run on 2
random images: the package's eval-mode logits against ours within 1e-4 absolute, float32.
Resolutions: b0 at 224×224 (native) and 225×257 (odd height and width), b3 at 300×300
(native) and 130×97 (even height, odd width: both padding cases; small to keep the compile
short; the sizes of test_convert_timm.py, whose compiled programs the cache shares).

`from_name` pads statically for the variant's image size (Conv2dStaticSamePadding), TF
'same' only at that size; the odd sizes therefore compare with the same weights in
`from_name(name, image_size=None)` (Conv2dDynamicSamePadding, TF 'same' at any size), and
the static model at an odd size is shown to differ.

Lite ports in this naming: a state dict laid out from our random lite0 (and lite2)
variables converts back to them with the family and variant inferred. Parity of the Lite
layout was checked once by hand against efficientnet-lite-pytorch 0.1.0
(ml-illustrated/EfficientNet-Lite-PyTorch, not a requirement): lite0 at 224×224 and
225×257 1.1e-6 and 8.9e-7, lite2 at 260×260 and 225×257 8.9e-7 and 1.2e-6.

The package runs in a child process (`make_reference`), as timm does in
test_convert_timm.py: this process only reads the files (torch.load for `.pth`).
"""

import os
import pathlib
import shutil
import subprocess
import sys

import jax
import numpy as np
import pytest

from efficientnet_jax.models import registry
from efficientnet_jax.weights import converters
from efficientnet_jax.weights import efficientnet_pytorch as convert_ep
from efficientnet_jax.weights import strict
from efficientnet_jax.weights import weights_directory

ATOL = 1e-4
CASES = {  # package name → (our variant, resolutions (H, W): native first)
    "efficientnet-b0": ("b0", [(224, 224), (225, 257)]),
    "efficientnet-b3": ("b3", [(300, 300), (130, 97)]),
}
ROOT = pathlib.Path(__file__).resolve().parents[1]


def make_reference(out: str) -> None:
  """Child process: randomised efficientnet_pytorch models → files, images, their logits."""
  import torch
  from efficientnet_pytorch import EfficientNet
  from safetensors.torch import save_file
  for seed, (name, (_, sizes)) in enumerate(CASES.items()):
    static = _randomised(torch, EfficientNet, name, seed, sizes[0])
    state = static.state_dict()
    torch.save(state, os.path.join(out, f"{name}.pth"))
    dynamic = EfficientNet.from_name(name, image_size=None)  # TF 'same' at every size
    dynamic.load_state_dict(state)
    dynamic.eval()
    rng = np.random.default_rng(seed)
    arrays = {}
    for i, (h, w) in enumerate(sizes):
      images = rng.normal(size=(2, h, w, 3)).astype(np.float32)
      x = torch.from_numpy(images).permute(0, 3, 1, 2)
      with torch.no_grad():
        arrays[f"logits_{h}x{w}"] = (static if i == 0 else dynamic)(x).numpy()
        arrays[f"static_{h}x{w}"] = static(x).numpy()
      arrays[f"images_{h}x{w}"] = images
    np.savez(os.path.join(out, f"{name}.npz"), **arrays)
    if name == "efficientnet-b0":  # the other layouts the converter reads
      save_file(state, os.path.join(out, f"{name}.safetensors"))
      wrapped = {f"module.{k}": v for k, v in state.items()}  # nn.DataParallel's names
      torch.save({"state_dict": wrapped, "epoch": 3, "arch": name},
                 os.path.join(out, "checkpoint.pth.tar"))


def _randomised(torch, EfficientNet, name, seed, size):
  """A from_name model with random BN parameters, real-batch running stats, random biases.

  The BN closing each residual branch starts small (gamma × 0.1): random logits stay O(1).
  """
  torch.manual_seed(seed)
  model = EfficientNet.from_name(name)
  gen = torch.Generator().manual_seed(seed)
  small = {b._bn2 for b in model._blocks if b.id_skip and b._block_args.stride == 1
           and b._block_args.input_filters == b._block_args.output_filters}
  with torch.no_grad():
    for module in model.modules():
      if isinstance(module, torch.nn.BatchNorm2d):
        c = module.num_features
        module.weight.copy_((torch.rand(c, generator=gen) + 0.5) *
                            (0.1 if module in small else 1.0))
        module.bias.copy_(torch.randn(c, generator=gen) * 0.2)
        module.reset_running_stats()
        module.momentum = None  # cumulative average: one batch → its own statistics
      elif isinstance(module, (torch.nn.Conv2d, torch.nn.Linear)) and module.bias is not None:
        module.bias.copy_(torch.randn(module.bias.shape, generator=gen) * 0.2)
    model.train()(torch.randn(8, 3, *size, generator=gen))
  return model.eval()


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
  """The directory `make_reference` filled, in a fresh interpreter (one run per module)."""
  out = tmp_path_factory.mktemp("efficientnet_pytorch")
  module = pathlib.Path(__file__).stem
  code = (f"import sys; sys.path.insert(0, {str(ROOT / 'tests')!r}); "
          f"import {module}; {module}.make_reference({str(out)!r})")
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
def test_logits_match_efficientnet_pytorch(name, reference):
  variables, info = convert_ep.convert(reference / f"{name}.pth")  # variant from the shapes
  variant, sizes = CASES[name]
  assert (info.variant, info.family, info.num_classes) == (variant, "efficientnet", 1000)
  assert (info.padding, info.bn_epsilon) == ("same", 1e-3)
  assert info.resolution == sizes[0][0] and info.crop_padding == 32
  assert info.mean_rgb == weights_directory.IMAGENET_MEAN_RGB
  assert info.stddev_rgb == weights_directory.IMAGENET_STDDEV_RGB
  arrays = np.load(reference / f"{name}.npz")
  for h, w in sizes:
    expected = arrays[f"logits_{h}x{w}"]
    assert 0.1 < np.abs(expected).max() < 100  # the comparison is meaningful
    ours = our_logits(variables, info, arrays[f"images_{h}x{w}"])
    print(f"{name} {h}x{w}: max |ours - efficientnet_pytorch| = "
          f"{np.abs(ours - expected).max():.2e}")
    np.testing.assert_allclose(ours, expected, rtol=0, atol=ATOL, err_msg=f"{name} {h}x{w}")
    if (h, w) != sizes[0]:  # the static model keeps the padding of its native size
      static = np.abs(ours - arrays[f"static_{h}x{w}"]).max()
      print(f"  from_name's static padding at {h}x{w}: max |ours - it| = {static:.2e}")
      assert static > 100 * ATOL


def test_file_layouts_and_advprop(reference, tmp_path):
  from_pth, info = convert_ep.convert(reference / "efficientnet-b0.pth")
  for path in ("efficientnet-b0.safetensors", "checkpoint.pth.tar"):
    other, _ = converters.convert(reference / path, "efficientnet_pytorch", variant="b0")
    jax.tree.map(np.testing.assert_array_equal, other, from_pth)
  assert info.source["format"] == "efficientnet_pytorch"
  # The package's AdvProp release name says [-1, 1] inputs; the option says so for others.
  shutil.copy(reference / "efficientnet-b0.pth", tmp_path / "adv-efficientnet-b0-b64d5a18.pth")
  _, advprop = convert_ep.convert(tmp_path / "adv-efficientnet-b0-b64d5a18.pth")
  _, option = convert_ep.convert(reference / "efficientnet-b0.pth", advprop=True,
                                 crop_fraction=1.0)
  assert advprop.mean_rgb == advprop.stddev_rgb == option.mean_rgb == (127.5, 127.5, 127.5)
  assert option.crop_fraction == 1.0  # the package's example: the whole short side


def _lite_state(variant="lite0"):
  """Random Lite variables of ours, and the same laid out in efficientnet_pytorch's names."""
  network = registry.variant_network(variant)
  shapes = converters.variable_shapes(network, 1000)
  rng = np.random.default_rng(0)
  ours = {k: rng.normal(size=s).astype(np.float32) for k, s in shapes.items()}
  torch_layout = {4: lambda x: x.transpose(3, 2, 0, 1), 2: np.transpose, 1: lambda x: x}
  state = {name: np.ascontiguousarray(torch_layout[ours[rule.target].ndim](ours[rule.target]))
           for name, rule in convert_ep.rules(network, 1000).items()}
  state["_bn0.num_batches_tracked"] = np.array(7, np.int64)
  return ours, state


def test_lite_port_without_se_is_lite(tmp_path):
  from safetensors.numpy import save_file
  ours, state = _lite_state()
  assert not any("_se_" in name for name in state)
  save_file(state, tmp_path / "lite0.safetensors")
  variables, info = convert_ep.convert(tmp_path / "lite0.safetensors")  # family inferred
  assert (info.variant, info.family, info.padding, info.bn_epsilon) == (
      "lite0", "efficientnet_lite", "same", 1e-3)
  assert (info.mean_rgb, info.stddev_rgb) == ((127.0,) * 3, (128.0,) * 3)  # Lite's (x-127)/128
  jax.tree.map(np.testing.assert_array_equal, variables, strict.unflatten(ours))
  with pytest.raises(ValueError, match="AdvProp weights are EfficientNet B0–B8, not lite0"):
    convert_ep.convert(tmp_path / "lite0.safetensors", advprop=True)
  # Lite1 and Lite2 have the same stem, head and block count: the block widths decide.
  save_file(_lite_state("lite2")[1], tmp_path / "lite2.safetensors")
  assert convert_ep.convert(tmp_path / "lite2.safetensors")[1].variant == "lite2"


@pytest.mark.parametrize("edit, message", ids=["missing", "extra", "wrong_shape"], argvalues=[
    (lambda s: s.pop("_blocks.3._se_reduce.bias"),
     "missing source tensor _blocks.3._se_reduce.bias for variable "
     "params/blocks_3/se/reduce/conv/bias (6,)"),
    (lambda s: s.__setitem__("_fc.extra", np.zeros((3, 5), np.float32)),
     "unused source tensor _fc.extra (3, 5)"),
    (lambda s: s.__setitem__("_bn1.weight", np.ones(1281, np.float32)),
     "wrong shape: source tensor _bn1.weight (1281,) for variable params/head_bn/scale (1280,)"),
])
def test_strict_errors_name_the_tensor(reference, tmp_path, edit, message):
  from safetensors.numpy import load_file, save_file
  state = load_file(reference / "efficientnet-b0.safetensors")
  edit(state)
  save_file(state, tmp_path / "bad.safetensors")
  with pytest.raises(ValueError) as error:
    convert_ep.convert(tmp_path / "bad.safetensors", variant="b0")
  assert message in str(error.value)
  assert str(error.value).startswith("1 problem(s)")


def test_lite_strict_error_names_the_tensor(tmp_path):
  from safetensors.numpy import save_file
  _, state = _lite_state()
  del state["_blocks.5._bn1.running_var"]
  save_file(state, tmp_path / "lite0.safetensors")
  with pytest.raises(ValueError, match=r"^1 problem\(s\)[\s\S]*missing source tensor "
                     r"_blocks.5._bn1.running_var for variable "
                     r"batch_stats/blocks_5/depthwise_bn/var \(240,\)"):
    convert_ep.convert(tmp_path / "lite0.safetensors", variant="lite0")


def test_other_files_and_variants_are_refused(reference, tmp_path):
  from safetensors.numpy import load_file, save_file
  state = {name.lstrip("_"): value for name, value in
           load_file(reference / "efficientnet-b0.safetensors").items()}
  save_file(state, tmp_path / "timm_like.safetensors")  # conv_stem.weight: timm's name
  with pytest.raises(ValueError, match="not an efficientnet_pytorch state dict. It has "
                     "timm's names: use --format=timm"):
    convert_ep.convert(tmp_path / "timm_like.safetensors")
  with pytest.raises(ValueError, match="efficientnet_pytorch's naming holds efficientnet and "
                     "efficientnet_lite variants only"):
    convert_ep.convert(reference / "efficientnet-b0.safetensors", variant="v2_s")
  with pytest.raises(ValueError, match="missing source tensor _blocks.22._project_conv.weight"):
    convert_ep.convert(reference / "efficientnet-b0.safetensors", variant="b1")
