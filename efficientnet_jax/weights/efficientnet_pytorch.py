"""`efficientnet_pytorch` state dicts (lukemelas/EfficientNet-PyTorch) → our variables.

Reads `.pth`/`.pt`/`.bin` with `torch.load(weights_only=True)` (a state dict, or a training
checkpoint holding one under "state_dict"; a DataParallel "module." prefix is removed) and
`.safetensors` with the safetensors package. Names (efficientnet-pytorch 0.7.1):
`_conv_stem.weight`, `_bn0.*` (stem), `_blocks.N.*` numbered through the whole network
(`_expand_conv.weight` and `_bn0` only where the expansion is not 1, `_depthwise_conv.weight`,
`_bn1`, `_se_reduce.weight/bias`, `_se_expand.weight/bias`, `_project_conv.weight`, `_bn2`),
`_conv_head.weight`, `_bn1.*` (head), `_fc.weight/bias` (absent with include_top=False).
Convolutions OIHW → HWIO, `_fc` (out, in) → (in, out).

How the package runs these weights (efficientnet_pytorch/model.py, utils.py), which the
tensors do not say:
* padding: `from_name`/`from_pretrained` build `Conv2dStaticSamePadding` for the variant's
  image size, TF 'same' at that size (with `image_size=None`, `Conv2dDynamicSamePadding`:
  TF 'same' at any size). A static model fed another size keeps the padding of its
  construction size; our 'same' is the dynamic one, equal to it at the native size;
* BatchNorm epsilon 1e-3 (`batch_norm_epsilon`), momentum 0.01 in PyTorch's sense, 0.99 in
  TF's (training only); swish; SE to max(1, int(block input channels · 0.25)); drop connect
  and dropout only in training.
So: padding 'same', epsilon 1e-3 (options override them).

Lite: ports of the TF EfficientNet-Lite weights saved in this naming (ml-illustrated/
EfficientNet-Lite-PyTorch, a fork of the package: same static 'same' padding and epsilon,
ReLU6, no SE, stem and head not scaled) have no `_se_*` tensors: the variant is then a
Lite one (family efficientnet_lite), else a V1 B0–B8/L2, from the (stem width, head width,
block count) unless given, and every block's output width where those fit two (Lite1 and
Lite2).

Recorded preprocessing: the family's normalisation (V1: ImageNet mean/std; AdvProp weights,
the package's `adv-efficientnet-bN-*.pth`, mean = std = 127.5; Lite: (x − 127)/128), the
variant's resolution and the reference's center crop (padding 32). The package's ImageNet
example evaluates the whole short side instead (Resize + CenterCrop to the resolution):
crop_fraction=1.0 records that.
"""

from __future__ import annotations

import os
import re
from typing import Any

import numpy as np
from absl import logging

from efficientnet_jax.models import architecture, registry
from efficientnet_jax.weights import converters
from efficientnet_jax.weights import strict
from efficientnet_jax.weights import timm as timm_format  # its state dict reader
from efficientnet_jax.weights import weights_directory

CONVENTION = converters.TF_CONVENTION  # static/dynamic 'same' padding, epsilon 1e-3
FAMILIES = ("efficientnet", "efficientnet_lite")  # what this naming can hold (MBConv only)
_BN = converters.TORCH_BN
_ADVPROP_FILE = re.compile(r"adv-efficientnet-")  # the package's AdvProp releases


def convert(path: str | os.PathLike[str], *, variant: str | None = None,
            advprop: bool | None = None, padding: str | None = None,
            bn_epsilon: float | None = None, resolution: int | None = None,
            crop_fraction: float | None = None
            ) -> tuple[dict[str, Any], weights_directory.WeightsInfo]:
  """Convert an efficientnet_pytorch state dict: (variables, info for `save_weights`).

  Args:
    path: `.pth`/`.pt`/`.bin` (torch pickle) or `.safetensors`.
    variant: "b0" … "l2", "lite0" … "lite4"; by default inferred from the shapes (no
      `_se_*` tensors: a Lite variant).
    advprop: AdvProp weights (inputs in [-1, 1]); by default when the file name is the
      package's AdvProp release name (adv-efficientnet-b3-cdd7c0f4.pth).
    padding, bn_epsilon, resolution, crop_fraction: override the package's convention, the
      variant's resolution and the reference's crop.

  Raises:
    ValueError: a directory, a file of another format or one cut short
      (`timm.read_state_dict`), a file that is not in this naming (e.g. a timm state
      dict), a variant this naming cannot hold, AdvProp for Lite, or tensors that do not
      fit the variant exactly (one message names the variant the shapes are, if another,
      and lists every missing, unused and mis-shaped tensor).
  """
  source = timm_format.read_state_dict(path, "efficientnet_pytorch")
  if "_conv_stem.weight" not in source:
    hint = (" It has timm's names: use --format=timm." if "conv_stem.weight" in source else
            f" Its first names: {', '.join(list(source)[:4])}.")
    raise ValueError(f"{path}: no _conv_stem.weight, so not an efficientnet_pytorch state "
                     f"dict.{hint}")
  squeeze_excite = any("._se_reduce." in n for n in source)
  family_name = FAMILIES[0] if squeeze_excite else FAMILIES[1]
  try:
    variant = converters.choose_variant(variant, lambda: _shapes(source),
                                        family_name=family_name, squeeze_excite=squeeze_excite)
  except ValueError:
    # (stem, head, block count) cannot tell Lite1 from Lite2 (32, 1280, 21 blocks each):
    # every block's output width can.
    variant = _by_block_widths(source, family_name)
    if variant is None:
      raise
  family, _ = registry.lookup(variant)
  if family.name not in FAMILIES:
    raise ValueError(f"variant={variant!r} is {family.name}; efficientnet_pytorch's naming "
                     f"holds {' and '.join(FAMILIES)} variants only")
  if advprop is None and _ADVPROP_FILE.match(os.path.basename(os.fspath(path))):
    logging.info("%s: the package's AdvProp file name: inputs in [-1, 1]", path)
    advprop = True
  if advprop and family.name != "efficientnet":
    raise ValueError(f"advprop: AdvProp weights are EfficientNet B0–B8, not {variant}")
  network = registry.variant_network(variant, family.name)
  num_classes = int(np.shape(source["_fc.weight"])[0]) if "_fc.weight" in source else 0
  info = converters.published_info(
      variant, num_classes, CONVENTION,
      {"format": "efficientnet_pytorch", "file": os.path.abspath(os.fspath(path))},
      advprop=bool(advprop), mean_rgb=None if advprop else family.preprocessing.mean_rgb,
      stddev_rgb=None if advprop else family.preprocessing.stddev_rgb, padding=padding,
      bn_epsilon=bn_epsilon, resolution=resolution, crop_fraction=crop_fraction)
  ignored = {n: "PyTorch BatchNorm's update counter; no effect on outputs"
             for n in source if n.endswith(".num_batches_tracked")}
  try:
    flat = strict.assign(converters.variable_shapes(network, num_classes), source,
                         rules(network, num_classes), ignored)
  except ValueError as e:  # a variant asked for that the tensors are not
    raise ValueError(converters.mismatch(variant, lambda: _shapes(source), squeeze_excite)
                     + str(e)) from None
  return strict.unflatten(flat), info


