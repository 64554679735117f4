"""Benchmark our train step and inference beside Keras and timm, on whatever backend JAX has.

  # B0, fp32, batch 32 at 224: ours vs Keras/TF and timm/PyTorch, inference and train
  efficientnet-benchmark --variant=b0 --batch_size=32 --peer=keras,timm \\
      --json_out=/tmp/bench_b0.json
  # Remat overhead, timed in turns in one process (no remat / full / save_conv)
  efficientnet-benchmark --variant=b7 --resolution=224 --batch_size=2 --modes=train \\
      --remat_policy=none,full,save_conv
  # XLA's train-step temp memory per image, compile only (b7 at 600 compiles for minutes)
  efficientnet-benchmark --compile_only --variant=b0,b4,b7 --batch_size=2 \\
      --remat_policy=none,full,save_conv
  # Exported artifacts (efficientnet-export) in their runtimes, beside ours and timm:
  # batch-1 latency and batch-32 throughput, in turns
  efficientnet-benchmark --variant=b0 --peer=timm \\
      --exported=serving/b0_stablehlo,serving/b0_savedmodel,serving/b0_tflite,serving/b0_onnx
  # An XLA flag's effect (set before JAX starts)
  efficientnet-benchmark --variant=b0 --xla_flags=--xla_cpu_multi_thread_eigen=false

Figures: images/s (median and min–max over `--reps` rounds, systems timed in turns),
process CPU ms per image with its kernel (system) part, compile time, XLA's FLOPs and
memory analysis of our executables, peak process memory (cumulative over the run: measure
big models in their own run), and MFU against a matmul peak measured in the same run.
Peers run float32. On a GPU, let JAX and the peers share it:
XLA_PYTHON_CLIENT_PREALLOCATE=false efficientnet-benchmark --peer=keras,timm

On Linux the script re-executes itself once with the glibc malloc tunables that
efficientnet_jax.main uses (`--fast_malloc`, default on; they apply to the peers too):
by default XLA's CPU buffers are mapped afresh every step and the page faults cost a
large share of the step (`efficientnet_jax/host_memory.py`).
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

from absl import app, flags


_VARIANT = flags.DEFINE_list("variant", ["b0"], "Variants (b0 … b8, l2).")
_BATCH = flags.DEFINE_integer("batch_size", 32, "Global batch size.")
_RESOLUTION = flags.DEFINE_integer("resolution", None, "Input size; default: the variant's.")
_DTYPE = flags.DEFINE_enum("dtype", "float32", ["float32", "bfloat16"],
                           "Our compute dtype (peers always run float32).")
_DEPTHWISE = flags.DEFINE_enum("depthwise_impl", "auto", ["auto", "xla", "shift_add"],
                               "Our depthwise convolution.")
_REMAT = flags.DEFINE_list("remat_policy", ["none"], "none, full, save_conv: one of ours each.")
_MODES = flags.DEFINE_list("modes", ["inference", "train"], "inference, train.")
_PEER = flags.DEFINE_list("peer", [], "keras, timm: the same variant in those libraries.")
_REPS = flags.DEFINE_integer("reps", 5, "Timed rounds.")
_WARMUP = flags.DEFINE_integer("warmup", 2, "Untimed steps per system first.")
_COMPILE_ONLY = flags.DEFINE_bool("compile_only", False, "Only XLA's analysis of our train "
                                  "step (memory, FLOPs); nothing runs.")
_JSON = flags.DEFINE_string("json_out", None, "Write every figure here as JSON.")
_XLA_FLAGS = flags.DEFINE_string("xla_flags", "", "Appended to XLA_FLAGS before JAX starts.")
_EXPORTED = flags.DEFINE_list("exported", [], "efficientnet-export output directories: time "
                              "them (batch 1 and 32) beside ours and --peer, then stop.")
_FAST_MALLOC = flags.DEFINE_bool("fast_malloc", True, "Linux: re-run with the glibc "
                                 "tunables of efficientnet_jax/host_memory.py.")


def main(argv):
  del argv
  if _FAST_MALLOC.value:
    from efficientnet_jax import host_memory
    host_memory.reexec_with_fast_malloc()
  if _XLA_FLAGS.value:  # read when the backend starts, which is below
    os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {_XLA_FLAGS.value}".strip()
  if "timm" in _PEER.value:
    import timm  # noqa: F401  before TensorFlow (benchmarking imports it): else a segfault
  import jax
  from efficientnet_jax.research import benchmarking

  environment = {
      "backend": jax.default_backend(), "devices": [str(d) for d in jax.devices()],
      "jax": jax.__version__, "cpu_count": os.cpu_count(),
      **{k: os.environ.get(k, "") for k in ("XLA_FLAGS", "GLIBC_TUNABLES",
                                            "OPENBLAS_CORETYPE")},
      "load_average_start": os.getloadavg(),
  }
  policies = [None if p == "none" else p for p in _REMAT.value]

  def configs(variant):
    return [("ours" if p is None else f"ours remat={p}", benchmarking.benchmark_config(
        variant, _BATCH.value, _RESOLUTION.value, _DTYPE.value, _DEPTHWISE.value, p))
        for p in policies]

  output: dict = {"environment": environment}
  if _EXPORTED.value:
    from efficientnet_jax.export import benchmark as export_benchmark
    rows = export_benchmark.run(_EXPORTED.value, _VARIANT.value[0], _PEER.value,
                                _WARMUP.value, _REPS.value)
    output["exported"] = rows
    print("\n" + export_benchmark.to_markdown(rows))
  elif _COMPILE_ONLY.value:
    rows = []
    for variant in _VARIANT.value:
      for system, config in configs(variant):
        rows.append(benchmarking.memory_row(config, system))
        print(benchmarking.memory_markdown(rows[-1:]).splitlines()[-1], flush=True)
    output["memory"] = rows
    print("\n" + benchmarking.memory_markdown(rows))
  else:
    peak = benchmarking.matmul_peak_flops(dtype=_DTYPE.value)
    environment["matmul_peak_flops"] = peak
    print(f"matmul peak: {peak / 1e9:.0f} GFLOP/s ({_DTYPE.value})", flush=True)
    results = []
    for variant in _VARIANT.value:
      reference = configs(variant)[0][1]
      resolution = benchmarking.input_resolution(reference)
      for mode in _MODES.value:
        runners = [benchmarking.ours(config, mode, system)
                   for system, config in configs(variant)]
        runners += [benchmarking.peer(name, variant, resolution, _BATCH.value, mode)
                    for name in _PEER.value]
        first, times = benchmarking.time_in_turns(runners, _WARMUP.value, _REPS.value)
        results += benchmarking.summarise(runners, first, times, reference, peak)
        print(benchmarking.to_markdown(results[-len(runners):]), flush=True)
    output["results"] = [dataclasses.asdict(r) for r in results]
    print("\n" + benchmarking.to_markdown(results))
  environment["load_average_end"] = os.getloadavg()
  print(f"\nload average start {environment['load_average_start']}, "
        f"end {environment['load_average_end']} ({os.cpu_count()} CPUs)")
  if _JSON.value:
    Path(_JSON.value).write_text(json.dumps(output, indent=1))


if __name__ == "__main__":
  app.run(main)
