"""The one Flax network every family runs as: stem → blocks by kind → head → classifier.

The architecture comes from `architecture.Network` (plain data); this module only turns
it into computation. Inputs are normalised float images, NHWC. Variables: `params` and
`batch_stats`, float32; the compute dtype is configurable, while BatchNorm statistics,
the squeeze-excite pooling and the logits stay float32.
"""

from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from efficientnet_jax.models import architecture, blocks, layers, registry, scaling

# What a rematerialised block keeps for the backward pass: "full" only its input (least
# memory, the whole block recomputed); "save_conv" also the convolution outputs (only BN,
# activations and squeeze-excite recomputed).
REMAT_POLICIES = ("full", "save_conv")
DTYPES = ("float32", "bfloat16")


class ConvNet(nn.Module):
  """Any `architecture.Network`, EfficientNet or a baseline.

  Attributes:
    network: the scaled architecture (`architecture.build` or `registry.network`).
    num_classes: classifier size; 0 returns the pooled features instead of logits.
    dropout_rate: dropout before the classifier.
    padding: "same" (TF, default) or "symmetric" (PyTorch-trained weights).
    depthwise_impl: "xla" grouped convolution, "shift_add", or "auto" (by backend).
    dtype: compute dtype (float32 or bfloat16); parameters stay float32.
    remat: rematerialise each block in the backward pass to save activation memory.
    remat_policy: with remat, what each block keeps (`REMAT_POLICIES`).
    bn_frozen: normalise with the running statistics and never update them, in training
      too (fine-tuning); dropout and drop path still follow `train`.
    bn_axis_name / bn_axis_index_groups: sync BN statistics across a named axis.
    features_only: a backbone: return only the feature maps (as `return_features` names
      them) and create no classifier.
  """

  network: architecture.Network
  num_classes: int = 1000
  dropout_rate: float = 0.2
  padding: layers.Padding = "same"
  depthwise_impl: layers.DepthwiseImpl = "auto"
  dtype: Any = jnp.float32
  remat: bool = False
  remat_policy: str = "full"
  bn_momentum: float = 0.99
  bn_epsilon: float = 1e-3
  bn_frozen: bool = False
  bn_axis_name: str | None = None
  bn_axis_index_groups: Sequence[Sequence[int]] | None = None
  features_only: bool = False

  @nn.compact
  def __call__(self, images: jax.Array, train: bool = False, return_features: bool = False
               ) -> jax.Array | tuple[jax.Array, dict[str, jax.Array]] | dict[str, jax.Array]:
    """Logits (pooled features with num_classes=0); with `return_features`, also the
    feature maps `architecture.feature_info(self.network)` describes, by name (a
    detection or segmentation backbone's multi-scale outputs); with `features_only`,
    the feature maps alone."""
    net, arch = self.network, self.network.architecture
    _check_input(images, net.total_stride)
    options = blocks.LayerOptions(
        padding=self.padding, depthwise_impl=self.depthwise_impl, dtype=self.dtype,
        bn_momentum=self.bn_momentum, bn_epsilon=self.bn_epsilon, bn_frozen=self.bn_frozen,
        bn_axis_name=self.bn_axis_name, bn_axis_index_groups=self.bn_axis_index_groups)
    x = options.conv_bn(images.astype(self.dtype), net.stem_channels, "stem", train,
                        kernel=arch.stem_kernel, stride=architecture.STEM_STRIDE,
                        activation=arch.activation)
    maps, stride = {architecture.STEM_STRIDE: x}, architecture.STEM_STRIDE
    if arch.stem_pool:
      x = nn.max_pool(x, (3, 3), strides=(2, 2), padding="SAME")
      stride *= 2
    for block in net.blocks:
      module = blocks.MODULES[block.kind](block, options, train, name=f"blocks_{block.index}")
      x = remat_call(module, x, self.remat_policy) if self.remat else module(x)
      stride *= block.stride
      maps[stride] = x  # the last map at each stride is kept
    if net.head_channels:
      x = options.conv_bn(x, net.head_channels, "head", train, activation=arch.activation)
    features = {**{f"stride_{s}": m for s, m in maps.items()}, "pre_pool": x}
    if self.features_only:
      return features
    pooled = jnp.mean(x.astype(jnp.float32), axis=(1, 2))
    if self.num_classes == 0:
      out = pooled
    else:
      out = nn.Dropout(self.dropout_rate, deterministic=not train)(pooled)
      out = nn.Dense(self.num_classes, dtype=jnp.float32,
                     kernel_init=layers.dense_kernel_init, name="classifier")(out)
    return (out, features) if return_features else out


def remat_call(block: nn.Module, x: jax.Array, policy: str) -> jax.Array:
  """`block(x)` rematerialised: the backward pass recomputes the block from its input.

  `nn.remat` alone leaves the recomputation free of any dependence on the incoming
  gradient, and XLA's CPU scheduler (which drops optimisation barriers first) hoists it
  into the forward pass, where it saves no memory. Here the saved values get `0 · g[0]`
  added, an exact no-op for finite gradients that makes the recomputation wait for g.
  """
  if policy not in REMAT_POLICIES:
    raise ValueError(f"remat_policy must be one of {REMAT_POLICIES}, got {policy!r}")
  saveable = (jax.checkpoint_policies.save_only_these_names(blocks.CONV_OUTPUT)
              if policy == "save_conv" else None)
  call = lambda mdl, x: mdl(x)
  checkpointed = nn.checkpoint(call, policy=saveable)

  def forward(mdl, x):
    return nn.vjp(checkpointed, mdl, x)

  def backward(vjp_fn, g):
    zero = g.reshape(-1)[0] * 0  # XLA keeps x·0 for floats (it is NaN for x = inf)
    vjp_fn = jax.tree.map(
        lambda r: r + zero.astype(r.dtype) if jnp.issubdtype(r.dtype, jnp.inexact) else r,
        vjp_fn)
    return vjp_fn(g)

  return nn.custom_vjp(call, forward_fn=forward, backward_fn=backward)(block, x)


def _check_input(images: jax.Array, total_stride: int) -> None:
  if images.ndim != 4:
    raise ValueError(f"images must be NHWC (4 dimensions), got shape {images.shape}")
  height, width = images.shape[1:3]
  if min(height, width) < total_stride:
    raise ValueError(f"input resolution {height}x{width} is smaller than the network's "
                     f"total stride {total_stride}")


def create(model_config: Any, num_classes: int | None = None
           ) -> tuple[ConvNet, scaling.Scaling]:
  """The model a (validated) `config.model` describes, and its scaling (for the resolution).

  `num_classes` fills in `config.model.num_classes` when that is None (the dataset's).
  """
  size = registry.scaling_of(model_config)
  classes = model_config.num_classes if model_config.num_classes is not None else num_classes
  if classes is None or classes < 0:
    raise ValueError(f"config.model.num_classes must be >= 0, got {classes!r}")
  model = ConvNet(
      network=registry.network_of(model_config),
      num_classes=classes,
      dropout_rate=size.dropout_rate,
      padding=model_config.padding,
      depthwise_impl=model_config.depthwise_impl,
      dtype=jnp.dtype(model_config.dtype),
      remat=model_config.remat,
      remat_policy=model_config.remat_policy,
      bn_momentum=registry.bn_momentum_of(model_config),
      bn_epsilon=model_config.bn_epsilon)
  return model, size
