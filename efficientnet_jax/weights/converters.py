"""Every weights format this project imports, behind one interface, and what they share.

A converter is a module with `convert(path, **options) -> (variables, WeightsInfo)`; the
variables fill our `convnet.ConvNet` exactly and the info is what `weights_directory`
saves beside them. `FORMATS` names them: "keras" (Keras-applications files), "tf"
(tensorflow/tpu checkpoints), "timm" (timm's PyTorch state dicts and Hugging Face folders),
"efficientnet_pytorch" (lukemelas/EfficientNet-PyTorch state dicts). Each converter only
knows its own tensor names; the rest is here, written once:

* the variant: the one asked for, else the one the source names, else the published
  variant with the source's (stem width, head width, block count) (`registry.infer_variant`);
* the conventions of the source frameworks: BatchNorm variable names (`TF_BN`, `TORCH_BN`),
  kernel layouts, and how their models ran (`Convention`: padding, BatchNorm epsilon);
* the `WeightsInfo` of a published variant, with the caller's overrides (padding,
  bn_epsilon, resolution, crop_fraction: options every converter takes).

A new format is a module with `convert` plus a row in `FORMATS`. The modules are imported
on first use: they import this one for the shared parts.
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import os
import re
import zipfile
from typing import Any, Callable, Mapping

import numpy as np

from efficientnet_jax.models import architecture, convnet, registry
from efficientnet_jax.weights import strict
from efficientnet_jax.weights import weights_directory

FORMATS = {
    "keras": "efficientnet_jax.weights.keras",
    "tf": "efficientnet_jax.weights.tf_checkpoint",
    "timm": "efficientnet_jax.weights.timm",
    "efficientnet_pytorch": "efficientnet_jax.weights.efficientnet_pytorch",
}
# Our BatchNorm variables, in the order every framework creates them.
_OUR_BN = (("params", "scale"), ("params", "bias"), ("batch_stats", "mean"),
           ("batch_stats", "var"))


def converter(format: str) -> Any:
  """The module that converts `format` (it has `convert(path, **options)`)."""
  if format not in FORMATS:
    raise ValueError(f"unknown weights format {format!r}; known: {', '.join(FORMATS)}")
  return importlib.import_module(FORMATS[format])


def options(format: str) -> tuple[str, ...]:
  """The option names `format`'s converter takes (all keyword arguments but the path)."""
  parameters = inspect.signature(converter(format).convert).parameters
  return tuple(name for name in parameters if name != "path")


def convert(path: str | os.PathLike[str], format: str, **given: Any
            ) -> tuple[dict[str, Any], weights_directory.WeightsInfo]:
  """`path` in `format` → (variables, info). Options set to None count as not given.

  Raises:
    ValueError: an unknown format, an option that format does not take, or what the
      converter raises (a file that does not fit, one error listing every problem; a
      file that is truncated, of another format or a directory), always naming `path`.
  """
  chosen = {name: value for name, value in given.items() if value is not None}
  unknown = sorted(set(chosen) - set(options(format)))
  if unknown:
    raise ValueError(f"the {format} converter takes no {', '.join(unknown)}; its options: "
                     f"{', '.join(options(format))}")
  try:
    return converter(format).convert(path, **chosen)
  except ValueError as e:  # every refusal names the file, even those from shared code
    if _names(str(e), os.fspath(path)) or _names(str(e), os.path.abspath(path)):
      raise
    raise ValueError(f"{os.fspath(path)}: {e}") from None


def _names(message: str, path: str) -> bool:
  """Whether `message` names `path` whole, as a path is written (a file "w" is not named
  by "weights")."""
  return re.search(rf"(^|[\s'\"]){re.escape(path)}($|[\s'\":/])", message) is not None


def reason(error: BaseException) -> str:
  """The first line of a reader's error (h5py, torch, safetensors, TF), for a message
  that names the file: their full messages run to pages."""
  text = str(error).strip()
  return f"{type(error).__name__}: {text.splitlines()[0][:300]}" if text else (
      type(error).__name__)


# --- What a file is, to name one handed to the wrong converter. --------------------------

