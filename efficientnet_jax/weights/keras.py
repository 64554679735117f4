"""Keras-applications EfficientNet B0–B7 and EfficientNetV2 B0–B3, S, M, L weights → ours.

Read with h5py alone. Layouts read:
* legacy HDF5: the published keras-applications files and Keras 3's `model.save("x.h5")`.
  Datasets are `<layer>/<layer>/<var>[:0]` (under `model_weights/` for a whole model),
  e.g. `block2a_dwconv/block2a_dwconv/kernel`; tf.keras 2 (the published files) names the
  depthwise variable `depthwise_kernel`, Keras 3 `kernel`: both are read.
* Keras 3 `model.save_weights("x.weights.h5")`, and the `model.weights.h5` inside a
  `.keras` archive: `layers/<class>[_<n>]/vars/<i>`. Layers are numbered per class in
  `model.layers` order, not named, so the names are recovered by replaying that order.

Layer names (`keras.applications.efficientnet` / `efficientnet_v2`): `stem_conv`,
`stem_bn`, per block `block<stage><letter>_` + `expand_conv`, `expand_bn`, the depthwise
`dwconv` (V1) or `dwconv2` (V2), `bn`, `se_reduce`, `se_expand`, `project_conv`,
`project_bn`; then `top_conv`, `top_bn`, `predictions`. V2's Fused-MBConv blocks have no
depthwise conv: `expand_conv` is the k×k conv (e≠1), or with e=1 `project_conv` is.
The variant is inferred from the stem width, head width and block count (every block has
one `project_conv`), across both families.

Preprocessing. Keras's input layers are not in our model, which takes normalised images
(feed it `(image - mean_rgb) / stddev_rgb`, 0–255 scale):
* V1: Rescaling(1/255) + an adapted Normalization, whose mean and variance are in the
  file and become `mean_rgb`/`stddev_rgb`;
* V2 B0–B3: Rescaling(1/255) + Normalization with ImageNet's mean and std as constants
  (not saved): ImageNet mean/std; V2 S/M/L: Rescaling(1/128, offset=-1): mean = std = 128.
  A V2 model built with include_preprocessing=False expects the same, done by the caller.
  The eval crop of V2 is automl's (the weights' source): none for S/M/L (crop_fraction
  1.0 at 320 pixels and above), the reference's for B0–B3.

Padding: V1 pads strided convolutions with ZeroPadding2D(correct_pad) and then 'valid'.
For a static input size that is TF 'same' exactly (pad k//2 on both sides for odd sizes,
one less before for even sizes), so the converted model uses padding "same". A V1 model
built with input_shape=(None, None, 3) cannot see the size and always pads as if even: at
odd sizes it then matches neither our "same" nor "symmetric". V2 uses padding="same" on
every convolution (TF 'same' at any size). BatchNorm epsilon is Keras's default 1e-3 in
both families (V2's momentum 0.9 only matters for training).
"""

from __future__ import annotations

import dataclasses
import io
import os
import re
import zipfile
from typing import Any

import h5py
import numpy as np

from efficientnet_jax.models import architecture, registry
from efficientnet_jax.weights import converters
from efficientnet_jax.weights import strict
from efficientnet_jax.weights import tf_checkpoint
from efficientnet_jax.weights import weights_directory

KERAS_EPSILON = 1e-7         # keras.backend.epsilon(): Normalization's floor on sqrt(variance)
# The published keras-applications files store these standard deviations as the
# Normalization *variance* (tensorflow/tensorflow#49930); Keras compensates with an unsaved
# Rescaling(1/sqrt(std)) whenever it builds a model with weights="imagenet".
PUBLISHED_VARIANCE = (0.229, 0.224, 0.225)
# The families Keras builds, with the name of their depthwise conv layers.
V1, V2 = "efficientnet", "efficientnetv2"
_DEPTHWISE = {V1: "dwconv", V2: "dwconv2"}
# V2 S/M/L: Rescaling(1/128, offset=-1) is (x - 128) / 128.
V2_MEAN_RGB = V2_STDDEV_RGB = (128.0, 128.0, 128.0)

_BN = converters.TF_BN  # Keras names BatchNorm variables as TF does
_IGNORED = {
    "normalization/count": "how many samples Normalization.adapt saw; no effect on outputs",
}


