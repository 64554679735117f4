"""timm EfficientNet state dicts → our variables: V1 B0–B8/L2, V2, Lite and EdgeTPU.

Reads `.safetensors` with the safetensors package alone (numpy, no torch),
`.pth`/`.pt`/`.bin` with `torch.load(weights_only=True)`, and the Hugging Face folder timm
writes (`config.json` + `model.safetensors` or `pytorch_model.bin`: `huggingface.py`).
Names (timm 1.0):
`conv_stem`, `bn1`, `blocks.S.B.*`, `conv_head`, `bn2`, `classifier`; a block with expansion
6 (timm's InvertedResidual) has `conv_pw, bn1, conv_dw, bn2, se.conv_reduce, se.conv_expand,
conv_pwl, bn3`, one with expansion 1 (DepthwiseSeparableConv) `conv_dw, bn1, se.*, conv_pw,
bn2`; Fused-MBConv blocks are EdgeResidual (`conv_exp, bn1, se.*, conv_pwl, bn2`) or, with
expansion 1, ConvBnAct (`conv, bn1`). Convolutions OIHW → HWIO (depthwise (C,1,k,k) →
(k,k,1,C) by the same transpose), Linear (out,in) → (in,out).

The tensors do not say how the network was run, the model name does:
* `tf_efficientnet_*` (ports of the TF checkpoints): TF 'same' padding, BN epsilon 1e-3;
* `efficientnet_*` (trained in PyTorch by timm): symmetric padding, BN epsilon 1e-5.
The name comes from `timm_name` or from the folder's config.json ("architecture" and the
tag). A bare state dict without a name is refused (the wrong convention costs accuracy
silently) unless both padding and bn_epsilon are given; then the normalisation is that of
the convention with that padding. Names: `[tf_]efficientnet_bN|l2|liteN|es|em|el`,
`tf_efficientnetv2_bN|s|m|l|xl` (ours: bN, liteN, edgetpu_s/m/l, v2_bN, v2_s …).

Recorded preprocessing. From a Hugging Face folder: its config.json's (the test size when it
gives one, the crop, mean and std). Otherwise the reference's (the variant's resolution,
center crop with padding 32, bicubic, ImageNet mean/std; mean = std = 127.5 for AdvProp
names, `*_ap` or `.ap_*`). That is timm's own evaluation setting for the tf_* ports and for
efficientnet_b0; timm evaluates some native weights at other sizes (efficientnet_b3.ra2:
320, crop 1.0): see `timm.models.get_pretrained_cfg(name)` and override the resolution and
crop (efficientnet-convert --resolution --crop_fraction), or convert timm's folder. timm is
not imported here: it loads torchvision → triton, which crashes a process that has already
loaded TensorFlow.
"""

from __future__ import annotations

import dataclasses
import os
import pickle
import re
import zipfile
from typing import Any

import numpy as np

from efficientnet_jax.models import architecture, registry
from efficientnet_jax.weights import converters
from efficientnet_jax.weights import huggingface
from efficientnet_jax.weights import strict
from efficientnet_jax.weights import weights_directory

CONVENTIONS = {  # name prefix → how those weights ran
    "tf_efficientnet_": converters.TF_CONVENTION,
    "efficientnet_": converters.TORCH_CONVENTION,
}
_BN = converters.TORCH_BN


