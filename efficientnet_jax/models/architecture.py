"""The architecture vocabulary every family is written in, and the one builder.

A family is an `Architecture`: a stem, a table of `Stage`s and an optional head conv.
`build` scales it (width multiplies every channel count with `scaling.round_filters`,
depth every stage's repeats with `scaling.round_repeats`) into a `Network`: the list of
`Block`s with their exact channel counts and drop-path rates. Everything that builds,
counts or converts a network reads that list. Nothing here imports Flax, so tables,
sweeps, costs and converters can use it freely; `blocks.py`/`network.py` turn it into
computation and `families/` holds the tables.
"""

from __future__ import annotations

import dataclasses
import math

from efficientnet_jax.models import scaling

# Block kinds (the Flax module of each is in `blocks.py`, its cost in `costs.py`).
MBCONV = "mbconv"                            # [1×1 expand] → depthwise k×k → [SE] → 1×1 project
FUSED_MBCONV = "fused_mbconv"                # k×k expand → [SE] → 1×1 project; e=1: one k×k conv
DEPTHWISE_SEPARABLE = "depthwise_separable"  # depthwise k×k → 1×1, both activated (MobileNetV1)
BOTTLENECK = "bottleneck"                    # 1×1 reduce → k×k → 1×1 expand, + shortcut (ResNet)
BLOCK_KINDS = (MBCONV, FUSED_MBCONV, DEPTHWISE_SEPARABLE, BOTTLENECK)
ACTIVATIONS = ("swish", "relu", "relu6")
STEM_STRIDE = 2


@dataclasses.dataclass(frozen=True)
class Stage:
  """`repeats` blocks of one kind; only the first strides and changes the channel count.

  `expansion`: (Fused-)MBConv, the expanded width is input channels · expansion; bottleneck,
  the inner width is out_channels / expansion (4 in ResNet); unused by separable blocks.
  `se_ratio`: squeeze-excite to `se_ratio` × the block's *input* channels (0: none).
  `expanded_from`: if set, the first block expands this (scaled) width instead of its
  input's (EdgeTPU's first block: 24 · 4 from a 32-channel stem).
  """

  block: str
  kernel: int
  stride: int
  expansion: int
  out_channels: int
  repeats: int
  se_ratio: float = 0.0
  activation: str = "swish"
  expanded_from: int = 0

  def __post_init__(self):
    if self.block not in BLOCK_KINDS:
      raise ValueError(f"unknown block kind {self.block!r}; known: {', '.join(BLOCK_KINDS)}")
    if self.activation not in ACTIVATIONS:
      raise ValueError(f"unknown activation {self.activation!r}; known: "
                       f"{', '.join(ACTIVATIONS)}")


@dataclasses.dataclass(frozen=True)
class Architecture:
  """An unscaled network: stem conv [→ 3×3 max pool] → stages [→ 1×1 head conv] → classifier."""

  name: str
  stem_channels: int
  stages: tuple[Stage, ...]
  head_channels: int          # 0: no head conv (ResNet, MobileNetV1)
  stem_kernel: int = 3
  stem_pool: bool = False     # ResNet's 3×3 stride-2 max pool after the stem
  activation: str = "swish"   # of the stem and the head conv
  min_head_width: float = 0.0  # MobileNetV2 never narrows its head below 1280
  round_limit: float = 0.9     # `scaling.round_filters`: V1's "never 10% down" (V2 base: 0)
  fixed_stem_head: bool = False    # stem and head widths never scaled (Lite)
  fixed_end_repeats: bool = False  # the first and last stages never depth-scaled (Lite)


@dataclasses.dataclass(frozen=True)
class Block:
  """One block of a scaled network, with everything needed to build, count or convert it."""

  kind: str
  stage: int            # 0-based stage index
  index: int            # 0-based global block index
  kernel: int
  stride: int
  expand_ratio: int
  in_channels: int
  mid_channels: int     # (Fused-)MBConv expanded width, bottleneck inner width, or the input
  out_channels: int
  se_channels: int      # 0: no squeeze-excite
  drop_path_rate: float
  activation: str

  @property
  def has_expand_conv(self) -> bool:
    return self.kind in (MBCONV, FUSED_MBCONV) and self.expand_ratio != 1

  @property
  def has_residual(self) -> bool:
    if self.kind == BOTTLENECK:
      return True
    return (self.kind in (MBCONV, FUSED_MBCONV) and self.stride == 1
            and self.in_channels == self.out_channels)

  @property
  def has_projection(self) -> bool:
    """A 1×1 conv + BN on the shortcut where its shape changes (ResNet)."""
    return self.kind == BOTTLENECK and (self.stride != 1 or self.in_channels != self.out_channels)