@dataclasses.dataclass(frozen=True)
class _Layer:
  """A Keras layer with variables: its name, class (snake case), variables, our module."""

  name: str
  cls: str
  variables: tuple[str, ...]
  ours: str  # our module path, e.g. "blocks_3/depthwise_conv"; "" for Normalization


def convert(path: str | os.PathLike[str], *, variant: str | None = None,
            padding: str | None = None, bn_epsilon: float | None = None,
            resolution: int | None = None, crop_fraction: float | None = None
            ) -> tuple[dict[str, Any], weights_directory.WeightsInfo]:
  """Convert a Keras EfficientNet or EfficientNetV2 weights file: (variables, info).

  Args:
    path: `.h5`, `.weights.h5` or `.keras` (see the module doc for the layouts).
    variant: "b0" … "b7", "v2_b0" … "v2_b3", "v2_s", "v2_m", "v2_l"; by default inferred
      from the shapes.
    padding, bn_epsilon, resolution, crop_fraction: override what Keras implies ('same',
      1e-3, the variant's resolution, the reference's crop).

  The info's `mean_rgb`/`stddev_rgb` are Keras's input preprocessing (module doc).

  Raises:
    ValueError: a directory, a file of another format or one cut short (`_read_tensors`),
      the file does not match the variant exactly (one message lists every missing,
      unused and mis-shaped tensor, after naming the variant the file's shapes fit if it
      is another one), no variant matches its shapes, or the variant is of a family Keras
      does not build.
  """
  raw, layout = _read_tensors(path)
  named = variant
  variant = converters.choose_variant(variant, lambda: _shapes(raw, layout), family_name=None,
                                      squeeze_excite=True)  # keeps Lite/EdgeTPU out
  family = registry.lookup(variant)[0].name
  if family not in _DEPTHWISE:
    raise ValueError(f"variant={variant!r} is an {family} variant; Keras files hold "
                     f"{V1} (b0 … b7) or {V2} (v2_b0 … v2_l) weights")
  network = registry.variant_network(variant)
  layers = _keras_layers(network, family)
  tensors = _keras3_names(raw, layers) if layout == "keras3" else _legacy_names(raw)
  num_classes = int(np.shape(tensors["predictions/kernel"])[-1]) \
      if "predictions/kernel" in tensors else 0
  if not num_classes:
    layers = [layer for layer in layers if layer.name != "predictions"]
  expected = converters.variable_shapes(network, num_classes)
  if family == V1:  # only V1 saves its (adapted) Normalization
    expected.update({"preprocessing/mean": (3,), "preprocessing/variance": (3,)})
  try:
    flat = strict.assign(expected, tensors, _rules(layers), _IGNORED)
  except ValueError as e:
    if named:  # say what the file is, when the variant asked for is something else
      raise ValueError(converters.mismatch(variant, lambda: _shapes(raw, layout),
                                         squeeze_excite=True) + str(e)) from None
    raise
  if family == V1:
    mean_rgb = _rgb(255.0 * flat.pop("preprocessing/mean"))
    stddev_rgb = _rgb(keras_stddev(flat.pop("preprocessing/variance")))
  else:
    mean_rgb, stddev_rgb = v2_preprocessing(variant)
    # Keras's V2 weights are automl's: evaluated as automl does (no crop at ≥ 320 pixels).
    crop_fraction = tf_checkpoint.automl_preprocessing(variant, resolution, crop_fraction)[2]
  info = converters.published_info(
      variant, num_classes, converters.TF_CONVENTION,
      {"format": "keras", "file": os.path.abspath(os.fspath(path))},
      mean_rgb=mean_rgb, stddev_rgb=stddev_rgb, padding=padding, bn_epsilon=bn_epsilon,
      resolution=resolution, crop_fraction=crop_fraction)
  return strict.unflatten(flat), info


def keras_stddev(variance: np.ndarray) -> np.ndarray:
  """The divisor (0–255 scale) a Keras EfficientNet applies for a stored variance.

  A file storing exactly PUBLISHED_VARIANCE is a published file (or one saved from a
  weights="imagenet" model), which Keras runs with its extra Rescaling: the divisor is then
  the ImageNet std. (Loading such a file into a weights=None model skips that Rescaling;
  we follow weights="imagenet", the way the weights were trained.)
  """
  stddev = np.maximum(np.sqrt(variance), KERAS_EPSILON)
  if np.allclose(variance, PUBLISHED_VARIANCE, rtol=0, atol=1e-6):
    stddev = stddev * np.sqrt(PUBLISHED_VARIANCE)  # the unsaved Rescaling: total is std
  return 255.0 * stddev


