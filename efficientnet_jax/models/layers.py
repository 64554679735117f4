"""Convolution building blocks shared by the EfficientNet modules.

Padding follows TensorFlow's SAME rule by default (extra row/column at the end for
strided convolutions) or PyTorch's symmetric `k // 2` rule for weights trained there.
The depthwise convolution has two interchangeable implementations: XLA's grouped
convolution, and an unrolled sum of k·k shifted multiply-adds that XLA fuses into one
loop, with a hand-written gradient (autodiff of the slices gives k·k full-size buffers).
On CPU the grouped convolution is many times slower, and 1×1 convolutions run faster as
plain matrix products; "auto" picks per backend.
"""

from __future__ import annotations

import functools
from typing import Any, Literal, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

Padding = Literal["same", "symmetric"]
DepthwiseImpl = Literal["auto", "xla", "shift_add"]
PADDINGS = ("same", "symmetric")
DEPTHWISE_IMPLS = ("auto", "xla", "shift_add")


def conv_kernel_init(key: jax.Array, shape: Sequence[int], dtype: Any = jnp.float32):
  """TF reference init: N(0, sqrt(2 / fan_out)), fan_out = kh·kw·out_channels."""
  kh, kw, _, out_channels = shape
  return jax.random.normal(key, shape, dtype) * np.sqrt(2.0 / (kh * kw * out_channels))


def depthwise_kernel_init(key: jax.Array, shape: Sequence[int], dtype: Any = jnp.float32):
  """Depthwise fan_out is kh·kw (one output per group); Flax's default would add ×C."""
  kh, kw = shape[:2]
  return jax.random.normal(key, shape, dtype) * np.sqrt(2.0 / (kh * kw))


def dense_kernel_init(key: jax.Array, shape: Sequence[int], dtype: Any = jnp.float32):
  """TF reference init for the classifier: U(±1/sqrt(out_features))."""
  limit = 1.0 / np.sqrt(shape[-1])
  return jax.random.uniform(key, shape, dtype, -limit, limit)


def explicit_padding(size: int, kernel: int, stride: int,
                     padding: Padding) -> tuple[int, int]:
  """(before, after) padding of one spatial dimension."""
  if padding == "symmetric":
    return (kernel - 1) // 2, (kernel - 1) // 2
  if padding == "same":
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2
  raise ValueError(f"padding must be one of {PADDINGS}, got {padding!r}")


def resolve_depthwise_impl(impl: DepthwiseImpl) -> str:
  if impl not in DEPTHWISE_IMPLS:
    raise ValueError(f"depthwise implementation must be one of {DEPTHWISE_IMPLS}, got {impl!r}")
  if impl == "auto":
    return "shift_add" if jax.default_backend() == "cpu" else "xla"
  return impl


def pointwise_as_dot(lhs: jax.Array, rhs: jax.Array, *args: Any,
                     precision: Any = None, **kwargs: Any) -> jax.Array:
  """A 1×1, stride-1 NHWC convolution as one matrix product over the channel axis.

  Drop-in for `lax.conv_general_dilated` in `nn.Conv` (the window arguments are all
  trivial for such a kernel). XLA CPU lowers it to a GEMM without the layout copies its
  convolution path adds, forward and backward.
  """
  del args, kwargs
  # 2-D operands: with (N, H, W) contracted as three dimensions, XLA's kernel gradient
  # materialises the output gradient transposed, a slow full-size copy.
  kernel = rhs.reshape(rhs.shape[-2:])
  out = jnp.dot(lhs.reshape(-1, kernel.shape[0]), kernel, precision=precision)
  return out.reshape(*lhs.shape[:-1], kernel.shape[1])


class Conv(nn.Module):
  """A bias-free (by default) convolution with the reference init and padding rule."""

  features: int
  kernel: int = 1
  stride: int = 1
  padding: Padding = "same"
  use_bias: bool = False
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    pads = [explicit_padding(x.shape[i], self.kernel, self.stride, self.padding)
            for i in (1, 2)]
    as_dot = self.kernel == 1 and self.stride == 1 and jax.default_backend() == "cpu"
    return nn.Conv(self.features, (self.kernel, self.kernel), strides=self.stride,
                   padding=pads, use_bias=self.use_bias, dtype=self.dtype,
                   kernel_init=conv_kernel_init,
                   conv_general_dilated=pointwise_as_dot if as_dot else None,
                   name="conv")(x)


