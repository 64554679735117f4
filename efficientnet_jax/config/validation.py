"""Checks of a whole training config, run before any data is read or anything compiles.

Every key is checked against the schema of `default_config` (unknown keys are refused with
the closest valid name), for its type, and for its range. Each error names the key.

Numbers must be finite within float32 (what the device computes in: 1e300 would be inf
there), and sizes have upper bounds where a larger value is a typo that would only fail
later, inside JAX or TensorFlow (a resolution of 10**9, a batch of 10**12, a million
progressive stages). tests/test_config_fuzz.py holds the validator to that.
"""

from __future__ import annotations

import difflib
import math
from typing import Any, Callable

import jax
import ml_collections
import numpy as np

from efficientnet_jax.config import defaults
from efficientnet_jax.data import augment
from efficientnet_jax.models import convnet, layers, registry, scaling
from efficientnet_jax.training import metrics_log, optimizers, progressive

_Check = Callable[[Any], bool]

# Upper bounds of sizes: anything larger is a typo, not an experiment (see the docstring).
MAX_SEED = 2**63 - 1  # int64: JAX's key and TensorFlow's stateless seeds take it
MAX_NUM_CLASSES = 10**6  # a 1280 x 10**6 classifier is already 5 GB of float32
MAX_BATCH_SIZE = 2**20  # images per step, all devices together
MAX_STEPS = 2**31 - 1  # the train state's int32 step counter
MAX_EPOCHS = 1e6  # num_epochs, warmup/decay/eval/freeze epochs
MAX_RANDAUG_LAYERS = 32  # each is a switch over every op in the tf.data graph
MAX_PROGRESSIVE_STAGES = 1000  # each stage compiles its own train step
_FLOAT32_MAX = float(np.finfo(np.float32).max)

_positive = lambda v: v > 0
_non_negative = lambda v: v >= 0
_fraction = lambda v: 0 <= v < 1
_optional_positive = lambda v: v is None or v > 0
_path = lambda v: v is None or bool(v)  # "" is no path: an unset shell variable
_epochs = lambda v: 0 < v <= MAX_EPOCHS
_epochs_or_0 = lambda v: 0 <= v <= MAX_EPOCHS

