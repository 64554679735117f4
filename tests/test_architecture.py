"""The architecture vocabulary and its builder against the reference architectures."""

import pytest

from efficientnet_jax.models import registry, scaling
from efficientnet_jax.models.families import efficientnet

# Per-stage repeats and output channels, stem and head of the released models.
REFERENCE = {
    "b0": ([1, 2, 2, 3, 3, 4, 1], [16, 24, 40, 80, 112, 192, 320], 32, 1280),
    "b1": ([2, 3, 3, 4, 4, 5, 2], [16, 24, 40, 80, 112, 192, 320], 32, 1280),
    "b2": ([2, 3, 3, 4, 4, 5, 2], [16, 24, 48, 88, 120, 208, 352], 32, 1408),
    "b3": ([2, 3, 3, 5, 5, 6, 2], [24, 32, 48, 96, 136, 232, 384], 40, 1536),
    "b4": ([2, 4, 4, 6, 6, 8, 2], [24, 32, 56, 112, 160, 272, 448], 48, 1792),
    "b5": ([3, 5, 5, 7, 7, 9, 3], [24, 40, 64, 128, 176, 304, 512], 48, 2048),
    "b6": ([3, 6, 6, 8, 8, 11, 3], [32, 40, 72, 144, 200, 344, 576], 56, 2304),
    "b7": ([4, 7, 7, 10, 10, 13, 4], [32, 48, 80, 160, 224, 384, 640], 64, 2560),
    "b8": ([4, 8, 8, 11, 11, 15, 4], [32, 56, 88, 176, 248, 424, 704], 72, 2816),
    "l2": ([6, 11, 11, 16, 16, 22, 6], [72, 104, 176, 344, 480, 824, 1376], 136, 5504),
}


@pytest.mark.parametrize("name", list(REFERENCE))
def test_stage_repeats_and_channels(name):
  s = scaling.variant(name)
  network = registry.build("efficientnet", s.width, s.depth)
  repeats, channels, stem, head = REFERENCE[name]
  assert network.stage_repeats() == repeats
  assert network.stage_channels() == channels
  assert (network.stem_channels, network.head_channels) == (stem, head)
  assert network.total_stride == 32


def test_drop_path_rates_are_linear_in_block_index():
  s = scaling.variant("b3")
  network = registry.build("efficientnet", s.width, s.depth)
  n = len(network.blocks)
  assert n == 26
  assert [b.drop_path_rate for b in network.blocks] == pytest.approx(
      [0.2 * i / n for i in range(n)])
  assert network.blocks[-1].drop_path_rate == pytest.approx(0.2 * 25 / 26)


def test_se_width_comes_from_block_input_channels():
  network = registry.build("efficientnet")
  for b in network.blocks:
    assert b.se_channels == max(1, int(b.in_channels * 0.25))
  # First block of stage 2: input 16, expanded 96 → SE reduces to 4, not 24.
  assert (network.blocks[1].in_channels, network.blocks[1].mid_channels,
          network.blocks[1].se_channels) == (16, 96, 4)


def test_only_first_block_of_a_stage_strides_and_changes_width():
  network = registry.build("efficientnet", 1.0, 2.0)
  for stage in range(network.num_stages):
    blocks = [b for b in network.blocks if b.stage == stage]
    assert all(b.stride == 1 and b.has_residual for b in blocks[1:])
    assert blocks[0].stride == efficientnet.STAGES[stage].stride


def test_bad_multipliers_raise():
  with pytest.raises(ValueError, match="width multiplier"):
    registry.build("efficientnet", 0.0, 1.0)
  with pytest.raises(ValueError, match="depth multiplier"):
    registry.build("efficientnet", 1.0, -2.0)
  with pytest.raises(ValueError, match="drop_path_rate"):
    registry.build("efficientnet", drop_path_rate=1.0)


def test_table1_of_b0_is_the_papers():
  from efficientnet_jax.research import paper_tables
  rows = paper_tables.architecture_table(registry.variant_network("b0"), 224)
  assert rows == [
      (1, "Conv3x3", "224x224", 32, 1), (2, "MBConv1, k3x3", "112x112", 16, 1),
      (3, "MBConv6, k3x3", "112x112", 24, 2), (4, "MBConv6, k5x5", "56x56", 40, 2),
      (5, "MBConv6, k3x3", "28x28", 80, 3), (6, "MBConv6, k5x5", "14x14", 112, 3),
      (7, "MBConv6, k5x5", "14x14", 192, 4), (8, "MBConv6, k3x3", "7x7", 320, 1),
      (9, "Conv1x1 & Pooling & FC", "7x7", 1280, 1)]
  # V2-S: the paper's Table 4 (stride-2 stages at 3, 4, 5, 7).
  v2_s = paper_tables.architecture_table(registry.variant_network("v2_s", "efficientnetv2"),
                                         384)
  assert [r[1] for r in v2_s[1:4]] == ["Fused-MBConv1, k3x3", "Fused-MBConv4, k3x3",
                                       "Fused-MBConv4, k3x3"]
  assert [(r[3], r[4]) for r in v2_s[1:-1]] == [(24, 2), (48, 4), (64, 4), (128, 6),
                                                (160, 9), (256, 15)]
