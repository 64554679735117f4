"""The paper's other baselines as data: ResNet-50/152, MobileNetV1 and MobileNetV2.

Each is a stem, a stage table and an optional head conv, like B0 in `spec.py`, so the
same scaling applies: width multiplies every channel count (`scaling.round_filters`),
depth multiplies every stage's block count (`scaling.round_repeats`), and the input
resolution is free. That is what the paper's Table 3 does to them. Nothing here imports
Flax; the modules are in `baseline_models.py`.

Unscaled parameter counts (1000 classes) match the standard implementations exactly:
ResNet-50 25,557,032 and ResNet-152 60,192,808 (torchvision, stride on the 3×3 conv),
MobileNetV2 3,504,872 (torchvision), MobileNetV1 4,231,976 (Keras, trainable).
"""

from __future__ import annotations

import dataclasses
import math

from efficientnet_jax.models import scaling

BOTTLENECK = "bottleneck"                # 1×1 reduce → k×k → 1×1 expand ×4, + shortcut
INVERTED_RESIDUAL = "inverted_residual"  # [1×1 expand] → depthwise k×k → 1×1 linear project
SEPARABLE = "separable"                  # depthwise k×k → 1×1, no shortcut
STEM_STRIDE = 2


@dataclasses.dataclass(frozen=True)
class Stage:
  """`repeats` blocks; only the first strides and changes the channel count.

  `expansion`: inverted residual, expanded = input channels · t; bottleneck, the inner
  width is out_channels / expansion (4 in ResNet); unused by separable blocks.
  """

  block: str
  kernel: int
  stride: int
  out_channels: int
  repeats: int
  expansion: int = 1


@dataclasses.dataclass(frozen=True)
class Architecture:
  name: str
  stem_kernel: int
  stem_channels: int
  stem_pool: bool        # ResNet's 3×3 stride-2 max pool after the stem
  stages: tuple[Stage, ...]
  head_channels: int     # 1×1 conv before pooling; 0: none
  activation: str        # "relu" | "relu6"
  min_head_width: float = 0.0  # MobileNetV2 never narrows its head below 1280


def _resnet(name: str, repeats: tuple[int, int, int, int]) -> Architecture:
  stages = tuple(Stage(BOTTLENECK, 3, stride, out, n, expansion=4)
                 for stride, out, n in zip((1, 2, 2, 2), (256, 512, 1024, 2048), repeats))
  return Architecture(name, stem_kernel=7, stem_channels=64, stem_pool=True, stages=stages,
                      head_channels=0, activation="relu")


ARCHITECTURES: dict[str, Architecture] = {
    "resnet50": _resnet("resnet50", (3, 4, 6, 3)),
    "resnet152": _resnet("resnet152", (3, 8, 36, 3)),
    # Sandler et al. 2018, Table 2: (t, c, n, s) rows.
    "mobilenetv2": Architecture(
        "mobilenetv2", stem_kernel=3, stem_channels=32, stem_pool=False,
        stages=tuple(Stage(INVERTED_RESIDUAL, 3, s, c, n, expansion=t) for t, c, n, s in (
            (1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1),
            (6, 160, 3, 2), (6, 320, 1, 1))),
        head_channels=1280, activation="relu6", min_head_width=1.0),
    # Howard et al. 2017, Table 1, with runs of equal layers grouped into stages.
    "mobilenetv1": Architecture(
        "mobilenetv1", stem_kernel=3, stem_channels=32, stem_pool=False,
        stages=tuple(Stage(SEPARABLE, 3, s, c, n) for c, s, n in (
            (64, 1, 1), (128, 2, 2), (256, 2, 2), (512, 2, 6), (1024, 2, 2))),
        head_channels=0, activation="relu6"),
}


def architecture(name: str) -> Architecture:
  try:
    return ARCHITECTURES[name]
  except KeyError:
    raise ValueError(f"unknown baseline {name!r}; known: {', '.join(ARCHITECTURES)}") from None


