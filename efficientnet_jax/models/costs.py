"""The one cost model: parameters and multiply-adds of a `Network`, and XLA's own analysis.

`count_params` and `multiply_adds` are arithmetic on the block list, per block kind, so a
table, a sweep of dozens of sizes or a latency report costs nothing to compute;
`count_module_params` counts what a Flax module really creates (shapes only) and is
what the tests check the arithmetic against.

`multiply_adds` counts what the paper calls FLOPs: one multiply-add per weight use in
the convolutions and the classifier (BN, activations, pooling and the SE gating are
elementwise and left out, as in the paper's Table 2).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from efficientnet_jax.models import architecture
from efficientnet_jax.models.architecture import BOTTLENECK, FUSED_MBCONV, MBCONV, Network


def _conv_bn(fan_in: int, out: int) -> int:
  """A bias-free convolution and the scale and bias of its BatchNorm."""
  return fan_in * out + 2 * out


def count_params(network: Network, num_classes: int = 1000) -> int:
  """Trainable parameters from the block list alone (convs, BN scale and bias, SE, FC)."""
  total = _conv_bn(network.architecture.stem_kernel**2 * 3, network.stem_channels)
  for b in network.blocks:
    if b.kind == BOTTLENECK:
      total += _conv_bn(b.in_channels, b.mid_channels)
      total += _conv_bn(b.kernel**2 * b.mid_channels, b.mid_channels)
      total += _conv_bn(b.mid_channels, b.out_channels)
      if b.has_projection:
        total += _conv_bn(b.in_channels, b.out_channels)
      continue
    if b.kind == FUSED_MBCONV and not b.has_expand_conv:  # one k×k conv
      total += _conv_bn(b.kernel**2 * b.in_channels, b.out_channels)
      continue
    if b.kind == FUSED_MBCONV:
      total += _conv_bn(b.kernel**2 * b.in_channels, b.mid_channels)
    else:
      if b.has_expand_conv:
        total += _conv_bn(b.in_channels, b.mid_channels)
      total += _conv_bn(b.kernel**2, b.mid_channels)  # depthwise
    if b.se_channels:  # two 1×1 convs with bias
      total += (b.mid_channels + 1) * b.se_channels + (b.se_channels + 1) * b.mid_channels
    total += _conv_bn(b.mid_channels, b.out_channels)
  if network.head_channels:
    total += _conv_bn(network.blocks[-1].out_channels, network.head_channels)
  return total + (network.features + 1) * num_classes


def _out(size: int, stride: int) -> int:
  return -(-size // stride)  # SAME padding: ceil(size / stride)


def multiply_adds(network: Network, resolution: int | tuple[int, int],
                  num_classes: int = 1000) -> int:
  """Analytic multiply-adds of one forward pass at `resolution` (square or (h, w))."""
  arch = network.architecture
  h, w = (resolution, resolution) if isinstance(resolution, int) else resolution
  h, w = _out(h, architecture.STEM_STRIDE), _out(w, architecture.STEM_STRIDE)
  total = h * w * arch.stem_kernel**2 * 3 * network.stem_channels
  if arch.stem_pool:
    h, w = _out(h, 2), _out(w, 2)
  for b in network.blocks:
    in_pixels = h * w
    h, w = _out(h, b.stride), _out(w, b.stride)
    k2, mid = b.kernel**2, b.mid_channels
    if b.kind == BOTTLENECK:
      total += in_pixels * b.in_channels * mid
      total += h * w * (k2 * mid * mid + mid * b.out_channels)
      if b.has_projection:
        total += h * w * b.in_channels * b.out_channels
      continue
    if b.kind == FUSED_MBCONV:  # the k×k conv at the output size, then the 1×1
      total += h * w * k2 * b.in_channels * (mid if b.has_expand_conv else b.out_channels)
      if b.has_expand_conv:
        total += h * w * mid * b.out_channels
      total += 2 * mid * b.se_channels
      continue
    if b.has_expand_conv:
      total += in_pixels * b.in_channels * mid
    total += h * w * (k2 * mid + mid * b.out_channels)  # depthwise, then the 1×1
    if b.kind == MBCONV and b.se_channels:
      total += 2 * mid * b.se_channels
  if network.head_channels:
    total += h * w * network.blocks[-1].out_channels * network.head_channels
  return total + network.features * num_classes


def count_module_params(model: nn.Module, resolution: int = 224) -> int:
  """Trainable parameters a Flax module creates (`jax.eval_shape`: nothing is allocated)."""
  shapes = jax.eval_shape(model.init, jax.random.key(0),
                          jnp.zeros((1, resolution, resolution, 3), jnp.float32))
  return sum(leaf.size for leaf in jax.tree.leaves(shapes["params"]))


@dataclasses.dataclass(frozen=True)
class XlaCost:
  """What XLA reports for one compiled function."""

  flops: float                 # XLA counts a multiply-add as 2 FLOPs
  bytes_accessed: float
  temp_bytes: int              # scratch memory (activations saved for backward, etc.)
  argument_bytes: int
  output_bytes: int
  alias_bytes: int             # outputs that reuse donated argument buffers


def compiled_cost(compiled: Any) -> XlaCost:
  """`XlaCost` of an already compiled executable (`jax.jit(f).lower(...).compile()`)."""
  cost = compiled.cost_analysis()
  if isinstance(cost, (list, tuple)):  # older jax returned one dict per device
    cost = cost[0]
  memory = compiled.memory_analysis()
  return XlaCost(
      flops=float(cost.get("flops", 0.0)),
      bytes_accessed=float(cost.get("bytes accessed", 0.0)),
      temp_bytes=int(memory.temp_size_in_bytes),
      argument_bytes=int(memory.argument_size_in_bytes),
      output_bytes=int(memory.output_size_in_bytes),
      alias_bytes=int(memory.alias_size_in_bytes),
  )


def xla_cost(fn: Callable[..., Any], *args: Any, **jit_kwargs: Any) -> XlaCost:
  """Compile `fn(*args)` with jit (args may be `jax.ShapeDtypeStruct`s) and read its costs."""
  return compiled_cost(jax.jit(fn, **jit_kwargs).lower(*args).compile())


def forward_cost(model: nn.Module, resolution: int, batch_size: int = 1) -> XlaCost:
  """XLA's analysis of an eval-mode forward pass, without allocating weights."""
  images = jax.ShapeDtypeStruct((batch_size, resolution, resolution, 3), jnp.float32)
  variables = jax.eval_shape(model.init, jax.random.key(0), images)
  return xla_cost(lambda v, x: model.apply(v, x, train=False), variables, images)