def convert(path: str | os.PathLike[str], *, variant: str | None = None,
            timm_name: str | None = None, padding: str | None = None,
            bn_epsilon: float | None = None, resolution: int | None = None,
            crop_fraction: float | None = None
            ) -> tuple[dict[str, Any], weights_directory.WeightsInfo]:
  """Convert a timm EfficientNet state dict: (variables, info for `save_weights`).

  Args:
    path: `.safetensors`, a torch pickle of the state dict (or of {'state_dict': ...}), or
      a Hugging Face folder timm wrote (config.json and the weights).
    variant: "b0" … "l2", "v2_s", "lite0" …; by default from the name, else inferred from
      the shapes.
    timm_name: timm model name, e.g. "tf_efficientnet_b3" or "efficientnet_b0.ra_in1k":
      chooses padding/epsilon (see module doc) and the normalisation (AdvProp). Required
      for a bare state dict unless padding and bn_epsilon are both given; a folder's
      config.json names its architecture.
    padding, bn_epsilon, resolution, crop_fraction: override what the name (or config.json)
      implies, and the reference's resolution and crop.

  Raises:
    ValueError: a file of another format or one cut short (`read_state_dict`), an empty
      folder or one with a damaged config.json, a bare state dict with no name (nor
      padding and bn_epsilon), an unknown name or convention, a name that contradicts
      config.json, or tensors that do not fit the variant exactly (one message names the
      variant the shapes are, if another, and lists every missing, unused and mis-shaped
      tensor).
  """
  if not os.path.exists(path):
    raise ValueError(f"timm weights {os.fspath(path)!r} do not exist")
  folder = huggingface.read_timm_folder(path) if os.path.isdir(path) else None
  if folder:
    timm_name = _folder_name(timm_name, folder)
  elif timm_name is None and (padding is None or bn_epsilon is None):
    raise ValueError(_no_name_message(path))  # before reading: nothing to guess from
  name_variant, convention = _parse_name(timm_name, padding)
  weights_file = folder.weights_file if folder else os.fspath(path)
  source = read_state_dict(weights_file, "timm")
  if "conv_stem.weight" not in source:  # another model or naming: one line, not 300
    hint = (" It has efficientnet_pytorch's names: use --format=efficientnet_pytorch."
            if "_conv_stem.weight" in source else
            f" Its first names: {', '.join(list(source)[:4]) or '(none)'}.")
    raise ValueError(f"{weights_file}: no conv_stem.weight, so not a timm EfficientNet "
                     f"state dict.{hint}")
  squeeze_excite = any(".se.conv_reduce." in n for n in source)
  variant = converters.choose_variant(
      variant, lambda: _shapes(source), named=name_variant, naming=f"timm_name={timm_name!r}",
      family_name=None, squeeze_excite=squeeze_excite)
  network = registry.variant_network(variant)
  given_crop = crop_fraction
  mean_rgb, stddev_rgb, crop_fraction = _preprocessing(variant, convention, crop_fraction)
  num_classes = int(np.shape(source["classifier.weight"])[0]) \
      if "classifier.weight" in source else 0
  if folder and folder.num_classes is not None and folder.num_classes != num_classes:
    raise ValueError(f"{folder.config_file} says num_classes={folder.num_classes}, but "
                     f"{weights_file} has a classifier of {num_classes}")
  advprop = bool(timm_name) and re.search(r"_ap\b|\.ap_", timm_name) is not None
  described = {"format": "timm", "file": os.path.abspath(weights_file),
               "timm_name": timm_name or ""}
  if folder:  # timm's own evaluation setting for these weights, unless overridden
    mean_rgb, stddev_rgb, advprop = folder.mean_rgb, folder.stddev_rgb, False
    crop_fraction = folder.crop_fraction if given_crop is None else given_crop
    resolution = folder.resolution if resolution is None else resolution
    if resolution is None:
      raise ValueError(f"{folder.config_file}: the input size is not square; pass resolution")
    described["config"] = os.path.abspath(folder.config_file)
  info = converters.published_info(
      variant, num_classes, CONVENTIONS[convention], described,
      advprop=advprop, mean_rgb=None if advprop else mean_rgb,
      stddev_rgb=None if advprop else stddev_rgb, padding=padding, bn_epsilon=bn_epsilon,
      resolution=resolution, crop_fraction=crop_fraction)
  if folder and folder.train_resolution:
    info = dataclasses.replace(info, train_resolution=folder.train_resolution)
  ignored = {n: "PyTorch BatchNorm's update counter; no effect on outputs"
             for n in source if n.endswith(".num_batches_tracked")}
  try:
    flat = strict.assign(converters.variable_shapes(network, num_classes), source,
                         rules(network, num_classes), ignored)
  except ValueError as e:  # a variant asked for (or named) that the tensors are not
    raise ValueError(converters.mismatch(variant, lambda: _shapes(source), squeeze_excite)
                     + str(e)) from None
  return strict.unflatten(flat), info


def _no_name_message(path: str | os.PathLike[str]) -> str:
  """Why a bare state dict is refused, and the three ways to say how it ran."""
  beside = os.path.dirname(os.path.abspath(path))
  hint = (f" {beside} has a {huggingface.CONFIG_FILE}: if timm wrote it, pass the folder "
          "instead of the file." if huggingface.has_config(beside) else "")
  return (f"{path}: a timm state dict does not say how its network ran; pass the timm model "
          "name (timm_name=, efficientnet-convert --timm_name=): tf_efficientnet_b0 for a "
          "port of the TF weights (TF 'same' padding, BN epsilon 1e-3), efficientnet_b0 for "
          "timm's own PyTorch-trained weights (symmetric padding, 1e-5); the wrong one "
          "gives wrong logits without an error. Or give both padding and bn_epsilon "
          "(--padding=same --bn_epsilon=1e-3)." + hint)


