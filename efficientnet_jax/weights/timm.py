"""timm EfficientNet B0–B8/L2 state dicts → our variables.

Reads `.safetensors` with the safetensors package alone (numpy, no torch) and
`.pth`/`.pt`/`.bin` with `torch.load(weights_only=True)`. Names (timm 1.0):
`conv_stem`, `bn1`, `blocks.S.B.*`, `conv_head`, `bn2`, `classifier`; a block with expansion
6 (timm's InvertedResidual) has `conv_pw, bn1, conv_dw, bn2, se.conv_reduce, se.conv_expand,
conv_pwl, bn3`, one with expansion 1 (DepthwiseSeparableConv) `conv_dw, bn1, se.*, conv_pw,
bn2`. Convolutions OIHW → HWIO (depthwise (C,1,k,k) → (k,k,1,C) by the same transpose),
Linear (out,in) → (in,out).

The tensors do not say how the network was run, the model name does:
* `tf_efficientnet_*` (ports of the TF checkpoints): TF 'same' padding, BN epsilon 1e-3;
* `efficientnet_*` (trained in PyTorch by timm): symmetric padding, BN epsilon 1e-5.
Without a name the TF convention is assumed (most timm EfficientNet weights are TF ports)
and a warning says so.

Recorded preprocessing: the reference's (the variant's resolution, center crop with
padding 32, bicubic, ImageNet mean/std; mean = std = 127.5 for AdvProp names, `*_ap` or
`.ap_*`). That is timm's own evaluation setting for the tf_* ports and for
efficientnet_b0; timm evaluates some native weights at other sizes (efficientnet_b3.ra2:
320, crop 1.0): see `timm.models.get_pretrained_cfg(name)` and override the resolution and
crop (efficientnet-convert --resolution --crop_fraction). timm is not imported here:
it loads torchvision → triton, which crashes a process that has already loaded TensorFlow.
"""

from __future__ import annotations

import os
import re
from typing import Any

from absl import logging
import numpy as np

from efficientnet_jax.models import scaling
from efficientnet_jax.models import spec as spec_lib
from efficientnet_jax.weights import strict
from efficientnet_jax.weights import weights_directory

CONVENTIONS = {  # name prefix → (padding, BN epsilon)
    "tf_efficientnet_": ("same", 1e-3),
    "efficientnet_": ("symmetric", 1e-5),
}
DEFAULT_CONVENTION = "tf_efficientnet_"
_BN = {"weight": ("params", "scale"), "bias": ("params", "bias"),
       "running_mean": ("batch_stats", "mean"), "running_var": ("batch_stats", "var")}


def timm_variables(path: str | os.PathLike[str], variant: str | None = None,
                   timm_name: str | None = None, padding: str | None = None,
                   bn_epsilon: float | None = None
                   ) -> tuple[dict[str, Any], weights_directory.WeightsInfo]:
  """Convert a timm EfficientNet state dict: (variables, info for `save_weights`).

  Args:
    path: `.safetensors`, or a torch pickle of the state dict (or of {'state_dict': ...}).
    variant: "b0" … "l2"; by default from `timm_name`, else inferred from the shapes.
    timm_name: timm model name, e.g. "tf_efficientnet_b3" or "efficientnet_b0.ra_in1k":
      chooses padding/epsilon (see module doc) and the normalisation (AdvProp).
    padding, bn_epsilon: override what the name implies.

  Raises:
    ValueError: an unknown name or convention, or tensors that do not fit the variant
      exactly (one message lists every missing, unused and mis-shaped tensor).
  """
  name_variant, convention = _parse_name(timm_name)
  if variant and name_variant and variant.lower() != name_variant:
    raise ValueError(f"variant={variant!r} contradicts timm_name={timm_name!r}")
  source = read_state_dict(path)
  variant = (variant or name_variant or infer_variant(source)).lower()
  size = scaling.variant(variant)
  network = spec_lib.build(size.width, size.depth)
  num_classes = int(np.shape(source["classifier.weight"])[0]) \
      if "classifier.weight" in source else 0
  default_padding, default_epsilon = CONVENTIONS[convention]
  if timm_name is None and padding is None and bn_epsilon is None:
    logging.warning("No timm model name: assuming a tf_efficientnet_* port (padding 'same', "
                    "BN epsilon 1e-3). For timm's own efficientnet_* weights pass "
                    "timm_name (--timm_name=efficientnet_b0), else accuracy suffers.")
  info = weights_directory.WeightsInfo(
      variant=variant, width=size.width, depth=size.depth, num_classes=num_classes,
      padding=padding or default_padding,
      bn_epsilon=float(bn_epsilon if bn_epsilon is not None else default_epsilon),
      dropout_rate=size.dropout_rate,
      **_preprocessing(timm_name, size),
      source={"format": "timm", "file": os.path.abspath(os.fspath(path)),
              "timm_name": timm_name or ""})
  expected = strict.variable_shapes(info.model(depthwise_impl="xla"),
                                    image_size=network.total_stride)
  ignored = {n: "PyTorch BatchNorm's update counter; no effect on outputs"
             for n in source if n.endswith(".num_batches_tracked")}
  flat = strict.assign(expected, source, rules(network, num_classes), ignored)
  return strict.unflatten(flat), info