# file_kind → how an error describes it (and the format that reads it).
FILE_KINDS = {
    "hdf5": "an HDF5 file (Keras .h5 or .weights.h5 weights: --format=keras)",
    "keras": "a .keras archive (--format=keras)",
    "torch": "a PyTorch file, as torch.save writes (--format=timm or "
             "--format=efficientnet_pytorch)",
    "safetensors": "a safetensors file (--format=timm or --format=efficientnet_pytorch)",
    "tf_index": "a TF checkpoint's .index file (--format=tf, given the checkpoint's "
                "directory or its prefix without .index)",
    "zip": "a zip archive",
    "text": "a text file",
    "empty": "an empty file (0 bytes)",
}
_HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
_ZIP_MAGIC = b"PK\x03\x04"
_PICKLE_PROTOCOL = 0x80  # the first byte of a pickle (torch.save's legacy format)
_SSTABLE_FOOTER = (0xdb4775248b80fb57).to_bytes(8, "little")  # ends a TF .index file
_TEXT = bytes(range(32, 127)) + b"\t\n\r\f"


def file_kind(path: str | os.PathLike[str]) -> str | None:
  """What the first and last bytes of the file at `path` say it is: a key of
  `FILE_KINDS`, or None when they say none of those (a damaged or unknown file).

  A cut file often keeps its first bytes: the kind is then that of the whole file, and its
  reader says what is missing. Reads at most a few kilobytes (a zip's directory).
  """
  with open(path, "rb") as f:
    head = f.read(4096)
    f.seek(0, os.SEEK_END)
    size = f.tell()
    f.seek(max(0, size - len(_SSTABLE_FOOTER)))
    tail = f.read()
  if not head:
    return "empty"
  if head.startswith(_HDF5_MAGIC):
    return "hdf5"
  if head.startswith(_ZIP_MAGIC):
    try:  # both a .keras file and torch.save's are zip archives: their members differ
      with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
    except (zipfile.BadZipFile, OSError):
      return "zip"  # its directory (at the end) is gone: cut short, or damaged
    if "model.weights.h5" in names:
      return "keras"
    return "torch" if any(n.endswith("data.pkl") for n in names) else "zip"
  if head[0] == _PICKLE_PROTOCOL:
    return "torch"
  header_size = int.from_bytes(head[:8], "little")  # safetensors: u64 size, then JSON
  if len(head) > 8 and head[8:9] == b"{" and header_size < 2**27:
    return "safetensors"
  if tail == _SSTABLE_FOOTER:
    return "tf_index"
  if not head.translate(None, _TEXT):
    return "text"
  return None


def expect_kind(path: str | os.PathLike[str], expected: str, reads: tuple[str, ...]
                ) -> str | None:
  """The `file_kind` of `path` when a reader that takes `reads` takes it (an unknown
  kind, None, is left to the reader to judge). `expected` names what that reader reads.

  Raises:
    ValueError: the file's bytes say it is another kind: naming the file, what was
      expected and what the file is, before anything is read.
  """
  kind = file_kind(path)
  if kind is not None and kind not in reads:
    raise ValueError(f"{os.fspath(path)} is not {expected}: it is {FILE_KINDS[kind]}")
  return kind


def mismatch(variant: str, shapes: Callable[[], tuple[int, int, int]],
             squeeze_excite: bool | None = None) -> str:
  """'variant=… (family) does not fit this file: its … are those of … (family).\n', to
  put before the list of tensors that do not fit; '' when the file's (stem width, head
  width, block count), which `shapes` reads, are `variant`'s or no published variant's."""
  try:
    found = registry.infer_variant(*shapes(), family_name=None,
                                   squeeze_excite=squeeze_excite)
  except ValueError:
    return ""
  if found == variant:
    return ""
  family = lambda v: registry.lookup(v)[0].name
  return (f"variant={variant!r} ({family(variant)}) does not fit this file: its stem width, "
          f"head width and block count are those of {found!r} ({family(found)}).\n")


# --- Conventions of the source frameworks. -----------------------------------------------


@dataclasses.dataclass(frozen=True)
class BatchNormNames:
  """A framework's names for BatchNorm's four variables, in its creation order."""

  scale: str
  bias: str
  mean: str
  var: str
  separator: str  # between a layer's name and its variable's

  @property
  def variables(self) -> tuple[str, str, str, str]:
    return self.scale, self.bias, self.mean, self.var

  def rules(self, theirs: str, ours: str) -> dict[str, strict.Rule]:
    """Their BatchNorm layer `theirs` → our BatchNorm module `ours` (e.g. "stem_bn")."""
    return {f"{theirs}{self.separator}{name}": strict.Rule(f"{collection}/{ours}/{leaf}")
            for name, (collection, leaf) in zip(self.variables, _OUR_BN)}


