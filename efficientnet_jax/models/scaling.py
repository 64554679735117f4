"""Compound scaling: the published variant table, the rounding rules and the φ formula.

Two ways to name a network size, kept side by side because they disagree:

* the *published* rows b0…b8, l2 (what the released weights use), and
* the paper's formula depth = α^φ, width = β^φ, resolution = γ^φ·224 for any real φ
  (φ=7 gives depth 3.58, width 1.95, resolution 596, not b7's 3.1 / 2.0 / 600).
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from typing import Iterator

# The baseline resolution of B0; the formula scales it by γ^φ.
BASE_RESOLUTION = 224

# The paper's step-1 search result (Section 4.2).
DEFAULT_ALPHA = 1.2
DEFAULT_BETA = 1.1
DEFAULT_GAMMA = 1.15

# Anything outside these bounds is a typo or a runaway φ, not an experiment.
MAX_COEFFICIENT = 64.0
MAX_RESOLUTION = 8192
MIN_RESOLUTION = 32  # B0's total stride: below it the last stages see no pixels


@dataclasses.dataclass(frozen=True)
class Scaling:
  """One network size: width and depth multipliers, input resolution, head dropout.

  `resolution` is the training size; `eval_resolution` the evaluation size where a family
  evaluates larger than it trains (EfficientNetV2-S: 300 / 384), None where both are one.
  """

  width: float
  depth: float
  resolution: int
  dropout_rate: float
  eval_resolution: int | None = None

  def __post_init__(self):
    _check_scaling(self)

  @property
  def eval_size(self) -> int:
    """The resolution to evaluate (and serve) at."""
    return self.eval_resolution or self.resolution


def _check_scaling(s: Scaling) -> None:
  for name, value in (("width", s.width), ("depth", s.depth)):
    if not (math.isfinite(value) and 0 < value <= MAX_COEFFICIENT):
      raise ValueError(
          f"{name} multiplier must be in (0, {MAX_COEFFICIENT}], got {value!r}")
  for name, value in (("resolution", s.resolution), ("eval_resolution", s.eval_size)):
    if not (isinstance(value, int) and 0 < value <= MAX_RESOLUTION):
      raise ValueError(f"{name} must be an integer in (0, {MAX_RESOLUTION}], got {value!r}")
  if not 0 <= s.dropout_rate < 1:
    raise ValueError(f"dropout_rate must be in [0, 1), got {s.dropout_rate!r}")


# name: (width, depth, resolution, dropout). Published by the tensorflow/tpu reference.
VARIANTS: dict[str, Scaling] = {
    "b0": Scaling(1.0, 1.0, 224, 0.2),
    "b1": Scaling(1.0, 1.1, 240, 0.2),
    "b2": Scaling(1.1, 1.2, 260, 0.3),
    "b3": Scaling(1.2, 1.4, 300, 0.3),
    "b4": Scaling(1.4, 1.8, 380, 0.4),
    "b5": Scaling(1.6, 2.2, 456, 0.4),
    "b6": Scaling(1.8, 2.6, 528, 0.5),
    "b7": Scaling(2.0, 3.1, 600, 0.5),
    "b8": Scaling(2.2, 3.6, 672, 0.5),
    "l2": Scaling(4.3, 5.3, 800, 0.5),
}


def variant(name: str) -> Scaling:
  """The published row for `name` ('b0' … 'b8', 'l2')."""
  try:
    return VARIANTS[name.lower()]
  except KeyError:
    raise ValueError(
        f"unknown EfficientNet variant {name!r}; known: {', '.join(VARIANTS)}") from None


def compound(phi: float,
             alpha: float = DEFAULT_ALPHA,
             beta: float = DEFAULT_BETA,
             gamma: float = DEFAULT_GAMMA,
             resolution_multiple: int = 8,
             dropout_rate: float = 0.2) -> Scaling:
  """The paper's formula (Eq. 3): depth α^φ, width β^φ, resolution γ^φ·224.

  The resolution is rounded to the nearest multiple of `resolution_multiple`.
  """
  for name, value in (("alpha", alpha), ("beta", beta), ("gamma", gamma)):
    if not (math.isfinite(value) and value > 0):
      raise ValueError(f"{name} must be a positive finite number, got {value!r}")
  if not math.isfinite(phi):
    raise ValueError(f"phi must be finite, got {phi!r}")
  if resolution_multiple < 1:
    raise ValueError(f"resolution_multiple must be >= 1, got {resolution_multiple!r}")
  try:
    depth, width = alpha**phi, beta**phi
    raw_resolution = gamma**phi * BASE_RESOLUTION
  except OverflowError:
    raise ValueError(f"phi={phi} with alpha={alpha}, beta={beta}, gamma={gamma} "
                     "overflows: the network size is absurd") from None
  if raw_resolution > MAX_RESOLUTION:
    raise ValueError(f"phi={phi}, gamma={gamma} gives resolution {raw_resolution:.0f} > "
                     f"{MAX_RESOLUTION}: the network size is absurd")
  if raw_resolution < MIN_RESOLUTION:
    raise ValueError(f"phi={phi}, gamma={gamma} gives resolution {raw_resolution:.1f}, smaller "
                     f"than the network's total stride {MIN_RESOLUTION}")
  resolution = round_resolution(raw_resolution, resolution_multiple)
  try:
    return Scaling(width=width, depth=depth, resolution=resolution, dropout_rate=dropout_rate)
  except ValueError as e:
    raise ValueError(f"phi={phi}, alpha={alpha}, beta={beta}, gamma={gamma}: {e}") from None


def round_resolution(resolution: float, multiple: int) -> int:
  """The nearest multiple of `multiple` (at least `multiple` itself)."""
  return max(multiple, int(round(resolution / multiple)) * multiple)


def round_filters(channels: int, width: float, divisor: int = 8,
                  round_limit: float = 0.9) -> int:
  """Scale a channel count by `width` and round to a multiple of `divisor` (reference rule).

  A result below `round_limit` × the scaled count is raised by one `divisor`: V1 never rounds
  down by more than 10% (0.9); EfficientNetV2's B0–B3 have no such rule (0).
  """
  scaled = channels * width
  rounded = max(divisor, int(scaled + divisor / 2) // divisor * divisor)
  if rounded < round_limit * scaled:
    rounded += divisor
  return int(rounded)


def round_repeats(repeats: int, depth: float) -> int:
  """Scale a stage's block count by `depth`, rounding up."""
  return int(math.ceil(depth * repeats))


@dataclasses.dataclass(frozen=True)
class GridCandidate:
  alpha: float
  beta: float
  gamma: float

  @property
  def flops_ratio(self) -> float:
    """Predicted FLOPs growth for φ=1: FLOPs scale with d·w²·r²."""
    return self.alpha * self.beta**2 * self.gamma**2


def grid_candidates(step: float = 0.05,
                    maximum: float = 2.0,
                    target: float = 2.0,
                    tolerance: float = 0.1) -> Iterator[GridCandidate]:
  """Step 1 of the paper: all α, β, γ ≥ 1 on a grid with |α·β²·γ² − target| ≤ tolerance."""
  if step <= 0 or maximum < 1 or tolerance < 0:
    raise ValueError(f"bad grid: step={step}, maximum={maximum}, tolerance={tolerance}")
  count = int(round((maximum - 1.0) / step)) + 1
  values = [round(1.0 + i * step, 10) for i in range(count)]
  for alpha, beta, gamma in itertools.product(values, repeat=3):
    candidate = GridCandidate(alpha, beta, gamma)
    if abs(candidate.flops_ratio - target) <= tolerance + 1e-12:
      yield candidate