def read_state_dict(path: str | os.PathLike[str]) -> dict[str, np.ndarray]:
  """Every tensor of a timm checkpoint by name, as numpy."""
  path = os.fspath(path)
  if not os.path.isfile(path):
    raise ValueError(f"timm weights file {path!r} does not exist")
  if path.endswith(".safetensors"):
    from safetensors.numpy import load_file  # optional dependency: only for this format
    return dict(load_file(path))
  import torch  # optional dependency: only for pickled checkpoints
  state = torch.load(path, map_location="cpu", weights_only=True)
  if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
    state = state["state_dict"]  # timm's training checkpoints wrap the state dict
  if not isinstance(state, dict):
    raise ValueError(f"{path}: expected a state dict (name → tensor), got {type(state)}")
  return {k: v.float().numpy() if v.is_floating_point() else v.numpy()
          for k, v in state.items()}


def rules(network: spec_lib.Network, num_classes: int) -> dict[str, strict.Rule]:
  """timm tensor name → our variable, for every tensor of this network."""
  conv, linear = _conv, np.transpose
  out = {"conv_stem.weight": strict.Rule("params/stem_conv/conv/kernel", conv),
         "conv_head.weight": strict.Rule("params/head_conv/conv/kernel", conv)}
  out.update(_bn_rules("bn1", "stem_bn"))
  out.update(_bn_rules("bn2", "head_bn"))
  if num_classes:
    out["classifier.weight"] = strict.Rule("params/classifier/kernel", linear)
    out["classifier.bias"] = strict.Rule("params/classifier/bias")
  first_of_stage: dict[int, int] = {}
  for b in network.blocks:
    first_of_stage.setdefault(b.stage, b.index)
    p, q = f"blocks.{b.stage}.{b.index - first_of_stage[b.stage]}.", f"blocks_{b.index}/"
    if b.expand_ratio == 1:  # DepthwiseSeparableConv: no expansion, conv_pw projects
      names = {"conv_dw": "depthwise_conv", "bn1": "depthwise_bn", "conv_pw": "project_conv",
               "bn2": "project_bn"}
    else:
      names = {"conv_pw": "expand_conv", "bn1": "expand_bn", "conv_dw": "depthwise_conv",
               "bn2": "depthwise_bn", "conv_pwl": "project_conv", "bn3": "project_bn"}
    for theirs, ours in names.items():
      if ours.endswith("_bn"):
        out.update(_bn_rules(p + theirs, q + ours))
      elif ours == "depthwise_conv":
        out[p + theirs + ".weight"] = strict.Rule(f"params/{q}{ours}/kernel", conv)
      else:
        out[p + theirs + ".weight"] = strict.Rule(f"params/{q}{ours}/conv/kernel", conv)
    if b.se_channels:
      for theirs, ours in (("conv_reduce", "reduce"), ("conv_expand", "expand")):
        out[f"{p}se.{theirs}.weight"] = strict.Rule(f"params/{q}se/{ours}/conv/kernel", conv)
        out[f"{p}se.{theirs}.bias"] = strict.Rule(f"params/{q}se/{ours}/conv/bias")
  return out


def infer_variant(source: dict[str, np.ndarray]) -> str:
  """The published variant whose (stem width, head width, block count) the tensors have."""
  if "conv_stem.weight" not in source or "conv_head.weight" not in source:
    raise ValueError("cannot infer the variant: no conv_stem.weight/conv_head.weight "
                     "tensor (is this a timm EfficientNet?); pass variant")
  blocks = {m.group(0) for n in source for m in [re.match(r"blocks\.\d+\.\d+\.", n)] if m}
  found = (np.shape(source["conv_stem.weight"])[0], np.shape(source["conv_head.weight"])[0],
           len(blocks))
  for name, s in scaling.VARIANTS.items():
    network = spec_lib.build(s.width, s.depth)
    if (network.stem_channels, network.head_channels, len(network.blocks)) == found:
      return name
  raise ValueError(f"no EfficientNet variant has stem width {found[0]}, head width "
                   f"{found[1]} and {found[2]} blocks")


def _parse_name(timm_name: str | None) -> tuple[str | None, str]:
  """(variant or None, convention prefix) of a timm model name."""
  if timm_name is None:
    return None, DEFAULT_CONVENTION
  m = re.fullmatch(r"(tf_efficientnet_|efficientnet_)(b\d|l2)(_\w+)?(\.\w+)?", timm_name)
  if not m:
    raise ValueError(f"timm_name={timm_name!r} is not a timm EfficientNet B0–B8/L2 name "
                     "(tf_efficientnet_bN[...] or efficientnet_bN[...])")
  return m.group(2), m.group(1)


def _preprocessing(timm_name: str | None, size: scaling.Scaling) -> dict[str, Any]:
  """WeightsInfo preprocessing fields: the reference's, AdvProp's normalisation by name."""
  advprop = bool(timm_name) and re.search(r"_ap\b|\.ap_", timm_name) is not None
  return dict(resolution=size.resolution, crop_padding=32, crop_fraction=None,
              mean_rgb=weights_directory.ADVPROP_MEAN_RGB if advprop
              else weights_directory.IMAGENET_MEAN_RGB,
              stddev_rgb=weights_directory.ADVPROP_STDDEV_RGB if advprop
              else weights_directory.IMAGENET_STDDEV_RGB)


def _bn_rules(theirs: str, ours: str) -> dict[str, strict.Rule]:
  return {f"{theirs}.{var}": strict.Rule(f"{collection}/{ours}/{leaf}")
          for var, (collection, leaf) in _BN.items()}


def _conv(kernel: np.ndarray) -> np.ndarray:
  """PyTorch OIHW → HWIO; a depthwise (C, 1, k, k) becomes (k, k, 1, C)."""
  return np.transpose(kernel, (2, 3, 1, 0))