# key: (allowed types, check, what the check means). Keys absent here are free-form.
RULES: dict[str, tuple[tuple[type, ...], _Check, str]] = {
    "seed": ((int,), lambda v: 0 <= v <= MAX_SEED, f"in [0, {MAX_SEED}] (int64)"),
    "model.family": ((str,), lambda v: v in registry.FAMILIES,
                     f"one of {', '.join(registry.FAMILIES)}"),
    "model.phi": ((int, float, type(None)), lambda v: v is None or math.isfinite(v), "finite"),
    "model.alpha": ((int, float), lambda v: v >= 1, ">= 1"),
    "model.beta": ((int, float), lambda v: v >= 1, ">= 1"),
    "model.gamma": ((int, float), lambda v: v >= 1, ">= 1"),
    "model.variant": ((str,), lambda v: bool(v), "a variant name"),
    "model.resolution_multiple": ((int,), lambda v: 0 < v <= scaling.MAX_RESOLUTION,
                                  f"in [1, {scaling.MAX_RESOLUTION}]"),
    "model.width": ((int, float, type(None)),
                    lambda v: v is None or 0 < v <= scaling.MAX_COEFFICIENT,
                    f"in (0, {scaling.MAX_COEFFICIENT}]"),
    "model.depth": ((int, float, type(None)),
                    lambda v: v is None or 0 < v <= scaling.MAX_COEFFICIENT,
                    f"in (0, {scaling.MAX_COEFFICIENT}]"),
    "model.resolution": ((int, type(None)),
                         lambda v: v is None or (scaling.MIN_RESOLUTION <= v
                                                 <= scaling.MAX_RESOLUTION),
                         f">= the total stride {scaling.MIN_RESOLUTION} and <= "
                         f"{scaling.MAX_RESOLUTION}"),
    "model.eval_resolution": ((int, type(None)),
                              lambda v: v is None or (scaling.MIN_RESOLUTION <= v
                                                      <= scaling.MAX_RESOLUTION),
                              f">= the total stride {scaling.MIN_RESOLUTION} and <= "
                              f"{scaling.MAX_RESOLUTION}"),
    "model.dropout_rate": ((int, float, type(None)), lambda v: v is None or 0 <= v < 1,
                           "in [0, 1)"),
    "model.drop_path_rate": ((int, float, type(None)), lambda v: v is None or 0 <= v < 1,
                             "in [0, 1) (None: the family's)"),
    "model.num_classes": ((int, type(None)), lambda v: v is None or 0 <= v <= MAX_NUM_CLASSES,
                          f"in [0, {MAX_NUM_CLASSES}] (0: features only)"),
    "model.padding": ((str,), lambda v: v in layers.PADDINGS, f"one of {layers.PADDINGS}"),
    "model.depthwise_impl": ((str,), lambda v: v in layers.DEPTHWISE_IMPLS,
                             f"one of {layers.DEPTHWISE_IMPLS}"),
    "model.dtype": ((str,), lambda v: v in convnet.DTYPES, f"one of {convnet.DTYPES}"),
    "model.remat": ((bool,), lambda v: True, "a bool"),
    "finetune.freeze_backbone_epochs": ((int, float), _epochs_or_0, f"in [0, {MAX_EPOCHS:g}]"),
    "finetune.freeze_bn": ((bool,), lambda v: True, "a bool"),
    "model.remat_policy": ((str,), lambda v: v in convnet.REMAT_POLICIES,
                           f"one of {convnet.REMAT_POLICIES}"),
    "model.bn_momentum": ((int, float, type(None)), lambda v: v is None or 0 <= v < 1,
                          "in [0, 1) (None: the family's)"),
    "model.bn_epsilon": ((int, float), _positive, "> 0"),
    "dataset": ((str,), lambda v: bool(v), "a tfds dataset name"),
    "train_split": ((str,), lambda v: bool(v), "a split name"),
    "eval_split": ((str,), lambda v: bool(v), "a split name"),
    "input.crop_padding": ((int,), _non_negative, ">= 0"),
    "input.crop_fraction": ((int, float, type(None)), lambda v: v is None or 0 < v <= 1,
                            "in (0, 1]"),
    "input.shuffle_buffer": ((int,), _positive, "> 0"),
    "input.mixup_alpha": ((int, float), _non_negative, ">= 0"),
    "input.cutmix_alpha": ((int, float), _non_negative, ">= 0"),
    "input.crop_area_range": ((tuple, list), lambda v: len(v) == 2, "(low, high)"),
    "input.mean_rgb": ((tuple, list), lambda v: len(v) == 3, "3 numbers (0-255 scale)"),
    "input.stddev_rgb": ((tuple, list), lambda v: len(v) == 3, "3 numbers (0-255 scale)"),
    "input.random_flip": ((bool,), lambda v: True, "a bool"),
    "input.cache_eval": ((bool,), lambda v: True, "a bool"),
    "input.skip_bad_images": ((bool,), lambda v: True, "a bool"),
    "input.skip_bad_records": ((bool,), lambda v: True, "a bool"),
    "input.randaug_layers": ((int,), lambda v: 0 <= v <= MAX_RANDAUG_LAYERS,
                             f"in [0, {MAX_RANDAUG_LAYERS}]"),
    "input.augment": ((str, type(None)), lambda v: v in augment.AUGMENTATIONS,
                      f"one of {augment.AUGMENTATIONS}"),
    "input.randaug_magnitude": ((int, float),
                                lambda v: 0 <= v <= augment.MAX_RANDAUG_MAGNITUDE,
                                f"in [0, {augment.MAX_RANDAUG_MAGNITUDE}]"),
    "progressive.num_stages": ((int,), lambda v: 0 <= v <= MAX_PROGRESSIVE_STAGES,
                               f"in [0, {MAX_PROGRESSIVE_STAGES}] (0: off)"),
    "progressive.interpolation": ((str,), lambda v: v in progressive.INTERPOLATIONS,
                                  f"one of {', '.join(progressive.INTERPOLATIONS)}"),
    "progressive.start_image_size": ((int,), lambda v: 0 < v <= scaling.MAX_RESOLUTION,
                                     f"in [1, {scaling.MAX_RESOLUTION}]"),
    "progressive.image_size_multiple": ((int,), lambda v: 0 < v <= scaling.MAX_RESOLUTION,
                                        f"in [1, {scaling.MAX_RESOLUTION}]"),
    "progressive.start_randaug_magnitude": ((int, float),
                                            lambda v: 0 <= v <= augment.MAX_RANDAUG_MAGNITUDE,
                                            f"in [0, {augment.MAX_RANDAUG_MAGNITUDE}]"),
    "progressive.start_mixup_alpha": ((int, float), _non_negative, ">= 0"),
    "progressive.start_cutmix_alpha": ((int, float), _non_negative, ">= 0"),
    "progressive.start_dropout_rate": ((int, float, type(None)),
                                       lambda v: v is None or 0 <= v < 1, "in [0, 1)"),
    "progressive.start_drop_path_rate": ((int, float, type(None)),
                                         lambda v: v is None or 0 <= v < 1, "in [0, 1)"),
    "batch_size": ((int,), lambda v: 0 < v <= MAX_BATCH_SIZE, f"in [1, {MAX_BATCH_SIZE}]"),
    "eval_batch_size": ((int, type(None)), lambda v: v is None or 0 < v <= MAX_BATCH_SIZE,
                        f"in [1, {MAX_BATCH_SIZE}]"),
    "num_epochs": ((int, float), _epochs, f"in (0, {MAX_EPOCHS:g}]"),
    "num_train_steps": ((int, type(None)), lambda v: v is None or 0 < v <= MAX_STEPS,
                        f"in [1, {MAX_STEPS}] (the int32 step counter)"),
    "optimizer.name": ((str,), lambda v: v in optimizers.OPTIMIZERS,
                       f"one of {', '.join(optimizers.OPTIMIZERS)}"),
    "optimizer.base_learning_rate": ((int, float), _positive, "> 0"),
    "optimizer.base_batch_size": ((int,), _positive, "> 0"),
    "optimizer.momentum": ((int, float), _fraction, "in [0, 1)"),
    "optimizer.rmsprop_decay": ((int, float), _fraction, "in [0, 1)"),
    "optimizer.rmsprop_epsilon": ((int, float), _positive, "> 0"),
    "optimizer.adamw_weight_decay": ((int, float), _non_negative, ">= 0"),
    "optimizer.l2_weight_decay": ((int, float), _non_negative, ">= 0"),
    "schedule.name": ((str,), lambda v: v in optimizers.SCHEDULES,
                      f"one of {', '.join(optimizers.SCHEDULES)}"),
    "schedule.warmup_epochs": ((int, float), _epochs_or_0, f"in [0, {MAX_EPOCHS:g}]"),
    "schedule.decay_epochs": ((int, float), _epochs, f"in (0, {MAX_EPOCHS:g}]"),
    "schedule.decay_rate": ((int, float), lambda v: 0 < v <= 1, "in (0, 1]"),
    "schedule.end_learning_rate_factor": ((int, float), lambda v: 0 <= v <= 1, "in [0, 1]"),
    "schedule.power": ((int, float), _positive, "> 0"),
    "label_smoothing": ((int, float), _fraction, "in [0, 1)"),
    "ema_decay": ((int, float), _fraction, "in [0, 1) (0 disables EMA)"),
    "bn_group_size": ((int,), _non_negative, ">= 0 (0: global batch statistics)"),
    "eval_every_epochs": ((int, float), _epochs, f"in (0, {MAX_EPOCHS:g}]"),
    "eval_raw_weights": ((bool,), lambda v: True, "a bool"),
    "log_every_steps": ((int,), _positive, "> 0"),
    "checkpoint_every_steps": ((int,), _positive, "> 0"),
    "keep_checkpoints": ((int,), _positive, "> 0"),
    "allow_config_change": ((bool,), lambda v: True, "a bool"),
    "on_nonfinite": ((str,), lambda v: v in ("stop", "skip"), "stop or skip"),
    "init_from": ((str, type(None)), _path, "a path (None: unset), not empty"),
    "data_dir": ((str, type(None)), _path, "a path (None: tfds's default), not empty"),
}


