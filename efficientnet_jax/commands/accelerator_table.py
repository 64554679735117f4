"""What to run first on a newly lent GPU or TPU: the accelerator table.

  XLA_PYTHON_CLIENT_PREALLOCATE=false efficientnet-accelerator-table
  efficientnet-accelerator-table --variant=b0 --dtype=bfloat16 --modes=train
  # plan for a smaller device than this one (per-device memory in GiB)
  efficientnet-accelerator-table --memory_gib=40

For B0, B4 and V2-S (default), bfloat16 and float32, train and inference: img/s at the
largest power-of-two batch that fits, XLA's memory figure of the step and the device's
peak, MFU against a matmul peak measured in each dtype, compile time, and NVIDIA's
published B0 figures on one A100 with our ratio to them. Preallocation off lets the
device report its real peak. Runs on CPU too (the batch then fits host memory).
"""

from __future__ import annotations

from absl import app, flags

_VARIANT = flags.DEFINE_list("variant", ["b0", "b4", "v2_s"], "Variants.")
_DTYPE = flags.DEFINE_list("dtype", ["bfloat16", "float32"], "Compute dtypes.")
_MODES = flags.DEFINE_list("modes", ["train", "inference"], "train, inference.")
_RESOLUTION = flags.DEFINE_integer("resolution", None, "Input size; default: the variant's.")
_MAX_BATCH = flags.DEFINE_integer("max_batch", 1024, "Largest batch tried (global).")
_MEMORY_GIB = flags.DEFINE_float("memory_gib", None, "Per-device memory to fit in; default: "
                                 "what the device has (memory_fit's headroom applies).")
_WARMUP = flags.DEFINE_integer("warmup", 2, "Untimed steps first.")
_REPS = flags.DEFINE_integer("reps", 10, "Timed steps.")


def main(argv):
  del argv
  from efficientnet_jax import host_memory
  host_memory.reexec_with_fast_malloc()
  import jax
  from efficientnet_jax.research import accelerator_table, benchmarking
  from efficientnet_jax.training import memory_fit

  for dtype in _DTYPE.value:
    if dtype not in accelerator_table.DTYPES:
      raise app.UsageError(f"--dtype: {dtype!r} is not one of {accelerator_table.DTYPES}")
  if _MEMORY_GIB.value is not None:
    usable = _MEMORY_GIB.value * 2**30 * memory_fit.HEADROOM
  else:
    available, what = memory_fit.available_bytes()
    usable = available * memory_fit.HEADROOM
    print(f"{jax.devices()[0].device_kind} × {jax.device_count()}: {what} "
          f"{available / 2**30:.1f} GiB per device", flush=True)
  size = 2048 if jax.default_backend() == "cpu" else 8192  # big enough to reach the roof
  peaks = {d: benchmarking.matmul_peak_flops(size, d) for d in _DTYPE.value}
  print("matmul peak: " + ", ".join(f"{p / 1e12:.2f} TFLOP/s ({d})" for d, p in peaks.items()),
        flush=True)
  rows = []
  for variant in _VARIANT.value:
    for dtype in _DTYPE.value:
      for mode in _MODES.value:
        batch = accelerator_table.batch_that_fits(variant, dtype, mode, usable,
                                                  _MAX_BATCH.value, resolution=_RESOLUTION.value)
        rows.append(accelerator_table.measure(variant, dtype, mode, batch, peaks[dtype],
                                              _WARMUP.value, _REPS.value,
                                              resolution=_RESOLUTION.value))
        print(accelerator_table.to_markdown(rows[-1:]).splitlines()[-1], flush=True)
  print("\n" + accelerator_table.to_markdown(rows))


if __name__ == "__main__":
  app.run(main)