def v2_preprocessing(variant: str) -> tuple[tuple[float, float, float],
                                            tuple[float, float, float]]:
  """(mean_rgb, stddev_rgb) of Keras's EfficientNetV2 input layers for `variant`.

  Keras picks them by model name: B variants ("efficientnetv2-b0") get V1's ImageNet
  Normalization, as automl trained them ('effnetv1_autoaug'); the others (x - 128) / 128.
  """
  if re.fullmatch(r"v2_b\d", variant):
    return weights_directory.IMAGENET_MEAN_RGB, weights_directory.IMAGENET_STDDEV_RGB
  return V2_MEAN_RGB, V2_STDDEV_RGB


def _read_tensors(path: str | os.PathLike[str]) -> tuple[dict[str, np.ndarray], str]:
  """Every dataset in the file by its HDF5 path, and the layout: "legacy" or "keras3".

  Raises:
    ValueError: no such file, a directory, a file of another format, or one that is no
      longer (being cut short) an HDF5 file or a .keras archive holding one.
  """
  path = os.fspath(path)
  if os.path.isdir(path):
    raise ValueError(f"{path} is a directory; the keras format is one .h5, .weights.h5 or "
                     ".keras file")
  if not os.path.isfile(path):
    raise ValueError(f"Keras weights file {path!r} does not exist")
  converters.expect_kind(path, "Keras weights", reads=("hdf5", "keras", "zip"))
  try:
    if zipfile.is_zipfile(path):  # a .keras archive
      with zipfile.ZipFile(path) as archive:
        data = io.BytesIO(archive.read("model.weights.h5"))
      with h5py.File(data, "r") as f:
        return _datasets(f), "keras3"
    with h5py.File(path, "r") as f:
      root = f["model_weights"] if "model_weights" in f else f
      layout = "legacy" if "layer_names" in root.attrs else "keras3"
      return _datasets(root), layout
  except (OSError, KeyError, zipfile.BadZipFile, EOFError) as e:
    # h5py's messages say what is wrong (truncated file, file signature not found).
    raise ValueError(f"{path}: not a readable Keras weights file (.h5, .weights.h5 or "
                     f".keras; truncated or damaged?): {converters.reason(e)}") from None


def _keras_layers(network: architecture.Network, family: str) -> list[_Layer]:
  """The layers with variables of Keras's EfficientNet(V2), in `model.layers` order."""
  bn, bn_vars = "batch_normalization", _BN.variables
  out = [_Layer("stem_conv", "conv2d", ("kernel",), "stem_conv/conv"),
         _Layer("stem_bn", bn, bn_vars, "stem_bn")]
  if family == V1:  # V2's Normalization (B variants) holds constants, no variables
    out.insert(0, _Layer("normalization", "normalization", ("mean", "variance", "count"), ""))
  first_of_stage: dict[int, int] = {}
  for b in network.blocks:
    first_of_stage.setdefault(b.stage, b.index)
    p = f"block{b.stage + 1}{chr(ord('a') + b.index - first_of_stage[b.stage])}_"
    q = f"blocks_{b.index}/"
    if b.has_expand_conv:  # 1×1 in MBConv, k×k (with the stride) in Fused-MBConv
      out += [_Layer(p + "expand_conv", "conv2d", ("kernel",), q + "expand_conv/conv"),
              _Layer(p + "expand_bn", bn, bn_vars, q + "expand_bn")]
    if b.kind == architecture.MBCONV:
      out += [_Layer(p + _DEPTHWISE[family], "depthwise_conv2d", ("kernel",),
                     q + "depthwise_conv"),
              _Layer(p + "bn", bn, bn_vars, q + "depthwise_bn")]
    if b.se_channels:
      out += [_Layer(p + "se_reduce", "conv2d", ("kernel", "bias"), q + "se/reduce/conv"),
              _Layer(p + "se_expand", "conv2d", ("kernel", "bias"), q + "se/expand/conv")]
    out += [_Layer(p + "project_conv", "conv2d", ("kernel",), q + "project_conv/conv"),
            _Layer(p + "project_bn", bn, bn_vars, q + "project_bn")]
  return out + [_Layer("top_conv", "conv2d", ("kernel",), "head_conv/conv"),
                _Layer("top_bn", bn, bn_vars, "head_bn"),
                _Layer("predictions", "dense", ("kernel", "bias"), "classifier")]