def check_keys(config: ml_collections.ConfigDict) -> None:
  """Unknown keys (a typo in a config file) are refused, naming the closest valid key."""
  known = set(metrics_log.flatten_config(defaults.get_config()))
  unknown = sorted(set(metrics_log.flatten_config(config)) - known)
  if unknown:
    lines = []
    for key in unknown:
      close = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
      lines.append(f"config.{key}" + (f" (did you mean config.{close[0]}?)" if close else ""))
    raise ValueError("unknown config keys: " + "; ".join(lines))


def check_values(config: ml_collections.ConfigDict) -> None:
  """Types and ranges of every key in RULES, then the relations between keys."""
  flat = metrics_log.flatten_config(config)
  for key, (types, check, meaning) in RULES.items():
    value = flat.get(key)
    # bool is an int in Python: refuse it where a number is expected, and vice versa.
    wrong_type = (not isinstance(value, types) or
                  (isinstance(value, bool) and bool not in types))
    if wrong_type:
      raise ValueError(f"config.{key}={value!r} has type {type(value).__name__}; expected "
                       + " or ".join(t.__name__ for t in types))
    if _number(value) and not _finite32(value):
      raise ValueError(f"config.{key}={value!r} must be a finite number (within float32's "
                       f"±{_FLOAT32_MAX:.3g})")
    if isinstance(value, (tuple, list)) and not all(_number(v) and _finite32(v)
                                                    for v in value):
      raise ValueError(f"config.{key}={tuple(value)!r} must hold finite numbers")
    if not check(value):
      raise ValueError(f"config.{key}={value!r} must be {meaning}")
  check_model(config.model)
  progressive.check(config)
  low, high = tuple(config.input.crop_area_range)
  if not 0 < low <= high <= 1:
    raise ValueError(f"config.input.crop_area_range={(low, high)} must satisfy "
                     "0 < low <= high <= 1")
  for key in ("mean_rgb", "stddev_rgb"):
    values = tuple(config.input[key])
    if len(values) != 3 or (key == "stddev_rgb" and min(values) <= 0):
      raise ValueError(f"config.input.{key}={values} must be 3 numbers (0-255 scale)"
                       + (", all > 0" if key == "stddev_rgb" else ""))
  peak = optimizers.peak_learning_rate(config)
  if not _finite32(peak):
    raise ValueError(f"config.optimizer.base_learning_rate={config.optimizer.base_learning_rate}"
                     f" x config.batch_size={config.batch_size} / "
                     f"config.optimizer.base_batch_size={config.optimizer.base_batch_size} "
                     f"gives a peak learning rate of {peak:g}, not finite in float32")
  devices = jax.device_count()
  for key in ("batch_size", "eval_batch_size"):
    value = config[key]
    if value is not None and value % devices:
      raise ValueError(f"config.{key}={value} must be a multiple of the device count "
                       f"{devices}")
  group = config.bn_group_size
  if group and devices % group:
    raise ValueError(f"config.bn_group_size={group} must divide the device count {devices}")


