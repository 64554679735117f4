"""Compound scaling: variant table, rounding rules, φ formula, step-1 grid."""

import math

import pytest

from efficientnet_jax.models import registry, scaling
from efficientnet_jax.configs import efficientnet as efficientnet_config


def test_round_filters_reference_values():
  # Stem and head of b0…b7, l2 as in the released models.
  assert [scaling.round_filters(32, w) for w in (1.0, 1.1, 1.2, 1.4, 1.6, 1.8, 2.0, 4.3)] == [
      32, 32, 40, 48, 48, 56, 64, 136]
  assert [scaling.round_filters(1280, w) for w in (1.0, 1.1, 1.2, 1.4, 2.0)] == [
      1280, 1408, 1536, 1792, 2560]
  # The +8 branch: rounding down would lose more than 10%.
  assert scaling.round_filters(12, 1.0) == 16
  assert scaling.round_filters(1, 0.5) == 8


def test_round_repeats_ceil():
  assert [scaling.round_repeats(r, 3.1) for r in (1, 2, 2, 3, 3, 4, 1)] == [4, 7, 7, 10, 10, 13, 4]


def test_compound_formula_is_not_the_published_table():
  s = scaling.compound(7)
  assert s.depth == pytest.approx(1.2**7)
  assert s.width == pytest.approx(1.1**7)
  assert (round(s.depth, 2), round(s.width, 2)) == (3.58, 1.95)
  assert s.resolution == 592  # 596.6 rounded to a multiple of 8
  assert scaling.compound(7, resolution_multiple=4).resolution == 596
  assert scaling.compound(0).resolution == 224
  assert scaling.variant("b7").resolution == 600


@pytest.mark.parametrize("kwargs, message", [
    (dict(phi=200), "absurd"),
    (dict(phi=1, alpha=0), "alpha"),
    (dict(phi=1, beta=-1.1), "beta"),
    (dict(phi=1, gamma=float("nan")), "gamma"),
    (dict(phi=float("inf")), "phi"),
    (dict(phi=-60), "total stride"),
])
def test_compound_rejects_bad_sizes(kwargs, message):
  with pytest.raises(ValueError, match=message):
    scaling.compound(**kwargs)


def test_unknown_variant():
  with pytest.raises(ValueError, match="unknown EfficientNet variant 'b9'"):
    scaling.variant("b9")


def test_grid_candidates_satisfy_constraint():
  candidates = list(scaling.grid_candidates(step=0.05, tolerance=0.1))
  assert candidates
  for c in candidates:
    assert min(c.alpha, c.beta, c.gamma) >= 1.0
    assert abs(c.alpha * c.beta**2 * c.gamma**2 - 2.0) <= 0.1 + 1e-9
  assert any(math.isclose(c.alpha, 1.2) and math.isclose(c.beta, 1.1)
             and math.isclose(c.gamma, 1.15) for c in candidates)
  assert scaling.GridCandidate(1.2, 1.1, 1.15).flops_ratio == pytest.approx(1.92, abs=0.01)


def test_config_argument_parsing():
  assert registry.scaling_of(efficientnet_config.get_config("b3").model) == scaling.variant("b3")
  phi = registry.scaling_of(efficientnet_config.get_config("phi=2.5,alpha=1.1").model)
  assert phi.depth == pytest.approx(1.1**2.5) and phi.width == pytest.approx(1.1**2.5)
  with pytest.raises(ValueError, match="expected phi="):
    efficientnet_config.get_config("phi=2,delta=3")
  config = efficientnet_config.get_config("b9")
  with pytest.raises(ValueError, match="config.model.variant"):
    registry.scaling_of(config.model)


def test_config_overrides_win_over_the_row():
  config = efficientnet_config.get_config("b2")
  config.model.resolution = 256
  config.model.width = 1.05
  s = registry.scaling_of(config.model)
  assert (s.width, s.depth, s.resolution, s.dropout_rate) == (1.05, 1.2, 256, 0.3)
  config.model.resolution = 0
  with pytest.raises(ValueError, match="config.model: resolution"):
    registry.scaling_of(config.model)