def _shapes(raw: dict[str, np.ndarray], layout: str) -> tuple[int, int, int]:
  """(stem width, head width, block count) of the file, for `registry.infer_variant`."""
  if layout == "legacy":
    names = _legacy_names(raw)
    stem, head = names.get("stem_conv/kernel"), names.get("top_conv/kernel")
    blocks = sum(1 for n in names if re.fullmatch(r"block\d+[a-z]+_project_conv/kernel", n))
  else:
    convs = [raw[n] for n in sorted(raw, key=_layer_number)
             if re.fullmatch(r"layers/conv2d(_\d+)?/vars/0", n)]
    # Keras creates the stem conv first and top_conv last.
    stem, head = (convs[0], convs[-1]) if convs else (None, None)
    # One block per depthwise conv (MBConv), or per k×k conv2d but the stem (Fused-MBConv:
    # its k×k expansion or, with e=1, its k×k projection; every other conv2d is 1×1).
    blocks = sum(1 for n in raw if re.fullmatch(r"layers/depthwise_conv2d(_\d+)?/vars/0", n))
    blocks += sum(1 for kernel in convs[1:] if np.shape(kernel)[0] > 1)
  if stem is None or head is None:
    raise ValueError("cannot infer the variant: the file has no stem_conv/top_conv kernel; "
                     "pass variant=")
  return np.shape(stem)[-1], np.shape(head)[-1], blocks


def _layer_number(path: str) -> int:
  """`layers/conv2d_12/vars/0` → 12 (`layers/conv2d/...` → 0): Keras's creation order."""
  m = re.match(r"layers/[a-z_0-9]+?(?:_(\d+))?/vars/", path)
  return int(m.group(1) or 0) if m else 0


def _rules(layers: list[_Layer]) -> dict[str, strict.Rule]:
  rules = {}
  for layer in layers:
    if layer.cls == "batch_normalization":
      rules.update(_BN.rules(layer.name, layer.ours))
      continue
    for var in layer.variables:
      name = f"{layer.name}/{var}"
      if name in _IGNORED:
        continue
      if layer.cls == "normalization":  # consumed as preprocessing, not a variable
        rules[name] = strict.Rule(f"preprocessing/{var}", np.ravel)
      elif layer.cls == "depthwise_conv2d":
        rules[name] = strict.Rule(f"params/{layer.ours}/{var}", converters.tf_depthwise)
      else:
        rules[name] = strict.Rule(f"params/{layer.ours}/{var}")
  return rules


def _legacy_names(raw: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
  """`stem_conv/stem_conv/kernel:0` → `stem_conv/kernel`."""
  out = {}
  for path, value in raw.items():
    parts = path.split("/")
    layer, var = parts[0], parts[-1].split(":")[0]
    # Keras numbers the unnamed Normalization per session: normalization_1, _2, ...
    layer = re.sub(r"^normalization_\d+$", "normalization", layer)
    if var == "depthwise_kernel":  # tf.keras 2's name for DepthwiseConv2D's kernel
      var = "kernel"
    name = f"{layer}/{var}"
    out[name if name not in out else path] = value  # a clash stays visible, unmapped
  return out


def _keras3_names(raw: dict[str, np.ndarray],
                  layers: list[_Layer]) -> dict[str, np.ndarray]:
  """`layers/conv2d_3/vars/0` → `block1a_project_conv/kernel`; unknown paths kept as is."""
  by_path, counts = {}, {}
  for layer in layers:
    n = counts.get(layer.cls, 0)
    counts[layer.cls] = n + 1
    group = layer.cls if n == 0 else f"{layer.cls}_{n}"
    for i, var in enumerate(layer.variables):
      by_path[f"layers/{group}/vars/{i}"] = f"{layer.name}/{var}"
  return {by_path.get(path, path): value for path, value in raw.items()}


def _datasets(group: h5py.Group) -> dict[str, np.ndarray]:
  out = {}
  group.visititems(lambda name, obj: out.__setitem__(name, obj[()])
                   if isinstance(obj, h5py.Dataset) else None)
  return out


def _rgb(values: np.ndarray) -> tuple[float, float, float]:
  r, g, b = (float(v) for v in np.asarray(values, np.float64))
  return r, g, b
