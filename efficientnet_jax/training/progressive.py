"""Progressive learning (EfficientNetV2, Tan & Le 2021, Sec. 4): training in stages of
growing image size and regularisation strength.

`config.progressive.num_stages = N` (0: off) splits training into N stages. Stage i
(0-based) ends at step int((i + 1) / N · T) of T steps, so a stage is a function of the
step alone and a resumed run re-enters the stage it left. Each scheduled value runs from
its `config.progressive.start_*` value to the value the rest of the config gives (the
training resolution, config.input.randaug_magnitude, mixup_alpha, cutmix_alpha,
config.model.dropout_rate, drop_path_rate), by one of two interpolations:

- "released": google/automl's efficientnetv2/main.py. The image size of stage i is
  int(start + (end − start) · (i + 1) / N), so the first stage already trains above the
  start size (V2-S, 128 → 300: 171, 214, 257, 300); RandAugment magnitude, Mixup and
  CutMix alpha are np.linspace(start, end, N)[i] (V2-S: 5, 6.67, 8.33, 10). Dropout is
  not scheduled there, so the start_dropout_rate / start_drop_path_rate of the released
  recipes are None (the model's rate throughout).
- "paper": the paper's Algorithm 1: every value, the image size included, is
  start + (end − start) · i / (N − 1), from the start values in stage 0 to the end values
  in the last; Table 6 also schedules dropout (V2-S 0.1 → 0.3).

Image sizes are rounded down to a multiple of config.progressive.image_size_multiple,
except the last stage's, which is the training resolution itself.
"""

from __future__ import annotations

import dataclasses
from typing import Optional

import ml_collections
import numpy as np

from efficientnet_jax.models import registry

INTERPOLATIONS = ("released", "paper")
_SCHEDULED = ("randaug_magnitude", "mixup_alpha", "cutmix_alpha", "dropout_rate",
              "drop_path_rate")


@dataclasses.dataclass(frozen=True)
class Stage:
  """One stage: steps first_step … last_step (1-based, inclusive) and what they use.

  randaug_magnitude is None unless config.input.augment is "randaugment"."""
  index: int
  first_step: int
  last_step: int
  image_size: int
  randaug_magnitude: Optional[float]
  mixup_alpha: float
  cutmix_alpha: float
  dropout_rate: float
  drop_path_rate: float

  def values(self) -> dict[str, float]:
    """The stage's settings as logged (metrics.jsonl, TensorBoard)."""
    values = {"stage": float(self.index), "image_size": float(self.image_size),
              "mixup_alpha": self.mixup_alpha, "cutmix_alpha": self.cutmix_alpha,
              "dropout_rate": self.dropout_rate, "drop_path_rate": self.drop_path_rate}
    if self.randaug_magnitude is not None:
      values["randaug_magnitude"] = self.randaug_magnitude
    return values


def _end_values(config: ml_collections.ConfigDict) -> dict[str, Optional[float]]:
  """What the rest of the config trains with: the last stage's values."""
  randaugment = config.input.augment == "randaugment"
  return {
      "image_size": registry.scaling_of(config.model).resolution,
      "randaug_magnitude": float(config.input.randaug_magnitude) if randaugment else None,
      "mixup_alpha": float(config.input.mixup_alpha or 0.0),
      "cutmix_alpha": float(config.input.cutmix_alpha or 0.0),
      "dropout_rate": float(registry.scaling_of(config.model).dropout_rate),
      "drop_path_rate": float(registry.drop_path_rate_of(config.model)),
  }


def _start_values(config: ml_collections.ConfigDict,
                  end: dict[str, Optional[float]]) -> dict[str, Optional[float]]:
  """The first stage's values; an unset start (None) leaves that value unscheduled."""
  p = config.progressive
  start = {"image_size": p.start_image_size}
  for key in _SCHEDULED:
    value = p.get(f"start_{key}")
    start[key] = end[key] if value is None or end[key] is None else float(value)
  return start