@dataclasses.dataclass(frozen=True)
class Block:
  kind: str
  stage: int
  index: int
  kernel: int
  stride: int
  in_channels: int
  mid_channels: int   # bottleneck inner width, inverted-residual expanded width, or input
  out_channels: int

  @property
  def has_expand_conv(self) -> bool:
    return self.kind == INVERTED_RESIDUAL and self.mid_channels != self.in_channels

  @property
  def has_residual(self) -> bool:
    if self.kind == BOTTLENECK:
      return True
    return (self.kind == INVERTED_RESIDUAL and self.stride == 1
            and self.in_channels == self.out_channels)

  @property
  def has_projection(self) -> bool:
    """A 1×1 conv + BN on the shortcut where its shape changes (ResNet)."""
    return self.kind == BOTTLENECK and (self.stride != 1 or self.in_channels != self.out_channels)


@dataclasses.dataclass(frozen=True)
class Network:
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


def build(name: str, width: float = 1.0, depth: float = 1.0) -> Network:
  """Baseline `name` with channels scaled by `width` and stage repeats by `depth`."""
  arch = architecture(name)
  # Validates the multipliers with the same messages as EfficientNet's.
  scaling.Scaling(width=width, depth=depth, resolution=scaling.BASE_RESOLUTION,
                  dropout_rate=0.0)
  blocks = []
  in_channels = stem_channels = scaling.round_filters(arch.stem_channels, width)
  for stage_index, stage in enumerate(arch.stages):
    out_channels = scaling.round_filters(stage.out_channels, width)
    for j in range(scaling.round_repeats(stage.repeats, depth)):
      if stage.block == BOTTLENECK:
        mid = scaling.round_filters(stage.out_channels // stage.expansion, width)
      elif stage.block == INVERTED_RESIDUAL:
        mid = in_channels * stage.expansion
      else:
        mid = in_channels
      blocks.append(Block(stage.block, stage_index, len(blocks), stage.kernel,
                          stage.stride if j == 0 else 1, in_channels, mid, out_channels))
      in_channels = out_channels
  head = (scaling.round_filters(arch.head_channels, max(width, arch.min_head_width))
          if arch.head_channels else 0)
  return Network(arch, stem_channels, tuple(blocks), head)


def _out(size: int, stride: int) -> int:
  return -(-size // stride)  # SAME padding


def count_params(network: Network, num_classes: int = 1000) -> int:
  """Trainable parameters from the spec alone (convs, BN scale and bias, classifier)."""
  conv_bn = lambda fan_in, out: fan_in * out + 2 * out
  total = conv_bn(network.architecture.stem_kernel**2 * 3, network.stem_channels)
  for b in network.blocks:
    if b.kind == BOTTLENECK:
      total += conv_bn(b.in_channels, b.mid_channels)
      total += conv_bn(b.kernel**2 * b.mid_channels, b.mid_channels)
      total += conv_bn(b.mid_channels, b.out_channels)
      if b.has_projection:
        total += conv_bn(b.in_channels, b.out_channels)
    else:
      if b.has_expand_conv:
        total += conv_bn(b.in_channels, b.mid_channels)
      total += conv_bn(b.kernel**2, b.mid_channels)  # depthwise
      total += conv_bn(b.mid_channels, b.out_channels)
  if network.head_channels:
    total += conv_bn(network.blocks[-1].out_channels, network.head_channels)
  return total + (network.features + 1) * num_classes


def multiply_adds(network: Network, resolution: int, num_classes: int = 1000) -> int:
  """Analytic multiply-adds of one forward pass (convolutions and classifier, as the paper)."""
  arch = network.architecture
  h = _out(resolution, STEM_STRIDE)
  total = h * h * arch.stem_kernel**2 * 3 * network.stem_channels
  if arch.stem_pool:
    h = _out(h, 2)
  for b in network.blocks:
    out_h = _out(h, b.stride)
    k2 = b.kernel**2
    if b.kind == BOTTLENECK:
      total += h * h * b.in_channels * b.mid_channels
      total += out_h * out_h * (k2 * b.mid_channels * b.mid_channels
                                + b.mid_channels * b.out_channels)
      if b.has_projection:
        total += out_h * out_h * b.in_channels * b.out_channels
    else:  # inverted residual or separable: [expand] → depthwise → 1×1
      if b.has_expand_conv:
        total += h * h * b.in_channels * b.mid_channels
      total += out_h * out_h * (k2 * b.mid_channels + b.mid_channels * b.out_channels)
    h = out_h
  if network.head_channels:
    total += h * h * network.blocks[-1].out_channels * network.head_channels
  return total + network.features * num_classes