def rules(network: architecture.Network, num_classes: int) -> dict[str, strict.Rule]:
  """efficientnet_pytorch tensor name → our variable, for every tensor of this network."""
  conv = converters.torch_conv
  out = {"_conv_stem.weight": strict.Rule("params/stem_conv/conv/kernel", conv),
         "_conv_head.weight": strict.Rule("params/head_conv/conv/kernel", conv)}
  out.update(_BN.rules("_bn0", "stem_bn"))
  out.update(_BN.rules("_bn1", "head_bn"))
  if num_classes:
    out["_fc.weight"] = strict.Rule("params/classifier/kernel", np.transpose)
    out["_fc.bias"] = strict.Rule("params/classifier/bias")
  for b in network.blocks:
    if b.kind != architecture.MBCONV:
      raise ValueError(f"block {b.index} is {b.kind}: efficientnet_pytorch has MBConv only")
    p, q = f"_blocks.{b.index}.", f"blocks_{b.index}/"
    if b.has_expand_conv:
      out[p + "_expand_conv.weight"] = strict.Rule(f"params/{q}expand_conv/conv/kernel", conv)
      out.update(_BN.rules(p + "_bn0", q + "expand_bn"))
    out[p + "_depthwise_conv.weight"] = strict.Rule(f"params/{q}depthwise_conv/kernel", conv)
    out.update(_BN.rules(p + "_bn1", q + "depthwise_bn"))
    if b.se_channels:
      for theirs, ours in (("_se_reduce", "reduce"), ("_se_expand", "expand")):
        out[f"{p}{theirs}.weight"] = strict.Rule(f"params/{q}se/{ours}/conv/kernel", conv)
        out[f"{p}{theirs}.bias"] = strict.Rule(f"params/{q}se/{ours}/conv/bias")
    out[p + "_project_conv.weight"] = strict.Rule(f"params/{q}project_conv/conv/kernel", conv)
    out.update(_BN.rules(p + "_bn2", q + "project_bn"))
  return out


def _by_block_widths(source: dict[str, np.ndarray], family_name: str) -> str | None:
  """The one variant of the family with the tensors' stem, head and block output widths."""
  def widths(network: architecture.Network) -> tuple[int, ...]:
    return (network.stem_channels, network.head_channels,
            *(b.out_channels for b in network.blocks))
  count = _shapes(source)[2]
  names = [f"_blocks.{i}._project_conv.weight" for i in range(count)]
  if "_conv_head.weight" not in source or not all(n in source for n in names):
    return None
  found = (np.shape(source["_conv_stem.weight"])[0], np.shape(source["_conv_head.weight"])[0],
           *(np.shape(source[n])[0] for n in names))
  matches = [v for v in registry.family(family_name).variants
             if widths(registry.variant_network(v, family_name)) == found]
  return matches[0] if len(matches) == 1 else None


def _shapes(source: dict[str, np.ndarray]) -> tuple[int, int, int]:
  """(stem width, head width, block count) of the tensors, for `registry.infer_variant`."""
  if "_conv_head.weight" not in source:
    raise ValueError("cannot infer the variant: no _conv_head.weight tensor; pass variant")
  blocks = {m.group(1) for n in source for m in [re.match(r"_blocks\.(\d+)\.", n)] if m}
  return (np.shape(source["_conv_stem.weight"])[0], np.shape(source["_conv_head.weight"])[0],
          len(blocks))
