"""TF EfficientNet checkpoints (`model.ckpt-*`) → our variables: tensorflow/tpu's V1 and
google/automl's EfficientNetV2.

Read with `tf.train.load_checkpoint` (a checkpoint directory or prefix). Names, under the
model's scope (`efficientnet-b0/`, `efficientnetv2-s/`, …), with TF's per-scope layer
numbering (automl's `effnetv2_model.py` spells the same numbers out: its blocks name their
convs conv2d, conv2d_1 and BatchNorms tpu_batch_normalization, _1, _2 in creation order):
  stem/conv2d/kernel, stem/tpu_batch_normalization/{gamma,beta,moving_mean,moving_variance}
  blocks_N/  MBConv, expansion ≠ 1: conv2d (expand), tpu_batch_normalization,
                            depthwise_conv2d/depthwise_kernel, tpu_batch_normalization_1,
                            se/conv2d, se/conv2d_1 (kernel, bias), conv2d_1 (project),
                            tpu_batch_normalization_2
             MBConv, expansion = 1: depthwise_conv2d, tpu_batch_normalization, se/…,
                            conv2d (project), tpu_batch_normalization_1
             Fused-MBConv (V2), expansion ≠ 1: conv2d (k×k expand, strided),
                            tpu_batch_normalization, [se/…], conv2d_1 (1×1 project),
                            tpu_batch_normalization_1
             Fused-MBConv (V2), expansion = 1: conv2d (k×k), tpu_batch_normalization
  head/conv2d/kernel, head/tpu_batch_normalization/…, head/dense/{kernel,bias}
Models trained off-TPU by tensorflow/tpu name their BatchNorms `batch_normalization`
(automl's keep `tpu_batch_normalization`); both are read. The variant comes from the scope
(`efficientnet-b3` → b3, `efficientnetv2-s` → v2_s), else from the shapes (stem width,
head width, block count) among V1 and V2.

Each variable's `/ExponentialMovingAverage` copy is used when present (the reference
evaluates its EMA weights; BN moving statistics have copies too), the raw value otherwise.
Optimizer slots (`/RMSProp`, `/RMSProp_1`, `/Momentum`) and `global_step` are ignored.
Depthwise kernels are (k, k, C, 1) in TF: the last two axes swap for ours.

Preprocessing recorded for V2 (automl's `preprocessing.py` and `effnetv2_configs.py`):
B0–B3 were trained with V1's pipeline ('effnetv1_autoaug'): ImageNet mean/std and the
reference crop; S/M/L/XL with (x - 128) / 128, evaluated without a crop (automl crops only
below 320 pixels), recorded as crop_fraction 1.0. automl resizes those bilinearly; the
recorded interpolation stays bicubic, the only one this package implements.
"""

from __future__ import annotations

import os
import re
from typing import Any

from efficientnet_jax.models import architecture, registry
from efficientnet_jax.weights import converters
from efficientnet_jax.weights import strict
from efficientnet_jax.weights import weights_directory

EMA_SUFFIX = "/ExponentialMovingAverage"
V1, V2 = "efficientnet", "efficientnetv2"  # the families these checkpoints hold
V2_MEAN_RGB = V2_STDDEV_RGB = (128.0, 128.0, 128.0)  # automl: (x - 128) / 128
AUTOML_CROP_BELOW = 320  # automl's eval crops (res / (res + 32)) only below this size
_SLOT = re.compile(r"/(RMSProp|RMSProp_1|Momentum)$")
_BN = converters.TF_BN


