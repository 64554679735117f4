"""The first table to take on a newly lent accelerator: train and inference throughput of
B0, B4 and V2-S at the largest batch that fits, in bfloat16 and float32, with memory, MFU
and compile time, beside NVIDIA's published B0 figures.

The batch is the largest power of two (up to a cap) whose compiled step fits the device
by XLA's memory analysis (`training/memory_fit.py`, with its headroom): two compile-only
sizes give a linear estimate, and the chosen batch is compiled and checked before it runs.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import jax

from efficientnet_jax.research import benchmarking
from efficientnet_jax.training import memory_fit

VARIANTS = ("b0", "b4", "v2_s")
DTYPES = ("bfloat16", "float32")
# Images/s on one A100-80GB, from NVIDIA's DeepLearningExamples performance tables
# (EfficientNet-B0, automatic mixed precision). Keyed by (variant, mode).
ANCHORS = {
    ("b0", "train"): {"NVIDIA PyTorch AMP, A100": 2489, "NVIDIA TF2+XLA AMP, A100": 3454},
    ("b0", "inference"): {"NVIDIA PyTorch AMP, A100": 10239},
}


@dataclasses.dataclass
class Row:
  variant: str
  dtype: str
  mode: str
  resolution: int
  batch_size: int
  images_per_second: float
  images_per_second_min: float
  images_per_second_max: float
  step_gib: float               # XLA's memory analysis of the compiled step
  device_peak_gib: float | None  # the allocator's peak so far in the process, if reported
  mfu: float
  compile_seconds: float


def step_bytes(variant: str, dtype: str, mode: str, batch: int, **sizes: Any) -> int:
  """XLA's memory figure of our compiled step at `batch` (compiled, not run).

  sizes: `benchmarking.benchmark_config`'s resolution, width, depth.
  """
  config = benchmarking.benchmark_config(variant, batch, dtype=dtype, **sizes)
  return memory_fit.step_bytes(benchmarking.ours(config, mode, compile_only=True).compiled)


def batch_that_fits(variant: str, dtype: str, mode: str, usable_bytes: float,
                    max_batch: int = 1024, **sizes: Any) -> int:
  """The largest power of two ≤ max_batch whose step fits `usable_bytes` per device."""
  small = jax.device_count()  # the global batch is split over the devices
  at_small = step_bytes(variant, dtype, mode, small, **sizes)
  if at_small > usable_bytes:
    raise memory_fit.MemoryWontFit(
        f"{variant} {mode} {dtype}: even batch {small} needs {at_small / 2**30:.2f} GiB per "
        f"device, {usable_bytes / 2**30:.2f} GiB usable")
  per_image = max(step_bytes(variant, dtype, mode, 2 * small, **sizes) - at_small, 1) / small
  estimate = small + (usable_bytes - at_small) / per_image
  batch = small
  while batch * 2 <= min(estimate, max_batch):
    batch *= 2
  while batch > small and step_bytes(variant, dtype, mode, batch, **sizes) > usable_bytes:
    batch //= 2  # the estimate was optimistic: halve until XLA's own figure fits
  return batch


def measure(variant: str, dtype: str, mode: str, batch: int, peak_flops: float,
            warmup: int, reps: int, **sizes: Any) -> Row:
  """Throughput of ours at `batch`, timed over `reps` steps after `warmup`."""
  config = benchmarking.benchmark_config(variant, batch, dtype=dtype, **sizes)
  runner = benchmarking.ours(config, mode)
  first, times = benchmarking.time_in_turns([runner], warmup, reps)
  result, = benchmarking.summarise([runner], first, times, config, peak_flops)
  stats = jax.local_devices()[0].memory_stats() or {}
  peak = stats.get("peak_bytes_in_use")
  return Row(variant, dtype, mode, result.resolution, batch, result.images_per_second,
             result.images_per_second_min, result.images_per_second_max,
             memory_fit.step_bytes(runner.compiled) / 2**30,
             None if peak is None else peak / 2**30, result.mfu, runner.compile_seconds)


def to_markdown(rows: Sequence[Row]) -> str:
  header = ("| variant | mode | dtype | res | batch | img/s median [min–max] | step GiB (XLA) | "
            "device peak GiB (so far) | MFU | compile s | published (img/s) |")
  lines = [header, "|" + "---|" * (header.count("|") - 1)]
  for r in rows:
    anchors = "; ".join(f"{name} {rate:,}: ours {r.images_per_second / rate:.2f}×"
                        for name, rate in ANCHORS.get((r.variant, r.mode), {}).items())
    peak = "" if r.device_peak_gib is None else f"{r.device_peak_gib:.2f}"
    lines.append(
        f"| {r.variant} | {r.mode} | {r.dtype} | {r.resolution} | {r.batch_size} | "
        f"{r.images_per_second:,.1f} [{r.images_per_second_min:,.1f}–"
        f"{r.images_per_second_max:,.1f}] | {r.step_gib:.2f} | {peak} | {r.mfu:.1%} | "
        f"{r.compile_seconds:.1f} | {anchors} |")
  return "\n".join(lines)
