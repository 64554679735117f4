"""The EfficientNet Flax modules: stem → MBConv blocks with squeeze-excite → head.

The architecture comes from `spec.Network` (plain data); these modules only turn it
into computation. Inputs are normalised float images, NHWC. Variables: `params` and
`batch_stats`, float32; the compute dtype is configurable, while BatchNorm statistics,
the squeeze-excite pooling and the logits stay float32.
"""

from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax
from jax.ad_checkpoint import checkpoint_name
import jax.numpy as jnp

from efficientnet_jax.models import layers
from efficientnet_jax.models import scaling
from efficientnet_jax.models import spec as spec_lib

BN_MOMENTUM = 0.99
BN_EPSILON = 1e-3
# What a rematerialised block keeps for the backward pass: "full" only its input (least
# memory, the whole block recomputed); "save_conv" also the convolution outputs (only BN,
# activations and squeeze-excite recomputed).
REMAT_POLICIES = ("full", "save_conv")
CONV_OUTPUT = "conv_output"  # checkpoint_name of the tensors "save_conv" keeps


def _bn(parent: "MBConv | EfficientNet", name: str, train: bool) -> nn.BatchNorm:
  """BatchNorm with the owner's settings (momentum, epsilon, cross-device sync)."""
  return nn.BatchNorm(
      use_running_average=not train or parent.bn_frozen,
      momentum=parent.bn_momentum,
      epsilon=parent.bn_epsilon,
      dtype=parent.dtype,
      axis_name=parent.bn_axis_name,
      axis_index_groups=parent.bn_axis_index_groups,
      name=name)


class SqueezeExcite(nn.Module):
  """Global pool → 1×1 reduce (bias) → swish → 1×1 expand (bias) → sigmoid gate."""

  reduced_channels: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    pooled = jnp.mean(x.astype(jnp.float32), axis=(1, 2), keepdims=True)
    s = layers.Conv(self.reduced_channels, use_bias=True, dtype=self.dtype,
                    name="reduce")(pooled.astype(self.dtype))
    s = nn.swish(s)
    s = layers.Conv(x.shape[-1], use_bias=True, dtype=self.dtype, name="expand")(s)
    return x * nn.sigmoid(s).astype(x.dtype)


class MBConv(nn.Module):
  """Inverted residual block: [expand 1×1] → depthwise k×k → SE → project 1×1 → [+input]."""

  block: spec_lib.Block
  train: bool = False
  padding: layers.Padding = "same"
  depthwise_impl: layers.DepthwiseImpl = "auto"
  dtype: Any = jnp.float32
  bn_momentum: float = BN_MOMENTUM
  bn_epsilon: float = BN_EPSILON
  bn_frozen: bool = False
  bn_axis_name: str | None = None
  bn_axis_index_groups: Any = None

  @nn.compact
  def __call__(self, inputs: jax.Array) -> jax.Array:
    b = self.block
    x = inputs
    if b.expand_ratio != 1:
      x = layers.Conv(b.expanded_channels, dtype=self.dtype, name="expand_conv")(x)
      x = nn.swish(_bn(self, "expand_bn", self.train)(checkpoint_name(x, CONV_OUTPUT)))
    x = layers.DepthwiseConv(b.kernel, b.stride, self.padding, self.depthwise_impl,
                             dtype=self.dtype, name="depthwise_conv")(x)
    x = nn.swish(_bn(self, "depthwise_bn", self.train)(checkpoint_name(x, CONV_OUTPUT)))
    if b.se_channels:
      x = SqueezeExcite(b.se_channels, dtype=self.dtype, name="se")(x)
    x = layers.Conv(b.out_channels, dtype=self.dtype, name="project_conv")(x)
    x = _bn(self, "project_bn", self.train)(checkpoint_name(x, CONV_OUTPUT))
    if b.has_residual:
      x = drop_path(self, x, b.drop_path_rate, self.train) + inputs
    return x


def drop_path(module: nn.Module, x: jax.Array, rate: float, train: bool) -> jax.Array:
  """Stochastic depth: zero the residual branch per sample, scale survivors by 1/keep."""
  if not train or rate == 0.0:
    return x
  keep = 1.0 - rate
  mask = jax.random.bernoulli(module.make_rng("dropout"), keep, (x.shape[0], 1, 1, 1))
  return jnp.where(mask, x / keep, jnp.zeros_like(x))


