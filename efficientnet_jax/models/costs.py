"""Size and cost of a network: parameters, multiply-adds, and XLA's own analysis.

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

from efficientnet_jax.models import spec as spec_lib


def count_params(model: nn.Module, resolution: int = 224) -> int:
  """Trainable parameter count from shapes only (`jax.eval_shape`: nothing is allocated)."""
  shapes = jax.eval_shape(model.init, jax.random.key(0),
                          jnp.zeros((1, resolution, resolution, 3), jnp.float32))
  return sum(leaf.size for leaf in jax.tree.leaves(shapes["params"]))


def _out_size(size: int, stride: int) -> int:
  return -(-size // stride)  # SAME padding: ceil(size / stride)


def multiply_adds(network: spec_lib.Network, resolution: int | tuple[int, int],
                  num_classes: int = 1000) -> int:
  """Analytic multiply-adds of one forward pass at `resolution` (square or (h, w))."""
  h, w = (resolution, resolution) if isinstance(resolution, int) else resolution
  h, w = _out_size(h, spec_lib.STEM_STRIDE), _out_size(w, spec_lib.STEM_STRIDE)
  total = h * w * 3 * 3 * 3 * network.stem_channels
  for b in network.blocks:
    c_exp = b.expanded_channels
    if b.expand_ratio != 1:
      total += h * w * b.in_channels * c_exp
    h, w = _out_size(h, b.stride), _out_size(w, b.stride)
    total += h * w * b.kernel * b.kernel * c_exp
    if b.se_channels:
      total += 2 * c_exp * b.se_channels
    total += h * w * c_exp * b.out_channels
  total += h * w * network.blocks[-1].out_channels * network.head_channels
  total += network.head_channels * num_classes
  return total


@dataclasses.dataclass(frozen=True)
class XlaCost:
  """What XLA reports for one compiled function."""

  flops: float                 # XLA counts a multiply-add as 2 FLOPs
  bytes_accessed: float
  temp_bytes: int              # scratch memory (activations saved for backward, etc.)
  argument_bytes: int
  output_bytes: int
  alias_bytes: int             # outputs that reuse donated argument buffers


def xla_cost(fn: Callable[..., Any], *args: Any, **jit_kwargs: Any) -> XlaCost:
  """Compile `fn(*args)` with jit (args may be `jax.ShapeDtypeStruct`s) and read its costs."""
  compiled = jax.jit(fn, **jit_kwargs).lower(*args).compile()
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


def forward_cost(model: nn.Module, resolution: int, batch_size: int = 1) -> XlaCost:
  """XLA's analysis of an eval-mode forward pass, without allocating weights."""
  images = jax.ShapeDtypeStruct((batch_size, resolution, resolution, 3), jnp.float32)
  variables = jax.eval_shape(model.init, jax.random.key(0), images)
  return xla_cost(lambda v, x: model.apply(v, x, train=False), variables, images)
