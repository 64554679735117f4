"""The network as data: B0's stages (paper Table 1) and the block list a scaling gives.

Nothing here imports Flax, so tables, FLOP counts and converters can use it freely.
"""

from __future__ import annotations

import dataclasses
import math

from efficientnet_jax.models import scaling


@dataclasses.dataclass(frozen=True)
class Stage:
  """One row of Table 1: `repeats` MBConv blocks; only the first strides and changes width."""

  kernel: int
  stride: int
  expand_ratio: int
  out_channels: int
  repeats: int
  se_ratio: float = 0.25


B0_STEM_CHANNELS = 32
B0_HEAD_CHANNELS = 1280
B0_STAGES: tuple[Stage, ...] = (
    Stage(kernel=3, stride=1, expand_ratio=1, out_channels=16, repeats=1),
    Stage(kernel=3, stride=2, expand_ratio=6, out_channels=24, repeats=2),
    Stage(kernel=5, stride=2, expand_ratio=6, out_channels=40, repeats=2),
    Stage(kernel=3, stride=2, expand_ratio=6, out_channels=80, repeats=3),
    Stage(kernel=5, stride=1, expand_ratio=6, out_channels=112, repeats=3),
    Stage(kernel=5, stride=2, expand_ratio=6, out_channels=192, repeats=4),
    Stage(kernel=3, stride=1, expand_ratio=6, out_channels=320, repeats=1),
)
STEM_STRIDE = 2
DEFAULT_DROP_PATH_RATE = 0.2


@dataclasses.dataclass(frozen=True)
class Block:
  """One MBConv block of a scaled network, with everything needed to build or count it."""

  stage: int           # 0-based stage index
  index: int           # 0-based global block index
  kernel: int
  stride: int
  expand_ratio: int
  in_channels: int
  out_channels: int
  se_channels: int     # 0: no squeeze-excite
  drop_path_rate: float

  @property
  def expanded_channels(self) -> int:
    return self.in_channels * self.expand_ratio

  @property
  def has_residual(self) -> bool:
    return self.stride == 1 and self.in_channels == self.out_channels


@dataclasses.dataclass(frozen=True)
class Network:
  """A whole scaled EfficientNet body: stem → blocks → head conv."""

  stem_channels: int
  blocks: tuple[Block, ...]
  head_channels: int

  @property
  def total_stride(self) -> int:
    return STEM_STRIDE * math.prod(b.stride for b in self.blocks)

  def stage_repeats(self) -> list[int]:
    return [sum(1 for b in self.blocks if b.stage == s) for s in range(self.num_stages)]

  def stage_channels(self) -> list[int]:
    return [next(b.out_channels for b in self.blocks if b.stage == s)
            for s in range(self.num_stages)]

  @property
  def num_stages(self) -> int:
    return max(b.stage for b in self.blocks) + 1


def build(width: float,
          depth: float,
          stages: tuple[Stage, ...] = B0_STAGES,
          stem_channels: int = B0_STEM_CHANNELS,
          head_channels: int = B0_HEAD_CHANNELS,
          drop_path_rate: float = DEFAULT_DROP_PATH_RATE) -> Network:
  """Scale the baseline stages by width and depth multipliers.

  Block i of N drops its residual branch with rate drop_path_rate·i/N (i from 0), as in
  the reference; N counts blocks after depth scaling.
  """
  if not 0 <= drop_path_rate < 1:
    raise ValueError(f"drop_path_rate must be in [0, 1), got {drop_path_rate!r}")
  # Validates width/depth ranges with the same messages as named variants.
  scaling.Scaling(width=width, depth=depth, resolution=scaling.BASE_RESOLUTION,
                  dropout_rate=0.0)
  repeats = [scaling.round_repeats(s.repeats, depth) for s in stages]
  total = sum(repeats)
  blocks = []
  in_channels = scaling.round_filters(stem_channels, width)
  for stage_index, (stage, n) in enumerate(zip(stages, repeats)):
    out_channels = scaling.round_filters(stage.out_channels, width)
    for j in range(n):
      index = len(blocks)
      blocks.append(Block(
          stage=stage_index,
          index=index,
          kernel=stage.kernel,
          stride=stage.stride if j == 0 else 1,
          expand_ratio=stage.expand_ratio,
          in_channels=in_channels,
          out_channels=out_channels,
          # Sized from the block's input width, not the expanded one (reference behaviour).
          se_channels=max(1, int(in_channels * stage.se_ratio)) if stage.se_ratio > 0 else 0,
          drop_path_rate=drop_path_rate * index / total,
      ))
      in_channels = out_channels
  return Network(stem_channels=scaling.round_filters(stem_channels, width),
                 blocks=tuple(blocks),
                 head_channels=scaling.round_filters(head_channels, width))
