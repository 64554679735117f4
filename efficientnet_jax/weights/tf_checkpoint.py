"""tensorflow/tpu EfficientNet checkpoints (`model.ckpt-*`) → our variables.

Read with `tf.train.load_checkpoint` (a checkpoint directory or prefix). Names, under the
model's scope (e.g. `efficientnet-b0/`), with TF's per-scope layer numbering:
  stem/conv2d/kernel, stem/tpu_batch_normalization/{gamma,beta,moving_mean,moving_variance}
  blocks_N/  expansion ≠ 1: conv2d (expand), tpu_batch_normalization,
                            depthwise_conv2d/depthwise_kernel, tpu_batch_normalization_1,
                            se/conv2d, se/conv2d_1 (kernel, bias), conv2d_1 (project),
                            tpu_batch_normalization_2
             expansion = 1: depthwise_conv2d, tpu_batch_normalization, se/…,
                            conv2d (project), tpu_batch_normalization_1
  head/conv2d/kernel, head/tpu_batch_normalization/…, head/dense/{kernel,bias}
Models trained off-TPU name their BatchNorms `batch_normalization`; both are read.

Each variable's `/ExponentialMovingAverage` copy is used when present (the reference
evaluates its EMA weights; BN moving statistics have copies too), the raw value otherwise.
Optimizer slots (`/RMSProp`, `/RMSProp_1`, `/Momentum`) and `global_step` are ignored.
Depthwise kernels are (k, k, C, 1) in TF: the last two axes swap for ours.
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
_SLOT = re.compile(r"/(RMSProp|RMSProp_1|Momentum)$")
_BN = converters.TF_BN


def convert(path: str | os.PathLike[str], *, variant: str | None = None,
            use_ema: bool = True, advprop: bool = False, padding: str | None = None,
            bn_epsilon: float | None = None, resolution: int | None = None,
            crop_fraction: float | None = None
            ) -> tuple[dict[str, Any], weights_directory.WeightsInfo]:
  """Convert a tensorflow/tpu checkpoint: (variables, info for `save_weights`).

  Args:
    path: checkpoint directory (its latest checkpoint) or prefix (`.../model.ckpt-1000`).
    variant: "b0" … "l2"; by default from the scope name (`efficientnet-b3/…`), else
      inferred from the shapes.
    use_ema: take the `/ExponentialMovingAverage` copies where they exist.
    advprop: AdvProp checkpoints expect inputs scaled to [-1, 1] (mean = std = 127.5).
    padding, bn_epsilon, resolution, crop_fraction: override what the reference implies
      ('same', 1e-3, the variant's resolution, its crop).

  Raises:
    ValueError: unreadable path, or tensors that do not fit the variant exactly (one
      message lists every missing, unused and mis-shaped tensor).
  """
  import tensorflow as tf  # imported here: only this converter needs TF
  try:
    reader = tf.train.load_checkpoint(os.fspath(path))
  except (tf.errors.NotFoundError, tf.errors.DataLossError, ValueError) as e:
    raise ValueError(f"cannot read a TF checkpoint at {os.fspath(path)!r}: {e}") from None
  shapes = reader.get_variable_to_shape_map()
  scope = _model_scope(shapes)
  match = re.fullmatch(r"efficientnet-(b\d|l2)", scope)
  variant = converters.choose_variant(variant, lambda: _shapes(shapes, scope),
                                      named=match and match.group(1),
                                      naming=f"the checkpoint's scope {scope!r}")
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
  source = {base: reader.get_tensor(name) for base, name in chosen.items()}
  from_ema = sum(1 for base, name in chosen.items() if base != name)
  mapped = sum(1 for base in chosen if base in mapping)
  ema = "ema" if from_ema == mapped else ("raw" if not from_ema else "mixed")

  info = converters.published_info(
      variant, num_classes, converters.TF_CONVENTION,
      {"format": "tf", "file": os.path.abspath(os.fspath(path)), "weights": ema},
      advprop=advprop, padding=padding, bn_epsilon=bn_epsilon, resolution=resolution,
      crop_fraction=crop_fraction)
  flat = strict.assign(converters.variable_shapes(network, num_classes), source, mapping,
                       ignored)
  return strict.unflatten(flat), info


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
    out[p + "depthwise_conv2d/depthwise_kernel"] = strict.Rule(
        f"params/{q}depthwise_conv/kernel", converters.tf_depthwise)
    if not b.has_expand_conv:
      convs, bns = {"conv2d": "project_conv"}, {bn: "depthwise_bn", f"{bn}_1": "project_bn"}
    else:
      convs = {"conv2d": "expand_conv", "conv2d_1": "project_conv"}
      bns = {bn: "expand_bn", f"{bn}_1": "depthwise_bn", f"{bn}_2": "project_bn"}
    for theirs, ours in convs.items():
      out[f"{p}{theirs}/kernel"] = strict.Rule(f"params/{q}{ours}/conv/kernel")
    for theirs, ours in bns.items():
      out.update(_BN.rules(p + theirs, q + ours))
    if b.se_channels:
      for theirs, ours in (("conv2d", "reduce"), ("conv2d_1", "expand")):
        for var in ("kernel", "bias"):
          out[f"{p}se/{theirs}/{var}"] = strict.Rule(f"params/{q}se/{ours}/conv/{var}")
  return out


def _shapes(shapes: dict[str, Any], scope: str) -> tuple[int, int, int]:
  """(stem width, head width, block count) of the checkpoint, for `registry.infer_variant`."""
  blocks = {m.group(1) for n in shapes for m in [re.match(rf"{re.escape(scope)}/blocks_(\d+)/",
                                                          n)] if m}
  head = shapes.get(f"{scope}/head/conv2d/kernel")
  if head is None:
    raise ValueError(f"cannot infer the variant: no {scope}/head/conv2d/kernel; pass variant")
  return shapes[f"{scope}/stem/conv2d/kernel"][-1], head[-1], len(blocks)