class DepthwiseConv(nn.Module):
  """k×k depthwise convolution, depth multiplier 1, no bias. Kernel shape (k, k, 1, C)."""

  kernel: int
  stride: int = 1
  padding: Padding = "same"
  impl: DepthwiseImpl = "auto"
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    channels = x.shape[-1]
    k, s = self.kernel, self.stride
    w = self.param("kernel", depthwise_kernel_init, (k, k, 1, channels), jnp.float32)
    x, w = x.astype(self.dtype), w.astype(self.dtype)
    pads = [explicit_padding(x.shape[i], k, s, self.padding) for i in (1, 2)]
    if resolve_depthwise_impl(self.impl) == "xla":
      return jax.lax.conv_general_dilated(
          x, w, window_strides=(s, s), padding=pads,
          dimension_numbers=("NHWC", "HWIO", "NHWC"), feature_group_count=channels)
    return shift_add_depthwise(x, w[:, :, 0, :], s, tuple(pads))


def _windows(x: jax.Array, k: int, stride: int, out_h: int, out_w: int):
  """The k·k strided windows of padded `x` that tap (i, j) of the kernel multiplies."""
  for i in range(k):
    for j in range(k):
      yield i, j, jax.lax.slice(
          x, (0, i, j, 0),
          (x.shape[0], i + (out_h - 1) * stride + 1, j + (out_w - 1) * stride + 1, x.shape[3]),
          (1, stride, stride, 1))


def _shift_add(x_padded: jax.Array, w: jax.Array, stride: int, out_h: int,
               out_w: int) -> jax.Array:
  out = None
  for i, j, window in _windows(x_padded, w.shape[0], stride, out_h, out_w):
    term = window * w[i, j]
    out = term if out is None else out + term
  return out


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def shift_add_depthwise(x: jax.Array, w: jax.Array, stride: int,
                        pads: tuple[tuple[int, int], tuple[int, int]]) -> jax.Array:
  """Depthwise convolution as Σ_ij shifted(x)·w[i, j]: elementwise work XLA fuses well.

  x: (N, H, W, C); w: (k, k, C); pads: ((top, bottom), (left, right)).
  """
  k = w.shape[0]
  x = jnp.pad(x, ((0, 0), pads[0], pads[1], (0, 0)))
  return _shift_add(x, w, stride, (x.shape[1] - k) // stride + 1,
                    (x.shape[2] - k) // stride + 1)


def _shift_add_fwd(x, w, stride, pads):
  return shift_add_depthwise(x, w, stride, pads), (x, w)


def _shift_add_bwd(stride, pads, residuals, g):
  x, w = residuals
  k = w.shape[0]
  (top, _), (left, _) = pads
  _, height, width, _ = x.shape
  out_h, out_w = g.shape[1:3]
  # Input gradient: the transposed convolution, i.e. the same shift-add over the
  # stride-dilated output gradient with the flipped kernel; one fused loop.
  zero = jnp.zeros((), g.dtype)
  g_dilated = jax.lax.pad(g, zero, (
      (0, 0, 0),
      (k - 1 - top, height + top - (out_h - 1) * stride - 1, stride - 1),
      (k - 1 - left, width + left - (out_w - 1) * stride - 1, stride - 1),
      (0, 0, 0)))
  dx = _shift_add(g_dilated, w[::-1, ::-1], 1, height, width)
  # Kernel gradient: Σ_{n,h,w} window_ij · g for all k·k taps in ONE variadic reduction,
  # so x and g are read once instead of k·k times. Per-example partial sums (float32)
  # keep the accumulation short, then sum over the batch.
  x_padded = jnp.pad(x, ((0, 0), pads[0], pads[1], (0, 0))).astype(jnp.float32)
  g32 = g.astype(jnp.float32)
  products = [window * g32 for _, _, window in _windows(x_padded, k, stride, out_h, out_w)]
  sums = jax.lax.reduce(products, [jnp.zeros((), jnp.float32)] * len(products),
                        lambda a, b: [u + v for u, v in zip(a, b)], (1, 2))
  dw = jnp.stack(sums).sum(axis=1).reshape(w.shape).astype(w.dtype)
  return dx.astype(x.dtype), dw


shift_add_depthwise.defvjp(_shift_add_fwd, _shift_add_bwd)