def stages(config: ml_collections.ConfigDict, num_steps: int) -> list[Stage]:
  """The stages of a run of `num_steps` steps; one stage (the config as it is) when
  config.progressive.num_stages is 0."""
  end = _end_values(config)
  count = int(config.progressive.num_stages)
  if count == 0:
    return [Stage(0, 1, num_steps, **end)]
  start = _start_values(config, end)
  paper = config.progressive.interpolation == "paper"
  multiple = int(config.progressive.image_size_multiple)
  result, first_step = [], 1
  for i in range(count):
    last_step = int((i + 1) / count * num_steps)
    ratio = i / (count - 1) if paper else (i + 1) / count
    size = start["image_size"] + (end["image_size"] - start["image_size"]) * ratio
    size = end["image_size"] if i == count - 1 else int(size) // multiple * multiple
    values = {}
    for key in _SCHEDULED:
      if end[key] is None:
        values[key] = None
      elif paper:
        values[key] = start[key] + (end[key] - start[key]) * i / (count - 1)
      else:  # np.linspace, as automl computes it (its rounding included)
        values[key] = float(np.linspace(start[key], end[key], count)[i])
    result.append(Stage(i, first_step, last_step, size, **values))
    first_step = last_step + 1
  return result


def stage_of(all_stages: list[Stage], step: int) -> Stage:
  """The stage that trains step `step` (1-based)."""
  for stage in all_stages:
    if stage.first_step <= step <= stage.last_step:
      return stage
  raise ValueError(f"step {step} is past the last stage (step {all_stages[-1].last_step})")


def stage_config(config: ml_collections.ConfigDict, stage: Stage) -> ml_collections.ConfigDict:
  """`config` with the stage's augmentation strength and dropout: what the input pipeline
  and the model of that stage are built from. Unchanged when progressive learning is off."""
  if not config.progressive.num_stages:
    return config
  # Not type-safe: a stage's RandAugment magnitude (6.67) replaces an int (10).
  result = ml_collections.ConfigDict(config.to_dict(), type_safe=False)
  if stage.randaug_magnitude is not None:
    result.input.randaug_magnitude = stage.randaug_magnitude
  result.input.mixup_alpha, result.input.cutmix_alpha = stage.mixup_alpha, stage.cutmix_alpha
  result.model.dropout_rate, result.model.drop_path_rate = (stage.dropout_rate,
                                                            stage.drop_path_rate)
  return result


def check(config: ml_collections.ConfigDict, num_steps: Optional[int] = None) -> None:
  """Refuses a schedule that cannot run, naming the key: a stage size below the network's
  total stride, a start above its end (stages must grow), too many stages for the steps.

  The step count is known only with the dataset's size; without it that check waits."""
  p = config.progressive
  count = p.num_stages
  if not count:
    return
  if count == 1:
    raise ValueError("config.progressive.num_stages=1 is fixed-size training: use 0 (off) "
                     "or at least 2 stages")
  if num_steps is not None and count > num_steps:  # before the stages are made: cheap
    raise ValueError(f"config.progressive.num_stages={count} does not fit the run's "
                     f"{num_steps} train steps (config.num_train_steps="
                     f"{config.num_train_steps}, or config.num_epochs={config.num_epochs} of "
                     f"config.train_split={config.train_split!r} at config.batch_size="
                     f"{config.batch_size}): every stage needs at least one step")
  end = _end_values(config)
  start = _start_values(config, end)
  for key in ("image_size",) + _SCHEDULED:
    if end[key] is not None and start[key] > end[key]:
      end_key = {"image_size": "model.resolution", "randaug_magnitude":
                 "input.randaug_magnitude", "mixup_alpha": "input.mixup_alpha",
                 "cutmix_alpha": "input.cutmix_alpha"}.get(key, f"model.{key}")
      raise ValueError(f"config.progressive.start_{key}={start[key]} exceeds its final value "
                       f"{end[key]} (config.{end_key}): progressive stages must grow")
  stride = registry.network_of(config.model).total_stride
  sizes = [stage.image_size for stage in stages(config, max(count, num_steps or count))]
  if min(sizes) < stride:
    key = ("start_image_size" if p.start_image_size < stride else "image_size_multiple")
    raise ValueError(f"config.progressive.{key}: the stage image sizes {sizes} go below the "
                     f"network's total stride {stride}")


def describe(all_stages: list[Stage]) -> str:
  """One line per stage, for the log."""
  lines = []
  for s in all_stages:
    magnitude = "" if s.randaug_magnitude is None else f", RandAugment {s.randaug_magnitude:.4g}"
    lines.append(f"stage {s.index}: steps {s.first_step}-{s.last_step}, {s.image_size} px"
                 f"{magnitude}, mixup {s.mixup_alpha:.4g}, cutmix {s.cutmix_alpha:.4g}, "
                 f"dropout {s.dropout_rate:.4g}, drop path {s.drop_path_rate:.4g}")
  return "\n".join(lines)