def _folder_name(timm_name: str | None, folder: huggingface.TimmFolder) -> str:
  """The timm name to convert a folder as: config.json's, or an explicit one that agrees."""
  if timm_name is None:
    return folder.timm_name
  if timm_name.split(".")[0] != folder.timm_name.split(".")[0]:
    raise ValueError(f"timm_name={timm_name!r} contradicts {folder.config_file} "
                     f"(architecture {folder.timm_name.split('.')[0]!r})")
  return timm_name


def read_state_dict(path: str | os.PathLike[str], format: str) -> dict[str, np.ndarray]:
  """Every tensor of a PyTorch state dict file by name, as numpy.

  A safetensors file (by its bytes, else by the `.safetensors` suffix) through the
  safetensors package (no torch), anything else through `torch.load(weights_only=True)`:
  a state dict, or a training checkpoint that holds one under "state_dict". The "module."
  prefix that `nn.DataParallel` adds is removed. `format` names the file's kind in errors.

  Raises:
    ValueError: no such file, a directory, a file of another format (refused before
      reading), one that is cut short or damaged, or one that holds no state dict.
  """
  path = os.fspath(path)
  if os.path.isdir(path):
    raise ValueError(f"{path} is a directory; {format} weights are read from one "
                     ".safetensors or .pth file")
  if not os.path.isfile(path):
    raise ValueError(f"{format} weights file {path!r} does not exist")
  # torch.load's error for a foreign file is a page about weights_only: refused first.
  kind = converters.expect_kind(path, f"{format} weights", reads=("torch", "zip", "safetensors"))
  if kind == "safetensors" or (kind != "torch" and path.endswith(".safetensors")):
    from safetensors.numpy import load_file  # optional dependency: only for this format
    try:
      state = dict(load_file(path))
    except Exception as e:  # SafetensorError (not importable by name) for any bad file
      raise ValueError(f"{path}: not a readable safetensors file (truncated or "
                       f"damaged?): {converters.reason(e)}") from None
  else:
    import torch  # optional dependency: only for pickled checkpoints
    try:
      state = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, OSError, EOFError, KeyError, ValueError, pickle.UnpicklingError,
            zipfile.BadZipFile) as e:  # what torch raises for a cut or damaged file
      raise ValueError(f"{path}: not a readable PyTorch weights file (truncated or "
                       f"damaged?): {converters.reason(e)}") from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
      state = state["state_dict"]  # training checkpoints wrap the state dict
    if not isinstance(state, dict):
      raise ValueError(f"{path}: expected a state dict (name → tensor), got {type(state)}")
    odd = sorted(k for k, v in state.items() if not isinstance(v, torch.Tensor))
    if odd:
      raise ValueError(f"{path}: expected a state dict (name → tensor); not tensors: "
                       f"{', '.join(map(str, odd[:5]))}")
    state = {k: v.float().numpy() if v.is_floating_point() else v.numpy()
             for k, v in state.items()}
  if state and all(k.startswith("module.") for k in state):
    state = {k[len("module."):]: v for k, v in state.items()}
  return state


def rules(network: architecture.Network, num_classes: int) -> dict[str, strict.Rule]:
  """timm tensor name → our variable, for every tensor of this network."""
  conv, linear = converters.torch_conv, np.transpose
  out = {"conv_stem.weight": strict.Rule("params/stem_conv/conv/kernel", conv),
         "conv_head.weight": strict.Rule("params/head_conv/conv/kernel", conv)}
  out.update(_BN.rules("bn1", "stem_bn"))
  out.update(_BN.rules("bn2", "head_bn"))
  if num_classes:
    out["classifier.weight"] = strict.Rule("params/classifier/kernel", linear)
    out["classifier.bias"] = strict.Rule("params/classifier/bias")
  first_of_stage: dict[int, int] = {}
  for b in network.blocks:
    first_of_stage.setdefault(b.stage, b.index)
    p, q = f"blocks.{b.stage}.{b.index - first_of_stage[b.stage]}.", f"blocks_{b.index}/"
    if b.kind == architecture.FUSED_MBCONV and not b.has_expand_conv:  # ConvBnAct
      names = {"conv": "project_conv", "bn1": "project_bn"}
    elif b.kind == architecture.FUSED_MBCONV:  # EdgeResidual
      names = {"conv_exp": "expand_conv", "bn1": "expand_bn", "conv_pwl": "project_conv",
               "bn2": "project_bn"}
    elif not b.has_expand_conv:  # DepthwiseSeparableConv: no expansion, conv_pw projects
      names = {"conv_dw": "depthwise_conv", "bn1": "depthwise_bn", "conv_pw": "project_conv",
               "bn2": "project_bn"}
    else:
      names = {"conv_pw": "expand_conv", "bn1": "expand_bn", "conv_dw": "depthwise_conv",
               "bn2": "depthwise_bn", "conv_pwl": "project_conv", "bn3": "project_bn"}
    for theirs, ours in names.items():
      if ours.endswith("_bn"):
        out.update(_BN.rules(p + theirs, q + ours))
      elif ours == "depthwise_conv":
        out[p + theirs + ".weight"] = strict.Rule(f"params/{q}{ours}/kernel", conv)
      else:
        out[p + theirs + ".weight"] = strict.Rule(f"params/{q}{ours}/conv/kernel", conv)
    if b.se_channels:
      for theirs, ours in (("conv_reduce", "reduce"), ("conv_expand", "expand")):
        out[f"{p}se.{theirs}.weight"] = strict.Rule(f"params/{q}se/{ours}/conv/kernel", conv)
        out[f"{p}se.{theirs}.bias"] = strict.Rule(f"params/{q}se/{ours}/conv/bias")
  return out


