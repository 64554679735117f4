"""Checks of a whole training config, run before any data is read or anything compiles.

Every key is checked against the schema of `default_config` (unknown keys are refused with
the closest valid name), for its type, and for its range. Each error names the key.
"""

from __future__ import annotations

import difflib
import math
from typing import Any, Callable

import jax
import ml_collections

from efficientnet_jax.config import defaults
from efficientnet_jax.data import augment
from efficientnet_jax.models import convnet, layers, registry, scaling
from efficientnet_jax.training import metrics_log, optimizers, progressive

_Check = Callable[[Any], bool]

_positive = lambda v: v > 0
_non_negative = lambda v: v >= 0
_fraction = lambda v: 0 <= v < 1
_optional_positive = lambda v: v is None or v > 0

# key: (allowed types, check, what the check means). Keys absent here are free-form.
RULES: dict[str, tuple[tuple[type, ...], _Check, str]] = {
    "seed": ((int,), _non_negative, ">= 0"),
    "model.family": ((str,), lambda v: v in registry.FAMILIES,
                     f"one of {', '.join(registry.FAMILIES)}"),
    "model.phi": ((int, float, type(None)), lambda v: v is None or math.isfinite(v), "finite"),
    "model.alpha": ((int, float), lambda v: v >= 1, ">= 1"),
    "model.beta": ((int, float), lambda v: v >= 1, ">= 1"),
    "model.gamma": ((int, float), lambda v: v >= 1, ">= 1"),
    "model.resolution_multiple": ((int,), _positive, "> 0"),
    "model.width": ((int, float, type(None)), _optional_positive, "> 0"),
    "model.depth": ((int, float, type(None)), _optional_positive, "> 0"),
    "model.resolution": ((int, type(None)),
                         lambda v: v is None or v >= scaling.MIN_RESOLUTION,
                         f">= the total stride {scaling.MIN_RESOLUTION}"),
    "model.eval_resolution": ((int, type(None)),
                              lambda v: v is None or v >= scaling.MIN_RESOLUTION,
                              f">= the total stride {scaling.MIN_RESOLUTION}"),
    "model.dropout_rate": ((int, float, type(None)), lambda v: v is None or 0 <= v < 1,
                           "in [0, 1)"),
    "model.drop_path_rate": ((int, float, type(None)), lambda v: v is None or 0 <= v < 1,
                             "in [0, 1) (None: the family's)"),
    "model.num_classes": ((int, type(None)), lambda v: v is None or v >= 0, ">= 0"),
    "model.padding": ((str,), lambda v: v in layers.PADDINGS, f"one of {layers.PADDINGS}"),
    "model.depthwise_impl": ((str,), lambda v: v in layers.DEPTHWISE_IMPLS,
                             f"one of {layers.DEPTHWISE_IMPLS}"),
    "model.dtype": ((str,), lambda v: v in convnet.DTYPES, f"one of {convnet.DTYPES}"),
    "model.remat": ((bool,), lambda v: True, "a bool"),
    "finetune.freeze_backbone_epochs": ((int, float), _non_negative, ">= 0"),
    "finetune.freeze_bn": ((bool,), lambda v: True, "a bool"),
    "model.remat_policy": ((str,), lambda v: v in convnet.REMAT_POLICIES,
                           f"one of {convnet.REMAT_POLICIES}"),
    "model.bn_momentum": ((int, float, type(None)), lambda v: v is None or 0 <= v < 1,
                          "in [0, 1) (None: the family's)"),
    "model.bn_epsilon": ((int, float), _positive, "> 0"),
    "dataset": ((str,), lambda v: bool(v), "a tfds dataset name"),
    "input.crop_padding": ((int,), _non_negative, ">= 0"),
    "input.crop_fraction": ((int, float, type(None)), lambda v: v is None or 0 < v <= 1,
                            "in (0, 1]"),
    "input.shuffle_buffer": ((int,), _positive, "> 0"),
    "input.mixup_alpha": ((int, float), _non_negative, ">= 0"),
    "input.cutmix_alpha": ((int, float), _non_negative, ">= 0"),
    "input.skip_bad_images": ((bool,), lambda v: True, "a bool"),
    "input.skip_bad_records": ((bool,), lambda v: True, "a bool"),
    "input.randaug_layers": ((int,), _non_negative, ">= 0"),
    "input.augment": ((str, type(None)), lambda v: v in augment.AUGMENTATIONS,
                      f"one of {augment.AUGMENTATIONS}"),
    "input.randaug_magnitude": ((int, float),
                                lambda v: 0 <= v <= augment.MAX_RANDAUG_MAGNITUDE,
                                f"in [0, {augment.MAX_RANDAUG_MAGNITUDE}]"),
    "progressive.num_stages": ((int,), _non_negative, ">= 0 (0: off)"),
    "progressive.interpolation": ((str,), lambda v: v in progressive.INTERPOLATIONS,
                                  f"one of {', '.join(progressive.INTERPOLATIONS)}"),
    "progressive.start_image_size": ((int,), _positive, "> 0"),
    "progressive.image_size_multiple": ((int,), _positive, "> 0"),
    "progressive.start_randaug_magnitude": ((int, float),
                                            lambda v: 0 <= v <= augment.MAX_RANDAUG_MAGNITUDE,
                                            f"in [0, {augment.MAX_RANDAUG_MAGNITUDE}]"),
    "progressive.start_mixup_alpha": ((int, float), _non_negative, ">= 0"),
    "progressive.start_cutmix_alpha": ((int, float), _non_negative, ">= 0"),
    "progressive.start_dropout_rate": ((int, float, type(None)),
                                       lambda v: v is None or 0 <= v < 1, "in [0, 1)"),
    "progressive.start_drop_path_rate": ((int, float, type(None)),
                                         lambda v: v is None or 0 <= v < 1, "in [0, 1)"),
    "batch_size": ((int,), _positive, "> 0"),
    "eval_batch_size": ((int, type(None)), _optional_positive, "> 0"),
    "num_epochs": ((int, float), _positive, "> 0"),
    "num_train_steps": ((int, type(None)), _optional_positive, "> 0"),
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
    "schedule.warmup_epochs": ((int, float), _non_negative, ">= 0"),
    "schedule.decay_epochs": ((int, float), _positive, "> 0"),
    "schedule.decay_rate": ((int, float), lambda v: 0 < v <= 1, "in (0, 1]"),
    "schedule.end_learning_rate_factor": ((int, float), lambda v: 0 <= v <= 1, "in [0, 1]"),
    "schedule.power": ((int, float), _positive, "> 0"),
    "label_smoothing": ((int, float), _fraction, "in [0, 1)"),
    "ema_decay": ((int, float), _fraction, "in [0, 1) (0 disables EMA)"),
    "bn_group_size": ((int,), _non_negative, ">= 0 (0: global batch statistics)"),
    "eval_every_epochs": ((int, float), _positive, "> 0"),
    "eval_raw_weights": ((bool,), lambda v: True, "a bool"),
    "log_every_steps": ((int,), _positive, "> 0"),
    "checkpoint_every_steps": ((int,), _positive, "> 0"),
    "keep_checkpoints": ((int,), _positive, "> 0"),
    "allow_config_change": ((bool,), lambda v: True, "a bool"),
    "on_nonfinite": ((str,), lambda v: v in ("stop", "skip"), "stop or skip"),
    "init_from": ((str, type(None)), lambda v: True, "a path"),
    "data_dir": ((str, type(None)), lambda v: True, "a path"),
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
  devices = jax.device_count()
  for key in ("batch_size", "eval_batch_size"):
    value = config[key]
    if value is not None and value % devices:
      raise ValueError(f"config.{key}={value} must be a multiple of the device count "
                       f"{devices}")
  group = config.bn_group_size
  if group and devices % group:
    raise ValueError(f"config.bn_group_size={group} must divide the device count {devices}")


def check_model(model_config: ml_collections.ConfigDict) -> None:
  """The family knows the variant, the size is sane, and the input is not below the stride."""
  family = registry.family_of(model_config)
  if model_config.variant not in registry.variant_names(family.name):
    raise ValueError(f"config.model.variant={model_config.variant!r} must be one of "
                     f"{', '.join(registry.variant_names(family.name))}")
  if model_config.variant == registry.PHI and model_config.phi is None:
    raise ValueError('config.model.phi must be set when config.model.variant == "phi"')
  size = registry.scaling_of(model_config)
  network = registry.network_of(model_config)
  for key, value in (("resolution", size.resolution), ("eval_resolution", size.eval_size)):
    if value < network.total_stride:
      raise ValueError(f"config.model.{key} {value} is smaller than the network's total "
                       f"stride {network.total_stride}")


def validate(config: ml_collections.ConfigDict) -> None:
  check_keys(config)
  check_values(config)
