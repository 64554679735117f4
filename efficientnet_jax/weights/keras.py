"""Keras-applications EfficientNet B0–B7 weights → our variables, read with h5py alone.

Layouts read:
* legacy HDF5: the published keras-applications files and Keras 3's `model.save("x.h5")`.
  Datasets are `<layer>/<layer>/<var>[:0]` (under `model_weights/` for a whole model),
  e.g. `block2a_dwconv/block2a_dwconv/kernel`.
* Keras 3 `model.save_weights("x.weights.h5")`, and the `model.weights.h5` inside a
  `.keras` archive: `layers/<class>[_<n>]/vars/<i>`. Layers are numbered per class in
  `model.layers` order, not named, so the names are recovered by replaying that order.

Keras's input layers Rescaling(1/255) and Normalization are not in our model, which takes
normalised images: the Normalization's mean and variance become `mean_rgb`/`stddev_rgb`
(0–255 scale); feed our model `(image - mean_rgb) / stddev_rgb`.

Padding: Keras pads strided convolutions with ZeroPadding2D(correct_pad) and then 'valid'.
For a static input size that is TF 'same' exactly (pad k//2 on both sides for odd sizes,
one less before for even sizes), so the converted model uses padding "same". A Keras model
built with input_shape=(None, None, 3) cannot see the size and always pads as if even: at
odd sizes it then matches neither our "same" nor "symmetric".
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
from efficientnet_jax.weights import weights_directory

KERAS_EPSILON = 1e-7         # keras.backend.epsilon(): Normalization's floor on sqrt(variance)
# The published keras-applications files store these standard deviations as the
# Normalization *variance* (tensorflow/tensorflow#49930); Keras compensates with an unsaved
# Rescaling(1/sqrt(std)) whenever it builds a model with weights="imagenet".
PUBLISHED_VARIANCE = (0.229, 0.224, 0.225)

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
  """Convert a Keras EfficientNet weights file: (variables, info for `save_weights`).

  Args:
    path: `.h5`, `.weights.h5` or `.keras` (see the module doc for the layouts).
    variant: "b0" … "b7"; by default inferred from the shapes.
    padding, bn_epsilon, resolution, crop_fraction: override what Keras implies ('same',
      1e-3, the variant's resolution, the reference's crop).

  The info's `mean_rgb`/`stddev_rgb` are the file's Normalization layer (0–255 scale).

  Raises:
    ValueError: the file does not match the variant exactly (one message lists every
      missing, unused and mis-shaped tensor), or no variant matches its shapes.
  """
  raw, layout = _read_tensors(path)
  variant = converters.choose_variant(variant, lambda: _shapes(raw, layout))
  network = registry.variant_network(variant)
  layers = _keras_layers(network)
  tensors = _keras3_names(raw, layers) if layout == "keras3" else _legacy_names(raw)
  num_classes = int(np.shape(tensors["predictions/kernel"])[-1]) \
      if "predictions/kernel" in tensors else 0
  if not num_classes:
    layers = [layer for layer in layers if layer.name != "predictions"]
  expected = converters.variable_shapes(network, num_classes)
  expected.update({"preprocessing/mean": (3,), "preprocessing/variance": (3,)})
  flat = strict.assign(expected, tensors, _rules(layers), _IGNORED)
  mean = flat.pop("preprocessing/mean")
  variance = flat.pop("preprocessing/variance")
  info = converters.published_info(
      variant, num_classes, converters.TF_CONVENTION,
      {"format": "keras", "file": os.path.abspath(os.fspath(path))},
      mean_rgb=_rgb(255.0 * mean), stddev_rgb=_rgb(keras_stddev(variance)),
      padding=padding, bn_epsilon=bn_epsilon, resolution=resolution,
      crop_fraction=crop_fraction)
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


def _read_tensors(path: str | os.PathLike[str]) -> tuple[dict[str, np.ndarray], str]:
  """Every dataset in the file by its HDF5 path, and the layout: "legacy" or "keras3"."""
  if zipfile.is_zipfile(path):  # a .keras archive
    with zipfile.ZipFile(path) as archive:
      data = io.BytesIO(archive.read("model.weights.h5"))
    with h5py.File(data, "r") as f:
      return _datasets(f), "keras3"
  with h5py.File(path, "r") as f:
    root = f["model_weights"] if "model_weights" in f else f
    layout = "legacy" if "layer_names" in root.attrs else "keras3"
    return _datasets(root), layout


def _keras_layers(network: architecture.Network) -> list[_Layer]:
  """The layers with variables of Keras's EfficientNet, in `model.layers` order."""
  bn, bn_vars = "batch_normalization", _BN.variables
  out = [_Layer("normalization", "normalization", ("mean", "variance", "count"), ""),
         _Layer("stem_conv", "conv2d", ("kernel",), "stem_conv/conv"),
         _Layer("stem_bn", bn, bn_vars, "stem_bn")]
  first_of_stage: dict[int, int] = {}
  for b in network.blocks:
    first_of_stage.setdefault(b.stage, b.index)
    p = f"block{b.stage + 1}{chr(ord('a') + b.index - first_of_stage[b.stage])}_"
    q = f"blocks_{b.index}/"
    if b.has_expand_conv:
      out += [_Layer(p + "expand_conv", "conv2d", ("kernel",), q + "expand_conv/conv"),
              _Layer(p + "expand_bn", bn, bn_vars, q + "expand_bn")]
    out += [_Layer(p + "dwconv", "depthwise_conv2d", ("kernel",), q + "depthwise_conv"),
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
    blocks = sum(1 for n in names if n.endswith("_dwconv/kernel"))
  else:
    convs = sum(1 for n in raw if re.fullmatch(r"layers/conv2d(_\d+)?/vars/0", n))
    stem = raw.get("layers/conv2d/vars/0")  # Keras creates the stem conv first ...
    head = raw.get(f"layers/conv2d_{convs - 1}/vars/0")  # ... and top_conv last
    blocks = sum(1 for n in raw if re.fullmatch(r"layers/depthwise_conv2d(_\d+)?/vars/0", n))
  if stem is None or head is None:
    raise ValueError("cannot infer the variant: the file has no stem_conv/top_conv kernel; "
                     "pass variant=")
  return np.shape(stem)[-1], np.shape(head)[-1], blocks


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