class EfficientNet(nn.Module):
  """EfficientNet for a given `spec.Network`.

  Attributes:
    network: the scaled architecture (`spec.build(width, depth)`).
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
  """

  network: spec_lib.Network
  num_classes: int = 1000
  dropout_rate: float = 0.2
  padding: layers.Padding = "same"
  depthwise_impl: layers.DepthwiseImpl = "auto"
  dtype: Any = jnp.float32
  remat: bool = False
  remat_policy: str = "full"
  bn_momentum: float = BN_MOMENTUM
  bn_epsilon: float = BN_EPSILON
  bn_frozen: bool = False
  bn_axis_name: str | None = None
  bn_axis_index_groups: Sequence[Sequence[int]] | None = None

  @nn.compact
  def __call__(self, images: jax.Array, train: bool = False) -> jax.Array:
    _check_input(images, self.network.total_stride)
    x = images.astype(self.dtype)
    x = layers.Conv(self.network.stem_channels, kernel=3, stride=spec_lib.STEM_STRIDE,
                    padding=self.padding, dtype=self.dtype, name="stem_conv")(x)
    x = nn.swish(_bn(self, "stem_bn", train)(x))

    for block in self.network.blocks:
      module = MBConv(block, train=train, padding=self.padding,
                      depthwise_impl=self.depthwise_impl, dtype=self.dtype,
                      bn_momentum=self.bn_momentum, bn_epsilon=self.bn_epsilon,
                      bn_frozen=self.bn_frozen, bn_axis_name=self.bn_axis_name,
                      bn_axis_index_groups=self.bn_axis_index_groups,
                      name=f"blocks_{block.index}")
      x = remat_call(module, x, self.remat_policy) if self.remat else module(x)

    x = layers.Conv(self.network.head_channels, dtype=self.dtype, name="head_conv")(x)
    x = nn.swish(_bn(self, "head_bn", train)(x))
    features = jnp.mean(x.astype(jnp.float32), axis=(1, 2))
    if self.num_classes == 0:
      return features
    features = nn.Dropout(self.dropout_rate, deterministic=not train)(features)
    return nn.Dense(self.num_classes, dtype=jnp.float32, kernel_init=layers.dense_kernel_init,
                    name="classifier")(features)


def remat_call(block: MBConv, x: jax.Array, policy: str) -> jax.Array:
  """`block(x)` rematerialised: the backward pass recomputes the block from its input.

  `nn.remat` alone leaves the recomputation free of any dependence on the incoming
  gradient, and XLA's CPU scheduler (which drops optimisation barriers first) hoists it
  into the forward pass, where it saves no memory. Here the saved values get `0 · g[0]`
  added, an exact no-op for finite gradients that makes the recomputation wait for g.
  """
  if policy not in REMAT_POLICIES:
    raise ValueError(f"remat_policy must be one of {REMAT_POLICIES}, got {policy!r}")
  saveable = (jax.checkpoint_policies.save_only_these_names(CONV_OUTPUT)
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
           ) -> tuple[nn.Module, scaling.Scaling]:
  """The model a `config.model` describes, and its scaling (for the input resolution).

  `num_classes` fills in `config.model.num_classes` when that is None (the dataset's).
  """
  size = scaling.from_config(model_config)
  classes = model_config.num_classes if model_config.num_classes is not None else num_classes
  if classes is None or classes < 0:
    raise ValueError(f"config.model.num_classes must be >= 0, got {classes!r}")
  if model_config.dtype not in ("float32", "bfloat16"):
    raise ValueError(f"config.model.dtype must be float32 or bfloat16, got "
                     f"{model_config.dtype!r}")
  if model_config.padding not in layers.PADDINGS:
    raise ValueError(f"config.model.padding must be one of {layers.PADDINGS}, got "
                     f"{model_config.padding!r}")
  if model_config.depthwise_impl not in layers.DEPTHWISE_IMPLS:
    raise ValueError(f"config.model.depthwise_impl must be one of {layers.DEPTHWISE_IMPLS}, "
                     f"got {model_config.depthwise_impl!r}")
  if model_config.get("family", "efficientnet") != "efficientnet":
    # Table 3's other baselines, scaled by the same width/depth/resolution rules.
    from efficientnet_jax.models import baseline_models
    return baseline_models.create(model_config, size, classes), size
  network = spec_lib.build(size.width, size.depth,
                           drop_path_rate=model_config.drop_path_rate)
  if size.resolution < network.total_stride:
    raise ValueError(f"config.model.resolution {size.resolution} is smaller than the "
                     f"network's total stride {network.total_stride}")
  remat_policy = model_config.remat_policy
  if remat_policy not in REMAT_POLICIES:
    raise ValueError(f"config.model.remat_policy must be one of {REMAT_POLICIES}, got "
                     f"{remat_policy!r}")
  model = EfficientNet(
      network=network,
      num_classes=classes,
      dropout_rate=size.dropout_rate,
      padding=model_config.padding,
      depthwise_impl=model_config.depthwise_impl,
      dtype=jnp.dtype(model_config.dtype),
      remat=model_config.remat,
      remat_policy=remat_policy,
      bn_momentum=model_config.bn_momentum,
      bn_epsilon=model_config.bn_epsilon)
  return model, size