def _shapes(source: dict[str, np.ndarray]) -> tuple[int, int, int]:
  """(stem width, head width, block count) of the tensors, for `registry.infer_variant`."""
  if "conv_stem.weight" not in source or "conv_head.weight" not in source:
    raise ValueError("cannot infer the variant: no conv_stem.weight/conv_head.weight "
                     "tensor (is this a timm EfficientNet?); pass variant")
  blocks = {m.group(0) for n in source for m in [re.match(r"blocks\.\d+\.\d+\.", n)] if m}
  return (np.shape(source["conv_stem.weight"])[0], np.shape(source["conv_head.weight"])[0],
          len(blocks))


def _parse_name(timm_name: str | None, padding: str | None = None) -> tuple[str | None, str]:
  """(our variant or None, convention prefix) of a timm model name.

  No name (padding and bn_epsilon given instead): the convention with that padding, which
  decides the normalisation of the families whose TF ports take [-1, 1] inputs.
  """
  if timm_name is None:
    return None, "efficientnet_" if padding == "symmetric" else "tf_efficientnet_"
  m = (re.fullmatch(r"(tf_efficientnet_|efficientnet_)(b\d|l2|lite\d|e[sml])(_\w+)?(\.\w+)?",
                    timm_name) or
       re.fullmatch(r"(tf_)efficientnetv2_(b\d|s|m|l|xl)()(\.\w+)?", timm_name))
  if not m:
    raise ValueError(f"timm_name={timm_name!r} is not a timm EfficientNet name this "
                     "converter knows: tf_efficientnet_/efficientnet_ bN, l2, liteN, es, em, "
                     "el, or tf_efficientnetv2_ bN, s, m, l, xl")
  name = m.group(2)
  if timm_name.startswith("tf_efficientnetv2_"):
    return f"v2_{name}", "tf_efficientnet_"
  if re.fullmatch(r"e[sml]", name):
    return f"edgetpu_{name[1]}", m.group(1)
  return name, m.group(1)


def _preprocessing(variant: str, convention: str, crop_fraction: float | None
                   ) -> tuple[tuple[float, ...], tuple[float, ...], float | None]:
  """(mean, std, crop fraction) timm evaluates a port with (its pretrained configs).

  The TF ports of Lite, EdgeTPU and V2-S/M/L/XL take inputs in [-1, 1] (mean = std =
  127.5), and V2-S/M/L/XL the whole image (crop 1.0); everything else ImageNet's mean and
  std with the reference crop. An explicit crop_fraction wins.
  """
  family, _ = registry.lookup(variant)
  tf_port = convention == "tf_efficientnet_"
  big_v2 = variant in ("v2_s", "v2_m", "v2_l", "v2_xl")
  if tf_port and (family.name in ("efficientnet_lite", "efficientnet_edgetpu") or big_v2):
    mean, std = weights_directory.ADVPROP_MEAN_RGB, weights_directory.ADVPROP_STDDEV_RGB
  else:
    mean, std = weights_directory.IMAGENET_MEAN_RGB, weights_directory.IMAGENET_STDDEV_RGB
  if crop_fraction is None and big_v2:
    crop_fraction = 1.0
  return mean, std, crop_fraction
