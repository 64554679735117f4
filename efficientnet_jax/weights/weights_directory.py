"""The one on-disk format of converted weights: an Orbax checkpoint plus `model.json`.

A weights directory is an Orbax `StandardCheckpointer` save of
{'params', 'batch_stats'} (float32) with a `model.json` beside the checkpoint's own files:

  {"format_version": 1,
   "model": {"variant", "width", "depth", "num_classes", "padding", "bn_epsilon",
             "dropout_rate", "family"},
   "preprocessing": {"resolution", "train_resolution", "crop_padding", "crop_fraction",
                     "interpolation", "mean_rgb", "stddev_rgb"},
   "source": {"format", "file", ...}}

so `config.init_from=DIR` (`checkpointing.load_variables`, which restores DIR itself) and
`efficientnet_jax.load(DIR)` both read it. Preprocessing follows `config.input`:
center crop of `resolution/(resolution+crop_padding)` of the short side, or of
`crop_fraction` when that is set, bicubic resize, then `(image - mean_rgb) / stddev_rgb`
on the 0–255 scale. "resolution" is the size to evaluate and serve at; "train_resolution"
the size the weights were trained at (EfficientNetV2-S: 384 and 300), null where unknown.
"family" (a `models.registry` family) and "train_resolution" may be absent: files written
before they existed are EfficientNets trained at their evaluation size.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import tempfile
from typing import Any

import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
from flax import traverse_util

from efficientnet_jax.models import architecture, convnet, layers, registry, scaling
from efficientnet_jax.weights import strict

INFO_FILE = "model.json"
FORMAT_VERSION = 1
INTERPOLATIONS = ("bicubic",)  # the only resize preprocessing.eval_image implements
IMAGENET_MEAN_RGB = registry.IMAGENET_MEAN_RGB
IMAGENET_STDDEV_RGB = registry.IMAGENET_STDDEV_RGB
ADVPROP_MEAN_RGB = ADVPROP_STDDEV_RGB = (0.5 * 255,) * 3  # AdvProp: inputs scaled to [-1, 1]
CROP_PADDING = registry.CROP_PADDING  # what every published checkpoint was evaluated with

_MODEL_KEYS = ("variant", "width", "depth", "num_classes", "padding", "bn_epsilon",
               "dropout_rate", "family")
_OPTIONAL_KEYS = {"family": registry.DEFAULT_FAMILY,  # absent from older files
                  "train_resolution": None}
_PREPROCESSING_KEYS = ("resolution", "train_resolution", "crop_padding", "crop_fraction",
                       "interpolation", "mean_rgb", "stddev_rgb")


@dataclasses.dataclass(frozen=True)
class WeightsInfo:
  """The model settings and the preprocessing that travel with a set of weights."""

  variant: str                  # the published row it was sized from, e.g. "b3"
  width: float
  depth: float
  num_classes: int              # 0: a features-only model (no classifier)
  padding: str                  # "same" (TF) or "symmetric" (PyTorch)
  bn_epsilon: float
  dropout_rate: float
  resolution: int               # evaluation (and serving) size
  mean_rgb: tuple[float, float, float]
  stddev_rgb: tuple[float, float, float]
  crop_padding: int = CROP_PADDING
  crop_fraction: float | None = None
  interpolation: str = "bicubic"
  source: dict[str, str] = dataclasses.field(default_factory=dict)  # format, file, ...
  family: str = registry.DEFAULT_FAMILY  # the architecture `width`/`depth` scale
  train_resolution: int | None = None    # None: unknown, taken as `resolution`

  def __post_init__(self):
    _check(self, "WeightsInfo")

  @property
  def network(self) -> architecture.Network:
    return registry.build(self.family, self.width, self.depth, variant=self.variant)

  def model(self, **overrides: Any) -> convnet.ConvNet:
    """Our model with these settings; `overrides` set other ConvNet attributes
    (dtype, depthwise_impl, ...)."""
    settings = dict(num_classes=self.num_classes, dropout_rate=self.dropout_rate,
                    padding=self.padding, bn_epsilon=self.bn_epsilon,
                    bn_momentum=registry.family(self.family).bn_momentum)
    return convnet.ConvNet(self.network, **{**settings, **overrides})

  def update_config(self, config: ml_collections.ConfigDict) -> None:
    """Sets `config.model` and `config.input` to run these weights as they were trained.

    `config.model.num_classes` is left alone: evaluation sets it, fine-tuning takes the
    new dataset's.
    """
    m = config.model
    family = registry.family(self.family)
    m.family = self.family
    m.variant = self.variant if self.variant in family.variants else family.default_variant
    m.width, m.depth = self.width, self.depth
    m.resolution, m.eval_resolution = self.train_resolution or self.resolution, self.resolution
    m.dropout_rate, m.padding, m.bn_epsilon = self.dropout_rate, self.padding, self.bn_epsilon
    config.input.crop_padding = self.crop_padding
    config.input.crop_fraction = self.crop_fraction
    config.input.mean_rgb = tuple(self.mean_rgb)
    config.input.stddev_rgb = tuple(self.stddev_rgb)

  @classmethod
  def from_config(cls, config: ml_collections.ConfigDict, num_classes: int,
                  source: dict[str, str]) -> "WeightsInfo":
    """The settings a training config used (a workdir's config.json)."""
    size = registry.scaling_of(config.model)
    return cls(variant=config.model.variant, width=size.width, depth=size.depth,
               num_classes=num_classes, padding=config.model.padding,
               bn_epsilon=config.model.bn_epsilon, dropout_rate=size.dropout_rate,
               resolution=size.eval_size, train_resolution=size.resolution,
               crop_padding=config.input.crop_padding,
               crop_fraction=config.input.crop_fraction,
               mean_rgb=_rgb(config.input.mean_rgb), stddev_rgb=_rgb(config.input.stddev_rgb),
               source=dict(source), family=registry.family_of(config.model).name)

  def to_json(self) -> dict[str, Any]:
    d = dataclasses.asdict(self)
    return {"format_version": FORMAT_VERSION,
            "model": {k: d[k] for k in _MODEL_KEYS},
            "preprocessing": {k: list(d[k]) if isinstance(d[k], tuple) else d[k]
                              for k in _PREPROCESSING_KEYS},
            "source": d["source"]}

  @classmethod
  def from_json(cls, data: dict[str, Any], where: str) -> "WeightsInfo":
    """Parses `to_json`'s output; errors name `where` (the file) and the missing key."""
    if data.get("format_version") != FORMAT_VERSION:
      raise ValueError(f"{where}: format_version must be {FORMAT_VERSION}, got "
                       f"{data.get('format_version')!r}")
    fields = {}
    for section, keys in (("model", _MODEL_KEYS), ("preprocessing", _PREPROCESSING_KEYS)):
      values = data.get(section)
      if not isinstance(values, dict):
        raise ValueError(f"{where}: missing section {section!r}")
      for key in keys:
        if key not in values and key in _OPTIONAL_KEYS:
          fields[key] = _OPTIONAL_KEYS[key]
          continue
        if key not in values:
          raise ValueError(f"{where}: missing {section}.{key}")
        fields[key] = values[key]
    fields["mean_rgb"], fields["stddev_rgb"] = (_rgb(fields["mean_rgb"], f"{where}: mean_rgb"),
                                                _rgb(fields["stddev_rgb"],
                                                     f"{where}: stddev_rgb"))
    try:
      return cls(**fields, source=dict(data.get("source") or {}))
    except ValueError as e:
      raise ValueError(f"{where}: {e}") from None


def _check(info: WeightsInfo, where: str) -> None:
  """Every setting the model or the preprocessing could not use, named."""
  if info.family not in registry.FAMILIES:
    raise ValueError(f"{where}: family must be one of {tuple(registry.FAMILIES)}, got "
                     f"{info.family!r}")
  if info.padding not in layers.PADDINGS:
    raise ValueError(f"{where}: padding must be one of {layers.PADDINGS}, got "
                     f"{info.padding!r}")
  if info.interpolation not in INTERPOLATIONS:
    raise ValueError(f"{where}: interpolation must be one of {INTERPOLATIONS}, got "
                     f"{info.interpolation!r}")
  if not isinstance(info.num_classes, int) or info.num_classes < 0:
    raise ValueError(f"{where}: num_classes must be an integer >= 0, got "
                     f"{info.num_classes!r}")
  sizes = {"resolution": info.resolution, "train_resolution": info.train_resolution}
  for key, value in sizes.items():
    if not isinstance(value, int) or value < 1:
      if value is not None or key == "resolution":
        raise ValueError(f"{where}: {key} must be a positive integer, got {value!r}")
  if not info.bn_epsilon > 0:
    raise ValueError(f"{where}: bn_epsilon must be > 0, got {info.bn_epsilon!r}")
  if info.crop_fraction is not None and not 0 < info.crop_fraction <= 1:
    raise ValueError(f"{where}: crop_fraction must be None or in (0, 1], got "
                     f"{info.crop_fraction!r}")
  if info.crop_padding < 0:
    raise ValueError(f"{where}: crop_padding must be >= 0, got {info.crop_padding!r}")
  if len(info.mean_rgb) != 3 or len(info.stddev_rgb) != 3 or min(info.stddev_rgb) <= 0:
    raise ValueError(f"{where}: mean_rgb and stddev_rgb need 3 values, stddev > 0; got "
                     f"{info.mean_rgb!r}, {info.stddev_rgb!r}")
  # Width/depth/dropout ranges: the same checks and messages as a config's.
  scaling.Scaling(info.width, info.depth, info.resolution, info.dropout_rate)


def check_destination(directory: str | os.PathLike[str], overwrite: bool = False) -> None:
  """Refuses a weights directory to be written at `directory` before anything is
  converted: a file there, or a directory that is not empty (and not `overwrite`).

  Raises:
    ValueError: naming the path and what is there.
  """
  directory = os.path.abspath(os.fspath(directory))
  if os.path.lexists(directory) and not os.path.isdir(directory):
    raise ValueError(f"{directory} exists and is a file, not a weights directory")
  if os.path.isdir(directory) and os.listdir(directory) and not overwrite:
    raise ValueError(f"{directory} exists and is not empty; pass overwrite=True "
                     "(--overwrite) to replace it")


def save_weights(directory: str | os.PathLike[str], variables: dict[str, Any],
                 info: WeightsInfo, overwrite: bool = False) -> None:
  """Writes `variables` ({'params', 'batch_stats'}) and `info` as a weights directory.

  Written into a temporary `.<name>.partial-*` directory beside it and renamed when
  complete, so that a failed write (a full disk, an exception midway) leaves neither a
  partial directory nor the temporary one, and with `overwrite` the old directory stays
  as it was until the new one is whole.

  Raises:
    ValueError: the destination is refused (`check_destination`), or a variable is
      missing, extra or mis-shaped for `info.model()`; checked before anything is written.
  """
  check_destination(directory, overwrite)
  directory = os.path.abspath(os.fspath(directory))
  variables = _checked_variables(variables, info, directory)
  parent, name = os.path.split(directory)
  created = _missing_ancestors(parent)
  os.makedirs(parent, exist_ok=True)
  # Orbax writes its own temporary directories beside the path it saves to: inside
  # `work`, so that removing `work` removes them too.
  work = tempfile.mkdtemp(prefix=f".{name}.partial-", dir=parent)
  try:
    complete = os.path.join(work, name)
    with ocp.StandardCheckpointer() as checkpointer:  # Orbax creates `complete` itself
      checkpointer.save(complete, variables)
      checkpointer.wait_until_finished()
    with open(os.path.join(complete, INFO_FILE), "w") as f:
      json.dump(info.to_json(), f, indent=2)
    _replace(complete, directory, work)
  except BaseException:
    shutil.rmtree(work, ignore_errors=True)
    for path in reversed(created):  # the parents this call made, if still empty
      if os.path.isdir(path) and not os.listdir(path):
        os.rmdir(path)
    raise
  finally:
    shutil.rmtree(work, ignore_errors=True)


def _missing_ancestors(path: str) -> list[str]:
  """`path` and its ancestors that do not exist yet, outermost first."""
  missing = []
  while path and not os.path.exists(path):
    missing.append(path)
    path = os.path.dirname(path)
  return missing[::-1]


def _replace(complete: str, directory: str, work: str) -> None:
  """Renames `complete` to `directory`; an existing `directory` (empty, or replaced with
  `overwrite`) is moved into `work` first and put back if the rename fails."""
  old = None
  if os.path.lexists(directory):
    old = os.path.join(work, "previous")
    os.rename(directory, old)
  try:
    os.rename(complete, directory)
  except BaseException:
    if old:
      os.rename(old, directory)  # the earlier weights, as they were
    raise


def read_info(directory: str | os.PathLike[str]) -> WeightsInfo:
  """The `model.json` of a weights directory, without reading any weights."""
  path = os.path.join(os.fspath(directory), INFO_FILE)
  if not os.path.isfile(path):
    raise ValueError(f"{directory} is not a converted-weights directory: it has no "
                     f"{INFO_FILE} (make one with efficientnet-convert)")
  with open(path) as f:
    try:
      data = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:  # cut short, or not JSON
      raise ValueError(f"{path} is not valid JSON (truncated or damaged?): {e}") from None
  if not isinstance(data, dict):
    raise ValueError(f"{path}: expected a JSON object, got {type(data).__name__}")
  return WeightsInfo.from_json(data, path)


def load_weights(directory: str | os.PathLike[str]) -> tuple[dict[str, Any], WeightsInfo]:
  """({'params', 'batch_stats'} as numpy float32, info) of a weights directory."""
  info = read_info(directory)
  size = info.network.total_stride  # the smallest input the model takes
  abstract = jax.eval_shape(info.model(depthwise_impl="xla").init, jax.random.key(0),
                            np.zeros((1, size, size, 3), np.float32))
  target = jax.tree.map(lambda x: np.zeros(x.shape, x.dtype), dict(abstract))
  try:
    with ocp.StandardCheckpointer() as checkpointer:  # closed: no threads left behind
      variables = checkpointer.restore(os.path.abspath(os.fspath(directory)), target)
  except (ValueError, KeyError, FileNotFoundError, OSError) as e:
    # Orbax and TensorStore say which file, but not in few words: the first line of it.
    raise ValueError(f"{directory}: cannot restore its weights: the checkpoint is "
                     f"truncated, damaged or incomplete, or does not match its {INFO_FILE} "
                     f"({info.variant}, {info.num_classes} classes): "
                     f"{str(e).strip().splitlines()[0][:400]}") from None
  return jax.tree.map(np.asarray, variables), info


def _checked_variables(variables: dict[str, Any], info: WeightsInfo,
                       where: str) -> dict[str, Any]:
  expected = strict.variable_shapes(info.model(depthwise_impl="xla"),
                                    image_size=info.network.total_stride)
  got = traverse_util.flatten_dict(
      {k: variables.get(k, {}) for k in ("params", "batch_stats")}, sep="/")
  problems = [f"missing {k} {s}" for k, s in expected.items() if k not in got]
  problems += [f"extra {k} {np.shape(v)}" for k, v in got.items() if k not in expected]
  problems += [f"wrong shape {k} {np.shape(v)}, model has {expected[k]}"
               for k, v in got.items() if k in expected and np.shape(v) != expected[k]]
  if problems:
    raise ValueError(f"variables for {where} do not fit the model in its {INFO_FILE} "
                     f"({info.variant}, {info.num_classes} classes):\n  " +
                     "\n  ".join(problems))
  return strict.unflatten({k: np.asarray(v, np.float32) for k, v in got.items()})


def _rgb(values: Any, where: str = "rgb") -> tuple[float, float, float]:
  values = tuple(float(v) for v in np.ravel(np.asarray(values, np.float64)))
  if len(values) != 3:
    raise ValueError(f"{where}: expected 3 values (R, G, B), got {values!r}")
  return values  # type: ignore[return-value]
