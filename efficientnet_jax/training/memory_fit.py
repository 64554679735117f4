"""Will the train step fit in memory? Asked of XLA before the first step, not learnt from an
out-of-memory kill or a RESOURCE_EXHAUSTED in the middle of the first batch.

The compiled step's memory analysis (arguments + outputs − donated aliases + temporaries,
per device) is compared with what a device has: its allocator's limit on GPU/TPU, the
host's available memory on CPU (shared by all local CPU devices). When it does not fit,
`MemoryWontFit` gives the figures and what would fit: the largest batch by a linear
estimate less 5% (the state's share is fixed, the rest grows with the batch; on the tiny
digits model XLA's figure at the plain estimate came out 0.6% above it), and the memory
the same batch would need with each rematerialisation policy and with bfloat16, compiled
(not run) to get XLA's own figure.
"""

from __future__ import annotations

import os
from typing import Callable

import jax
import ml_collections

GiB = 2**30
HEADROOM = 0.9  # leave a tenth for the input pipeline, the runtime and fragmentation


class MemoryWontFit(ValueError):
  """The train step needs more memory than the device has (figures and fixes inside)."""


def step_bytes(compiled: jax.stages.Compiled) -> int:
  """Peak memory of one call of `compiled` per device, by XLA's memory analysis."""
  m = compiled.memory_analysis()
  return (m.argument_size_in_bytes + m.output_size_in_bytes - m.alias_size_in_bytes
          + m.temp_size_in_bytes + m.generated_code_size_in_bytes)


def available_bytes() -> tuple[int, str]:
  """(bytes one device can use, what they are): the allocator's limit of an accelerator,
  or on CPU the host's available memory shared by its local devices."""
  device = jax.local_devices()[0]
  stats = device.memory_stats() if device.platform != "cpu" else None
  if stats and stats.get("bytes_limit"):
    return int(stats["bytes_limit"]), f"{device.device_kind} memory"
  available = _host_available_bytes()
  return available // jax.local_device_count(), (
      "host memory available" + (f" / {jax.local_device_count()} CPU devices"
                                 if jax.local_device_count() > 1 else ""))


def _host_available_bytes() -> int:
  try:
    with open("/proc/meminfo") as f:
      fields = dict(line.split(":", 1) for line in f)
    return int(fields["MemAvailable"].split()[0]) * 1024
  except (OSError, KeyError, ValueError):  # not Linux: all physical memory
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def check(compiled: jax.stages.Compiled, config: ml_collections.ConfigDict, *,
          state_bytes: int, image_size: int,
          compile_variant: Callable[[dict[str, object]], jax.stages.Compiled]) -> int:
  """The step's bytes per device when they fit, else `MemoryWontFit` with the fixes.

  `compile_variant({"model.remat": True, ...})` compiles the same step with those config
  values (only called when the step does not fit); `state_bytes` is the train state's size
  per device, the share of the step that does not grow with the batch.
  """
  needed = step_bytes(compiled)
  available, what = available_bytes()
  usable = int(available * HEADROOM)
  if needed <= usable:
    return needed
  batch = config.batch_size
  per_image = max(needed - state_bytes, 1) / batch
  devices = jax.device_count()
  # XLA's temporaries grow a little faster than the batch: 5% below the linear estimate.
  largest = int(0.95 * (usable - state_bytes) / per_image) // devices * devices
  fixes = []
  if largest >= devices:
    fixes.append(f"--config.batch_size={largest} (about {_gib(state_bytes + per_image * largest)}"
                 f"; scale the learning rate with it, see config.optimizer.base_batch_size)")
  else:
    fixes.append("no batch size fits: the state alone takes "
                 f"{_gib(state_bytes)}")
  variants = []
  if not config.model.remat:
    variants += [({"model.remat": True, "model.remat_policy": policy},
                  f"--config.model.remat=True --config.model.remat_policy={policy}")
                 for policy in ("full", "save_conv")]
  if config.model.dtype != "bfloat16":
    variants.append(({"model.dtype": "bfloat16"}, "--config.model.dtype=bfloat16"))
  for overrides, flags in variants:
    variant_bytes = step_bytes(compile_variant(overrides))
    verdict = "fits" if variant_bytes <= usable else "does not fit either"
    fixes.append(f"{flags}: {_gib(variant_bytes)} at batch {batch} ({verdict})")
  raise MemoryWontFit(
      f"the train step at config.batch_size={batch} and {image_size}x{image_size} images "
      f"needs {_gib(needed)} per device (XLA's memory analysis), but {what} is "
      f"{_gib(available)} (usable: {_gib(usable)}). What would fit:\n  " + "\n  ".join(fixes))


def _gib(num_bytes: float) -> str:
  return f"{num_bytes / GiB:.2f} GiB"