TF_BN = BatchNormNames("gamma", "beta", "moving_mean", "moving_variance", "/")  # TF, Keras
TORCH_BN = BatchNormNames("weight", "bias", "running_mean", "running_var", ".")  # PyTorch


@dataclasses.dataclass(frozen=True)
class Convention:
  """How a source's models ran, which their tensors do not say."""

  padding: str       # "same" (TF) or "symmetric" (PyTorch)
  bn_epsilon: float


TF_CONVENTION = Convention("same", 1e-3)          # TF/Keras, and timm's tf_efficientnet_* ports
TORCH_CONVENTION = Convention("symmetric", 1e-5)  # timm's own efficientnet_* (PyTorch-trained)


def tf_depthwise(kernel: np.ndarray) -> np.ndarray:
  """A TF/Keras depthwise kernel (kh, kw, C, 1) → ours (kh, kw, 1, C)."""
  return np.swapaxes(kernel, 2, 3)


def torch_conv(kernel: np.ndarray) -> np.ndarray:
  """A PyTorch conv kernel OIHW → HWIO; a depthwise (C, 1, k, k) becomes (k, k, 1, C)."""
  return np.transpose(kernel, (2, 3, 1, 0))


# --- What every converter does the same way. ---------------------------------------------


def choose_variant(variant: str | None, shapes: Callable[[], tuple[int, int, int]],
                   named: str | None = None, naming: str = "",
                   family_name: str | None = registry.DEFAULT_FAMILY,
                   squeeze_excite: bool | None = None) -> str:
  """The variant to convert: `variant`, else `named` (what the source's name says), else
  the one with the source's (stem width, head width, block count), which `shapes` reads,
  among `family_name`'s variants (None: every family's; `squeeze_excite` as in
  `registry.infer_variant`).

  `naming` says where `named` came from, for the error when it contradicts `variant`.
  """
  if variant and named and variant.lower() != named:
    raise ValueError(f"variant={variant!r} contradicts {naming}")
  if variant or named:
    return (variant or named).lower()  # type: ignore[union-attr]
  return registry.infer_variant(*shapes(), family_name=family_name,
                                squeeze_excite=squeeze_excite)


def variable_shapes(network: architecture.Network, num_classes: int) -> dict[str, strict.Shape]:
  """Every variable our ConvNet for `network` has, by path, with its shape (none allocated)."""
  model = convnet.ConvNet(network, num_classes=num_classes, depthwise_impl="xla")
  return strict.variable_shapes(model, image_size=network.total_stride)


def published_info(variant: str, num_classes: int, convention: Convention,
                   source: Mapping[str, str], *, advprop: bool = False,
                   mean_rgb: tuple[float, float, float] | None = None,
                   stddev_rgb: tuple[float, float, float] | None = None,
                   padding: str | None = None, bn_epsilon: float | None = None,
                   resolution: int | None = None, crop_fraction: float | None = None
                   ) -> weights_directory.WeightsInfo:
  """The settings of a published variant's weights, as the reference evaluates them.

  Its size row (width, depth, dropout, evaluation and training resolution; `resolution`
  overrides the evaluation one), the source's padding and epsilon, the reference's center
  crop, the variant's normalisation (`registry`: ImageNet's for V1, (x - 127) / 128 for
  Lite; AdvProp's [-1, 1] with `advprop`) unless `mean_rgb`/`stddev_rgb` are given;
  padding, bn_epsilon, resolution and crop_fraction override what the source implies.
  """
  family, _ = registry.lookup(variant)
  size = family.variants[variant]
  if mean_rgb is None or stddev_rgb is None:
    preprocessing = family.preprocessing_of(variant)
    mean_rgb, stddev_rgb = ((weights_directory.ADVPROP_MEAN_RGB,
                             weights_directory.ADVPROP_STDDEV_RGB) if advprop else
                            (preprocessing.mean_rgb, preprocessing.stddev_rgb))
  return weights_directory.WeightsInfo(
      variant=variant, width=size.width, depth=size.depth, num_classes=num_classes,
      padding=convention.padding if padding is None else padding,
      bn_epsilon=float(convention.bn_epsilon if bn_epsilon is None else bn_epsilon),
      dropout_rate=size.dropout_rate,
      resolution=size.eval_size if resolution is None else resolution,
      train_resolution=size.resolution,
      crop_padding=weights_directory.CROP_PADDING, crop_fraction=crop_fraction,
      mean_rgb=mean_rgb, stddev_rgb=stddev_rgb, source=dict(source), family=family.name)
