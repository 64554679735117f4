"""Batch-1 inference latency on this machine (the paper's Table 4 idea): EfficientNet-B0/B1
against ResNet-50/152, all through one code path: jit, warm-up calls, median of N.

  efficientnet-latency                                # b0, b1, resnet50, resnet152
  efficientnet-latency --models=b0,mobilenetv2 --repeats=50
  taskset -c 0 efficientnet-latency                   # one core, like the paper

Models: any name the registry knows (`efficientnet_jax.models.registry.lookup`):
EfficientNet variants (b0 … l2, at their resolution) and the Table 3 baselines (at 224).
Weights are random: latency does not depend on them. Don't set cheap-compile XLA_FLAGS
here: they slow the compiled code down.
"""

from __future__ import annotations

import os
import statistics
import time

from absl import app, flags
import flax.linen as nn

from efficientnet_jax.models import convnet, costs, registry
from efficientnet_jax.research import paper_tables

_MODELS = flags.DEFINE_list("models", ["b0", "b1", "resnet50", "resnet152"],
                            "EfficientNet variants and/or baselines to time.")
_REPEATS = flags.DEFINE_integer("repeats", 20, "Timed calls per model (the median is shown).")
_WARMUP = flags.DEFINE_integer("warmup", 3, "Untimed calls after compiling.")
_DEPTHWISE = flags.DEFINE_enum("depthwise_impl", "auto", ["auto", "xla", "shift_add"],
                               "Depthwise convolution implementation (EfficientNet, MobileNets).")
_CSV = flags.DEFINE_bool("csv", False, "Print CSV instead of markdown.")

# Paper Table 4: seconds per image, batch 1, one core of a Xeon E5-2690.
PAPER_LATENCY_S = {"b1": 0.098, "resnet152": 0.554, "b7": 3.1}


def build(name: str) -> tuple[nn.Module, int, int, int]:
  """(module, resolution, params, multiply-adds) for a variant or baseline name."""
  try:
    family, variant = registry.lookup(name)
  except ValueError as e:
    raise ValueError(f"--models: {e}") from None
  size = family.variants[variant]
  network = registry.variant_network(variant, family.name)
  module = convnet.ConvNet(network, dropout_rate=size.dropout_rate,
                           depthwise_impl=_DEPTHWISE.value)
  return (module, size.resolution, costs.count_params(network),
          costs.multiply_adds(network, size.resolution))


def latency(module: nn.Module, resolution: int, warmup: int, repeats: int) -> tuple[float, float]:
  """(median seconds per batch-1 call, compile seconds) of the jitted eval forward pass."""
  import jax
  images = jax.random.normal(jax.random.key(0), (1, resolution, resolution, 3))
  variables = jax.jit(module.init)(jax.random.key(1), images)
  forward = jax.jit(lambda v, x: module.apply(v, x, train=False))
  start = time.perf_counter()
  forward(variables, images).block_until_ready()
  compile_s = time.perf_counter() - start
  for _ in range(warmup):
    forward(variables, images).block_until_ready()
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    forward(variables, images).block_until_ready()
    times.append(time.perf_counter() - start)
  return statistics.median(times), compile_s


def main(argv):
  del argv
  if _REPEATS.value < 1 or _WARMUP.value < 0:
    raise ValueError(f"--repeats must be >= 1 and --warmup >= 0, got {_REPEATS.value}, "
                     f"{_WARMUP.value}")
  models = {name: build(name) for name in _MODELS.value}  # bad names fail before timing
  import jax
  rows, measured = [], {}
  for name, (module, resolution, params, macs) in models.items():
    median, compile_s = latency(module, resolution, _WARMUP.value, _REPEATS.value)
    measured[name] = median
    paper = PAPER_LATENCY_S.get(name)
    rows.append([name, resolution, f"{params / 1e6:.1f}M", f"{macs / 1e9:.2f}",
                 f"{1000 * median:.1f}", f"{compile_s:.1f}",
                 "" if paper is None else f"{1000 * paper:.0f}"])
  reference = measured.get("resnet152")
  header = ["model", "resolution", "params", "multiply-adds (B)", "latency (ms, median)",
            "compile (s)", "paper latency (ms)"]
  if reference:
    header.append("speedup vs resnet152")
    for row, name in zip(rows, models):
      row.append(f"{reference / measured[name]:.1f}x")
  fmt = paper_tables.to_csv if _CSV.value else paper_tables.to_markdown
  print(f"batch 1, {jax.default_backend()} ({os.cpu_count()} cores, load average "
        f"{os.getloadavg()[0]:.1f}), median of {_REPEATS.value} after {_WARMUP.value} "
        f"warm-up calls\n")
  print(fmt(header, rows))


if __name__ == "__main__":
  app.run(main)