@dataclasses.dataclass(frozen=True)
class Network:
  """A whole scaled body: stem → blocks → [head conv]."""

  architecture: Architecture
  stem_channels: int
  blocks: tuple[Block, ...]
  head_channels: int  # 0: no head conv

  @property
  def features(self) -> int:
    """Channels entering the classifier."""
    return self.head_channels or self.blocks[-1].out_channels

  @property
  def total_stride(self) -> int:
    pool = 2 if self.architecture.stem_pool else 1
    return STEM_STRIDE * pool * math.prod(b.stride for b in self.blocks)

  @property
  def num_stages(self) -> int:
    return max(b.stage for b in self.blocks) + 1

  def stage_repeats(self) -> list[int]:
    return [sum(1 for b in self.blocks if b.stage == s) for s in range(self.num_stages)]

  def stage_channels(self) -> list[int]:
    return [next(b.out_channels for b in self.blocks if b.stage == s)
            for s in range(self.num_stages)]


@dataclasses.dataclass(frozen=True)
class FeatureInfo:
  """One feature map the backbone API returns: its name, stride and channels."""

  name: str      # "stride_2" … "stride_32", or "pre_pool"
  stride: int    # input pixels per feature-map pixel (SAME padding: ceil division)
  channels: int


def feature_info(network: Network) -> tuple[FeatureInfo, ...]:
  """What `ConvNet(..., return_features=True)` returns, without running anything.

  For each reduction the last map at that stride (the stem's output for stride 2 when the
  first stage strides again, as in ResNet; a stage's last block otherwise), as timm's
  `features_only` and tensorflow/tpu's `reduction_i` endpoints; then "pre_pool", the map
  the classifier pools (the head conv's output, or the last block's).
  """
  pool = 2 if network.architecture.stem_pool else 1
  maps = {STEM_STRIDE: network.stem_channels}
  stride = STEM_STRIDE * pool
  for b in network.blocks:
    stride *= b.stride
    maps[stride] = b.out_channels
  return (*(FeatureInfo(f"stride_{s}", s, c) for s, c in maps.items()),
          FeatureInfo("pre_pool", stride, network.features))


def build(architecture: Architecture, width: float = 1.0, depth: float = 1.0,
          drop_path_rate: float = 0.0) -> Network:
  """`architecture` with channels scaled by `width` and stage repeats by `depth`.

  Block i of N drops its residual branch with rate drop_path_rate·i/N (i from 0), as in
  the reference; N counts blocks after depth scaling.
  """
  if not 0 <= drop_path_rate < 1:
    raise ValueError(f"drop_path_rate must be in [0, 1), got {drop_path_rate!r}")
  # Validates width/depth ranges with the same messages as named variants.
  scaling.Scaling(width=width, depth=depth, resolution=scaling.BASE_RESOLUTION,
                  dropout_rate=0.0)
  last = len(architecture.stages) - 1
  repeats = [s.repeats if architecture.fixed_end_repeats and i in (0, last)
             else scaling.round_repeats(s.repeats, depth)
             for i, s in enumerate(architecture.stages)]
  total = sum(repeats)
  filters = lambda c: scaling.round_filters(c, width, round_limit=architecture.round_limit)
  blocks: list[Block] = []
  in_channels = stem_channels = (architecture.stem_channels if architecture.fixed_stem_head
                                 else filters(architecture.stem_channels))
  for stage_index, (stage, n) in enumerate(zip(architecture.stages, repeats)):
    out_channels = filters(stage.out_channels)
    for j in range(n):
      if stage.block == BOTTLENECK:
        mid = filters(stage.out_channels // stage.expansion)
      elif stage.block in (MBCONV, FUSED_MBCONV):
        base = filters(stage.expanded_from) if stage.expanded_from and j == 0 else in_channels
        mid = base * stage.expansion
      else:
        mid = in_channels
      index = len(blocks)
      blocks.append(Block(
          kind=stage.block, stage=stage_index, index=index, kernel=stage.kernel,
          stride=stage.stride if j == 0 else 1,
          expand_ratio=stage.expansion if stage.block in (MBCONV, FUSED_MBCONV) else 1,
          in_channels=in_channels, mid_channels=mid, out_channels=out_channels,
          # Sized from the block's input width, not the expanded one (reference behaviour).
          se_channels=max(1, int(in_channels * stage.se_ratio)) if stage.se_ratio > 0 else 0,
          drop_path_rate=drop_path_rate * index / total,
          activation=stage.activation))
      in_channels = out_channels
  if not architecture.head_channels:
    head = 0
  elif architecture.fixed_stem_head:
    head = architecture.head_channels
  else:
    head = scaling.round_filters(architecture.head_channels,
                                 max(width, architecture.min_head_width),
                                 round_limit=architecture.round_limit)
  return Network(architecture, stem_channels, tuple(blocks), head)
