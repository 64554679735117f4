"""The Flax module of each block kind of `architecture.py`, and what they share.

Every block takes its `architecture.Block` (the exact channel counts) and one
`LayerOptions` (padding, depthwise implementation, dtype, BatchNorm settings), so an
option added here reaches every family. Variable names follow one scheme (`<part>_conv`,
`<part>_bn`): weight decay skips `*_bn`, and the converters map onto these names.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import flax.linen as nn
import jax
from jax.ad_checkpoint import checkpoint_name
import jax.numpy as jnp

from efficientnet_jax.models import architecture, layers

ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
    "swish": nn.swish, "relu": nn.relu, "relu6": jax.nn.relu6}
# The checkpoint_name of convolution outputs: what remat policy "save_conv" keeps.
CONV_OUTPUT = "conv_output"


@dataclasses.dataclass(frozen=True)
class LayerOptions:
  """Settings every convolution and BatchNorm of a network shares.

  bn_frozen: normalise with the running statistics and never update them, in training
    too (fine-tuning); dropout and drop path still follow `train`.
  bn_axis_name / bn_axis_index_groups: sync BN statistics across a named axis.
  """

  padding: layers.Padding = "same"
  depthwise_impl: layers.DepthwiseImpl = "auto"
  dtype: Any = jnp.float32
  bn_momentum: float = 0.99
  bn_epsilon: float = 1e-3
  bn_frozen: bool = False
  bn_axis_name: str | None = None
  bn_axis_index_groups: Any = None

  def batch_norm(self, name: str, train: bool) -> nn.BatchNorm:
    """A BatchNorm of the module being built, with these settings."""
    return nn.BatchNorm(use_running_average=not train or self.bn_frozen,
                        momentum=self.bn_momentum, epsilon=self.bn_epsilon, dtype=self.dtype,
                        axis_name=self.bn_axis_name,
                        axis_index_groups=self.bn_axis_index_groups, name=name)

  def conv_bn(self, x: jax.Array, features: int, name: str, train: bool, *, kernel: int = 1,
              stride: int = 1, activation: str | None = None) -> jax.Array:
    """`name`_conv → `name`_bn [→ activation], in the module being built."""
    x = layers.Conv(features, kernel=kernel, stride=stride, padding=self.padding,
                    dtype=self.dtype, name=f"{name}_conv")(x)
    x = self.batch_norm(f"{name}_bn", train)(checkpoint_name(x, CONV_OUTPUT))
    return ACTIVATIONS[activation](x) if activation else x

  def depthwise_bn(self, x: jax.Array, kernel: int, stride: int, train: bool,
                   activation: str) -> jax.Array:
    """depthwise_conv → depthwise_bn → activation."""
    x = layers.DepthwiseConv(kernel, stride, self.padding, self.depthwise_impl,
                             dtype=self.dtype, name="depthwise_conv")(x)
    x = self.batch_norm("depthwise_bn", train)(checkpoint_name(x, CONV_OUTPUT))
    return ACTIVATIONS[activation](x)


def drop_path(module: nn.Module, x: jax.Array, rate: float, train: bool) -> jax.Array:
  """Stochastic depth: zero the residual branch per sample, scale survivors by 1/keep."""
  if not train or rate == 0.0:
    return x
  keep = 1.0 - rate
  mask = jax.random.bernoulli(module.make_rng("dropout"), keep, (x.shape[0], 1, 1, 1))
  return jnp.where(mask, x / keep, jnp.zeros_like(x))


class SqueezeExcite(nn.Module):
  """Global pool → 1×1 reduce (bias) → activation → 1×1 expand (bias) → sigmoid gate."""

  reduced_channels: int
  activation: str = "swish"
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    pooled = jnp.mean(x.astype(jnp.float32), axis=(1, 2), keepdims=True)
    s = layers.Conv(self.reduced_channels, use_bias=True, dtype=self.dtype,
                    name="reduce")(pooled.astype(self.dtype))
    s = ACTIVATIONS[self.activation](s)
    s = layers.Conv(x.shape[-1], use_bias=True, dtype=self.dtype, name="expand")(s)
    return x * nn.sigmoid(s).astype(x.dtype)


class BlockModule(nn.Module):
  """What every block module is given: its block, the shared options, the mode."""

  block: architecture.Block
  options: LayerOptions = LayerOptions()
  train: bool = False


class MBConv(BlockModule):
  """Inverted residual: [expand 1×1] → depthwise k×k → [SE] → project 1×1 → [+input].

  EfficientNet's block, and MobileNetV2's (no squeeze-excite, ReLU6).
  """

  @nn.compact
  def __call__(self, inputs: jax.Array) -> jax.Array:
    b, o, act = self.block, self.options, self.block.activation
    x = inputs
    if b.has_expand_conv:
      x = o.conv_bn(x, b.mid_channels, "expand", self.train, activation=act)
    x = o.depthwise_bn(x, b.kernel, b.stride, self.train, act)
    if b.se_channels:
      x = SqueezeExcite(b.se_channels, act, dtype=o.dtype, name="se")(x)
    x = o.conv_bn(x, b.out_channels, "project", self.train)
    if b.has_residual:
      x = drop_path(self, x, b.drop_path_rate, self.train) + inputs
    return x


class FusedMBConv(BlockModule):
  """EfficientNetV2's and EdgeTPU's block: the expansion and the depthwise conv fused.

  e≠1: k×k expand (with the stride) → BN → act → [SE] → 1×1 project → BN; e=1: one k×k
  conv → BN → act (`project_*`, as Keras names it). Residual and drop path as MBConv.
  """

  @nn.compact
  def __call__(self, inputs: jax.Array) -> jax.Array:
    b, o, act = self.block, self.options, self.block.activation
    x = inputs
    if b.has_expand_conv:
      x = o.conv_bn(x, b.mid_channels, "expand", self.train, kernel=b.kernel,
                    stride=b.stride, activation=act)
    if b.se_channels:
      x = SqueezeExcite(b.se_channels, act, dtype=o.dtype, name="se")(x)
    if b.has_expand_conv:
      x = o.conv_bn(x, b.out_channels, "project", self.train)
    else:
      x = o.conv_bn(x, b.out_channels, "project", self.train, kernel=b.kernel,
                    stride=b.stride, activation=act)
    if b.has_residual:
      x = drop_path(self, x, b.drop_path_rate, self.train) + inputs
    return x


class DepthwiseSeparable(BlockModule):
  """MobileNetV1: depthwise k×k → BN → act → 1×1 → BN → act; no shortcut."""

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    b, o = self.block, self.options
    x = o.depthwise_bn(x, b.kernel, b.stride, self.train, b.activation)
    return o.conv_bn(x, b.out_channels, "project", self.train, activation=b.activation)


class Bottleneck(BlockModule):
  """ResNet v1.5 bottleneck: 1×1 → k×k (strided) → 1×1, projection shortcut if needed."""

  @nn.compact
  def __call__(self, inputs: jax.Array) -> jax.Array:
    b, o, act = self.block, self.options, self.block.activation
    x = o.conv_bn(inputs, b.mid_channels, "reduce", self.train, activation=act)
    x = o.conv_bn(x, b.mid_channels, "middle", self.train, kernel=b.kernel, stride=b.stride,
                  activation=act)
    x = o.conv_bn(x, b.out_channels, "expand", self.train)
    shortcut = inputs
    if b.has_projection:
      shortcut = o.conv_bn(inputs, b.out_channels, "shortcut", self.train, stride=b.stride)
    x = drop_path(self, x, b.drop_path_rate, self.train)
    return ACTIVATIONS[act](x + shortcut)


MODULES: dict[str, type[BlockModule]] = {
    architecture.MBCONV: MBConv,
    architecture.FUSED_MBCONV: FusedMBConv,
    architecture.DEPTHWISE_SEPARABLE: DepthwiseSeparable,
    architecture.BOTTLENECK: Bottleneck,
}