def convert(path: str | os.PathLike[str], *, variant: str | None = None,
            use_ema: bool = True, advprop: bool = False, padding: str | None = None,
            bn_epsilon: float | None = None, resolution: int | None = None,
            crop_fraction: float | None = None
            ) -> tuple[dict[str, Any], weights_directory.WeightsInfo]:
  """Convert a tensorflow/tpu or automl checkpoint: (variables, info for `save_weights`).

  Args:
    path: checkpoint directory (its latest checkpoint) or prefix (`.../model.ckpt-1000`).
    variant: "b0" … "l2", "v2_b0" … "v2_xl"; by default from the scope name
      (`efficientnet-b3/…`, `efficientnetv2-s/…`), else inferred from the shapes.
    use_ema: take the `/ExponentialMovingAverage` copies where they exist.
    advprop: AdvProp checkpoints expect inputs scaled to [-1, 1] (mean = std = 127.5);
      V1 only: V2's normalisation is automl's (module doc).
    padding, bn_epsilon, resolution, crop_fraction: override what the reference implies
      ('same', 1e-3, the variant's resolution, its crop).

  Raises:
    ValueError: an empty directory, a file of another format, a checkpoint that cannot be
      read (cut short, damaged), or tensors that do not fit the variant exactly (one
      message lists every missing, unused and mis-shaped tensor).
  """
  path = os.fspath(path)
  if not os.path.exists(path) and not os.path.exists(f"{path}.index"):
    raise ValueError(f"cannot read a TF checkpoint at {path!r}: it does not exist "
                     f"(neither a directory nor the prefix of an .index file)")
  if os.path.isdir(path) and not os.listdir(path):
    raise ValueError(f"{path} is an empty directory; a TF checkpoint directory holds a "
                     "`checkpoint` file and the model.ckpt-N.index and .data-* files")
  if os.path.isfile(path):  # a prefix names no file: a file is another format (or .index)
    converters.expect_kind(path, "a TF checkpoint (its directory or prefix)", reads=())
  import tensorflow as tf  # imported here: only this converter needs TF
  # What TF's reader raises for a missing, cut or foreign file (its C++ errors come as
  # OpError, or as IndexError for a read past the end).
  unreadable = (tf.errors.OpError, ValueError, IndexError, RuntimeError)
  try:
    reader = tf.train.load_checkpoint(path)
  except unreadable as e:
    raise ValueError(f"cannot read a TF checkpoint at {path!r} (truncated, damaged or not "
                     f"a TF checkpoint?): {converters.reason(e)}") from None
  shapes = reader.get_variable_to_shape_map()
  scope = _model_scope(shapes)
  variant = converters.choose_variant(variant, lambda: _shapes(shapes, scope),
                                      named=scope_variant(scope),
                                      naming=f"the checkpoint's scope {scope!r}",
                                      family_name=None, squeeze_excite=True)
  family = registry.lookup(variant)[0].name
  if family not in (V1, V2):
    raise ValueError(f"variant={variant!r} is an {family} variant; this converter reads "
                     f"{V1} (tensorflow/tpu) and {V2} (google/automl) checkpoints")
  if advprop and family == V2:
    raise ValueError("advprop=True is for V1 AdvProp checkpoints; automl's V2 "
                     "normalisation is recorded from the variant")
  network = registry.variant_network(variant)
  bn = ("tpu_batch_normalization" if f"{scope}/stem/tpu_batch_normalization/gamma" in shapes
        else "batch_normalization")
  num_classes = (int(shapes[f"{scope}/head/dense/kernel"][-1])
                 if f"{scope}/head/dense/kernel" in shapes else 0)
  mapping = rules(network, num_classes, scope, bn)

  # Our source name → the checkpoint tensor to read for it: a variable's EMA copy is read
  # under the variable's own name, so its raw value is never read.
  chosen, ignored = {}, {"global_step": "training step counter"}
  for name in shapes:
    base = name[:-len(EMA_SUFFIX)] if name.endswith(EMA_SUFFIX) else None
    if _SLOT.search(name):
      ignored[name] = "optimizer slot"
    elif base is not None and base in mapping:
      if use_ema:
        chosen[base] = name
      else:
        ignored[name] = "EMA copy; use_ema=False takes the raw weights"
    elif name not in ignored:
      chosen.setdefault(name, name)
  try:  # the index can be whole while the data file is cut short
    source = {base: reader.get_tensor(name) for base, name in chosen.items()}
  except unreadable as e:
    raise ValueError(f"cannot read the tensors of the TF checkpoint at {path!r} (its data "
                     f"file truncated or damaged?): {converters.reason(e)}") from None
  from_ema = sum(1 for base, name in chosen.items() if base != name)
  mapped = sum(1 for base in chosen if base in mapping)
  ema = "ema" if from_ema == mapped else ("raw" if not from_ema else "mixed")

  mean_rgb = stddev_rgb = None  # published_info's: ImageNet's, or AdvProp's
  if family == V2:
    mean_rgb, stddev_rgb, crop_fraction = automl_preprocessing(variant, resolution,
                                                               crop_fraction)
  info = converters.published_info(
      variant, num_classes, converters.TF_CONVENTION,
      {"format": "tf", "file": os.path.abspath(os.fspath(path)), "weights": ema},
      advprop=advprop, mean_rgb=mean_rgb, stddev_rgb=stddev_rgb, padding=padding,
      bn_epsilon=bn_epsilon, resolution=resolution, crop_fraction=crop_fraction)
  try:
    flat = strict.assign(converters.variable_shapes(network, num_classes), source, mapping,
                         ignored)
  except ValueError as e:  # a variant asked for that the tensors are not
    raise ValueError(converters.mismatch(variant, lambda: _shapes(shapes, scope),
                                         squeeze_excite=True) + str(e)) from None
  return strict.unflatten(flat), info


def scope_variant(scope: str) -> str | None:
  """Our variant for a checkpoint scope: "efficientnet-b3" → "b3", "efficientnetv2-s" →
  "v2_s"; None when the scope names no published variant (e.g. "model")."""
  v1 = re.fullmatch(r"efficientnet-(b\d|l2)", scope)
  v2 = re.fullmatch(r"efficientnetv2-(b\d|s|m|l|xl)", scope)
  return v1.group(1) if v1 else (f"v2_{v2.group(1)}" if v2 else None)


