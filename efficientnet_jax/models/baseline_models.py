"""Flax modules for the baselines of `baselines.py` (ResNet, MobileNetV1, MobileNetV2).

They share EfficientNet's conventions and attributes (NHWC, TF SAME padding by default,
reference initialisers, `*_bn` BatchNorm names that weight decay skips, float32 BN
statistics and logits, `bn_axis_name` for grouped BN), so the training loop can build
and train any of them through `create` exactly as it does EfficientNet.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from efficientnet_jax.models import baselines, layers, scaling

_ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
    "relu": nn.relu, "relu6": jax.nn.relu6}


def _bn(owner: nn.Module, name: str, train: bool) -> nn.BatchNorm:
  """BatchNorm with the owner's settings (momentum, epsilon, cross-device groups)."""
  return nn.BatchNorm(use_running_average=not train, momentum=owner.bn_momentum,
                      epsilon=owner.bn_epsilon, dtype=owner.dtype,
                      axis_name=owner.bn_axis_name,
                      axis_index_groups=owner.bn_axis_index_groups, name=name)


class _Block(nn.Module):
  """Fields every block shares with the network."""

  block: baselines.Block
  train: bool = False
  activation: str = "relu"
  padding: layers.Padding = "same"
  depthwise_impl: layers.DepthwiseImpl = "auto"
  dtype: Any = jnp.float32
  bn_momentum: float = 0.99
  bn_epsilon: float = 1e-3
  bn_axis_name: str | None = None
  bn_axis_index_groups: Any = None

  def conv_bn(self, x: jax.Array, features: int, kernel: int, stride: int, name: str,
              activate: bool = True) -> jax.Array:
    """conv `name`_conv → BN `name`_bn → [activation]."""
    x = layers.Conv(features, kernel=kernel, stride=stride, padding=self.padding,
                    dtype=self.dtype, name=f"{name}_conv")(x)
    x = _bn(self, f"{name}_bn", self.train)(x)
    return _ACTIVATIONS[self.activation](x) if activate else x


class Bottleneck(_Block):
  """ResNet v1.5 bottleneck: 1×1 → k×k (strided) → 1×1, projection shortcut if needed."""

  @nn.compact
  def __call__(self, inputs: jax.Array) -> jax.Array:
    b = self.block
    x = self.conv_bn(inputs, b.mid_channels, 1, 1, "reduce")
    x = self.conv_bn(x, b.mid_channels, b.kernel, b.stride, "middle")
    x = self.conv_bn(x, b.out_channels, 1, 1, "expand", activate=False)
    shortcut = inputs
    if b.has_projection:
      shortcut = self.conv_bn(inputs, b.out_channels, 1, b.stride, "shortcut", activate=False)
    return _ACTIVATIONS[self.activation](x + shortcut)


class InvertedResidual(_Block):
  """MobileNetV2: [1×1 expand] → depthwise k×k → 1×1 linear projection [+ input].

  For `kind == SEPARABLE` (MobileNetV1): no expansion, no shortcut, and the 1×1 conv is
  followed by the activation.
  """

  @nn.compact
  def __call__(self, inputs: jax.Array) -> jax.Array:
    b = self.block
    act = _ACTIVATIONS[self.activation]
    x = inputs
    if b.has_expand_conv:
      x = self.conv_bn(x, b.mid_channels, 1, 1, "expand")
    x = layers.DepthwiseConv(b.kernel, b.stride, self.padding, self.depthwise_impl,
                             dtype=self.dtype, name="depthwise_conv")(x)
    x = act(_bn(self, "depthwise_bn", self.train)(x))
    separable = b.kind == baselines.SEPARABLE
    x = self.conv_bn(x, b.out_channels, 1, 1, "project", activate=separable)
    return x + inputs if b.has_residual else x


class BaselineNet(nn.Module):
  """Any `baselines.Network`: stem [→ max pool] → blocks [→ head conv] → pool → FC.

  Same attributes as `model.EfficientNet` (`num_classes=0` returns pooled features).
  """

  network: baselines.Network
  num_classes: int = 1000
  dropout_rate: float = 0.0
  padding: layers.Padding = "same"
  depthwise_impl: layers.DepthwiseImpl = "auto"
  dtype: Any = jnp.float32
  remat: bool = False
  bn_momentum: float = 0.99
  bn_epsilon: float = 1e-3
  bn_axis_name: str | None = None
  bn_axis_index_groups: Sequence[Sequence[int]] | None = None

  @nn.compact
  def __call__(self, images: jax.Array, train: bool = False) -> jax.Array:
    net = self.network
    if images.ndim != 4 or min(images.shape[1:3]) < net.total_stride:
      raise ValueError(f"images must be NHWC of at least {net.total_stride} pixels per side "
                       f"(the network's total stride), got shape {images.shape}")
    settings = dict(train=train, activation=net.architecture.activation,
                    padding=self.padding, depthwise_impl=self.depthwise_impl,
                    dtype=self.dtype, bn_momentum=self.bn_momentum,
                    bn_epsilon=self.bn_epsilon, bn_axis_name=self.bn_axis_name,
                    bn_axis_index_groups=self.bn_axis_index_groups)
    act = _ACTIVATIONS[net.architecture.activation]
    x = images.astype(self.dtype)
    x = layers.Conv(net.stem_channels, kernel=net.architecture.stem_kernel,
                    stride=baselines.STEM_STRIDE, padding=self.padding, dtype=self.dtype,
                    name="stem_conv")(x)
    x = act(_bn(self, "stem_bn", train)(x))
    if net.architecture.stem_pool:
      x = nn.max_pool(x, (3, 3), strides=(2, 2), padding="SAME")
    for block in net.blocks:
      cls = Bottleneck if block.kind == baselines.BOTTLENECK else InvertedResidual
      if self.remat:
        cls = nn.remat(cls)
      x = cls(block=block, name=f"blocks_{block.index}", **settings)(x)
    if net.head_channels:
      x = layers.Conv(net.head_channels, dtype=self.dtype, name="head_conv")(x)
      x = act(_bn(self, "head_bn", train)(x))
    features = jnp.mean(x.astype(jnp.float32), axis=(1, 2))
    if self.num_classes == 0:
      return features
    features = nn.Dropout(self.dropout_rate, deterministic=not train)(features)
    return nn.Dense(self.num_classes, dtype=jnp.float32, kernel_init=layers.dense_kernel_init,
                    name="classifier")(features)


def create(model_config: Any, size: scaling.Scaling, num_classes: int) -> BaselineNet:
  """The baseline `config.model.family` names, scaled by `size` (from `scaling.from_config`)."""
  try:
    network = baselines.build(model_config.family, size.width, size.depth)
  except ValueError as e:
    raise ValueError(f"config.model.family: {e}") from None
  if size.resolution < network.total_stride:
    raise ValueError(f"config.model.resolution {size.resolution} is smaller than the "
                     f"{model_config.family} total stride {network.total_stride}")
  return BaselineNet(network=network, num_classes=num_classes,
                     dropout_rate=size.dropout_rate, padding=model_config.padding,
                     depthwise_impl=model_config.depthwise_impl,
                     dtype=jnp.dtype(model_config.dtype), remat=model_config.remat,
                     bn_momentum=model_config.bn_momentum,
                     bn_epsilon=model_config.bn_epsilon)