def _number(value: Any) -> bool:
  return isinstance(value, (int, float)) and not isinstance(value, bool)


def _finite32(value: float) -> bool:
  """Not NaN or ±inf, and no overflow to inf in float32 (an int of any size compares)."""
  return abs(value) <= _FLOAT32_MAX and math.isfinite(value)


def check_model(model_config: ml_collections.ConfigDict) -> None:
  """The family knows the variant, the size is sane, and the input is not below the stride."""
  family = registry.family_of(model_config)
  if model_config.variant not in registry.variant_names(family.name):
    raise ValueError(f"config.model.variant={model_config.variant!r} must be one of "
                     f"{', '.join(registry.variant_names(family.name))} (the sizes of "
                     f"config.model.family={family.name!r})")
  if model_config.variant == registry.PHI and model_config.phi is None:
    raise ValueError('config.model.phi must be set when config.model.variant == "phi"')
  try:
    size = registry.scaling_of(model_config)
  except ValueError as e:
    if model_config.variant != registry.PHI:
      raise
    # The φ formula's own words name its arguments, not the keys that set them.
    raise ValueError("config.model.phi={}, config.model.alpha={}, config.model.beta={}, "
                     "config.model.gamma={}, config.model.resolution_multiple={}: {}".format(
                         model_config.phi, model_config.alpha, model_config.beta,
                         model_config.gamma, model_config.resolution_multiple, e)) from None
  network = registry.network_of(model_config)
  for key, value in (("resolution", size.resolution), ("eval_resolution", size.eval_size)):
    if value < network.total_stride:
      raise ValueError(f"config.model.{key} {value} is smaller than the network's total "
                       f"stride {network.total_stride}")


def validate(config: ml_collections.ConfigDict) -> None:
  check_keys(config)
  check_values(config)