def automl_preprocessing(variant: str, resolution: int | None, crop_fraction: float | None
                         ) -> tuple[tuple[float, ...], tuple[float, ...], float | None]:
  """(mean_rgb, stddev_rgb, crop_fraction) automl evaluates a V2 variant with.

  B0–B3: V1's pipeline (ImageNet mean/std, crop padding 32, `crop_fraction` None); the
  others (x - 128) / 128. The eval crop is skipped at 320 pixels and above (crop 1.0).
  An explicit `crop_fraction` wins.
  """
  if re.fullmatch(r"v2_b\d", variant):
    mean, std = weights_directory.IMAGENET_MEAN_RGB, weights_directory.IMAGENET_STDDEV_RGB
  else:
    mean, std = V2_MEAN_RGB, V2_STDDEV_RGB
  size = resolution or registry.lookup(variant)[0].variants[variant].eval_size
  if crop_fraction is None and size >= AUTOML_CROP_BELOW:
    crop_fraction = 1.0
  return mean, std, crop_fraction


def _model_scope(shapes: dict[str, Any]) -> str:
  """The scope that holds `stem/conv2d/kernel`, e.g. "efficientnet-b0"."""
  scopes = sorted({m.group(1) for n in shapes
                   for m in [re.fullmatch(r"(.+)/stem/conv2d/kernel", n)] if m})
  if len(scopes) != 1:
    raise ValueError(f"expected one EfficientNet scope holding stem/conv2d/kernel, found "
                     f"{scopes or 'none'} (is this a tensorflow/tpu EfficientNet checkpoint?)")
  return scopes[0]


def rules(network: architecture.Network, num_classes: int, scope: str,
          bn: str = "tpu_batch_normalization") -> dict[str, strict.Rule]:
  """Checkpoint name → our variable, for every tensor of this network."""
  out = {f"{scope}/stem/conv2d/kernel": strict.Rule("params/stem_conv/conv/kernel"),
         f"{scope}/head/conv2d/kernel": strict.Rule("params/head_conv/conv/kernel")}
  out.update(_BN.rules(f"{scope}/stem/{bn}", "stem_bn"))
  out.update(_BN.rules(f"{scope}/head/{bn}", "head_bn"))
  if num_classes:
    out[f"{scope}/head/dense/kernel"] = strict.Rule("params/classifier/kernel")
    out[f"{scope}/head/dense/bias"] = strict.Rule("params/classifier/bias")
  for b in network.blocks:
    p, q = f"{scope}/blocks_{b.index}/", f"blocks_{b.index}/"
    # Convs and BatchNorms are numbered in creation order: [expand], [depthwise], project.
    depthwise = b.kind == architecture.MBCONV  # Fused-MBConv has none
    convs = ["expand_conv", "project_conv"] if b.has_expand_conv else ["project_conv"]
    bns = [*(["expand_bn"] if b.has_expand_conv else []),
           *(["depthwise_bn"] if depthwise else []), "project_bn"]
    if depthwise:
      out[p + "depthwise_conv2d/depthwise_kernel"] = strict.Rule(
          f"params/{q}depthwise_conv/kernel", converters.tf_depthwise)
    for i, ours in enumerate(convs):
      out[f"{p}{_numbered('conv2d', i)}/kernel"] = strict.Rule(f"params/{q}{ours}/conv/kernel")
    for i, ours in enumerate(bns):
      out.update(_BN.rules(p + _numbered(bn, i), q + ours))
    if b.se_channels:
      for theirs, ours in (("conv2d", "reduce"), ("conv2d_1", "expand")):
        for var in ("kernel", "bias"):
          out[f"{p}se/{theirs}/{var}"] = strict.Rule(f"params/{q}se/{ours}/conv/{var}")
  return out


def _numbered(name: str, i: int) -> str:
  """TF's layer numbering within a scope: conv2d, conv2d_1, conv2d_2, ..."""
  return name if i == 0 else f"{name}_{i}"


def _shapes(shapes: dict[str, Any], scope: str) -> tuple[int, int, int]:
  """(stem width, head width, block count) of the checkpoint, for `registry.infer_variant`."""
  blocks = {m.group(1) for n in shapes for m in [re.match(rf"{re.escape(scope)}/blocks_(\d+)/",
                                                          n)] if m}
  head = shapes.get(f"{scope}/head/conv2d/kernel")
  if head is None:
    raise ValueError(f"cannot infer the variant: no {scope}/head/conv2d/kernel; pass variant")
  return shapes[f"{scope}/stem/conv2d/kernel"][-1], head[-1], len(blocks)
