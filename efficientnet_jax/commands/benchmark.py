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
  # Batch-1 latency (ms, median and spread) of B0, V2-B0, V2-S and Lite0 beside timm
  efficientnet-benchmark --variant=b0,v2_b0,v2_s,lite0 --modes=latency --peer=timm --reps=20
  # bfloat16 beside float32, in turns
  efficientnet-benchmark --variant=b0 --dtype=float32 --dtype=bfloat16
  # XLA CPU back-end options, each one more "ours" timed in turns with the default one
  efficientnet-benchmark --variant=b0 --modes=train --peer=timm --reps=12 \\
      --compiler_options=onednn:xla_cpu_use_onednn=true \\
      --compiler_options=xnn_dot:xla_cpu_experimental_xnn_fusion_type=LIBRARY_FUSION_TYPE_DOT
  # An XLA flag's effect (set before JAX starts; separate runs vary more than turns do)
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
_DTYPE = flags.DEFINE_multi_enum("dtype", ["float32"], ["float32", "bfloat16"],
                                 "Our compute dtype; repeat for one of ours each (peers "
                                 "always run float32).")
_DEPTHWISE = flags.DEFINE_enum("depthwise_impl", "auto", ["auto", "xla", "shift_add"],
                               "Our depthwise convolution.")
_REMAT = flags.DEFINE_list("remat_policy", ["none"], "none, full, save_conv: one of ours each.")
_MODES = flags.DEFINE_list("modes", ["inference", "train"], "inference, train, latency "
                           "(inference at batch 1, in milliseconds).")
_PEER = flags.DEFINE_list("peer", [], "keras, timm: the same variant in those libraries.")
_REPS = flags.DEFINE_integer("reps", 5, "Timed rounds.")
_WARMUP = flags.DEFINE_integer("warmup", 2, "Untimed steps per system first.")
_COMPILE_ONLY = flags.DEFINE_bool("compile_only", False, "Only XLA's analysis of our train "
                                  "step (memory, FLOPs); nothing runs.")
_JSON = flags.DEFINE_string("json_out", None, "Write every figure here as JSON.")
_XLA_FLAGS = flags.DEFINE_string("xla_flags", "", "Appended to XLA_FLAGS before JAX starts.")
_COMPILER_OPTIONS = flags.DEFINE_multi_string(
    "compiler_options", [], "LABEL:KEY=VALUE[;KEY=VALUE]: one more of ours, compiled with "
    "these XLA options (DebugOptions fields), timed in turns with the others; repeat.")
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

  options = dict(map(_compiler_options, _COMPILER_OPTIONS.value))

  def configs(variant, batch_size=_BATCH.value):
    return [(" ".join(["ours"] + (["bf16"] if dtype == "bfloat16" else [])
                      + ([f"remat={p}"] if p else [])),
             benchmarking.benchmark_config(variant, batch_size, _RESOLUTION.value, dtype,
                                           _DEPTHWISE.value, p))
            for dtype in _DTYPE.value for p in policies]

  def ours(variant, batch_size, mode):
    """Our runners: one per dtype and remat policy, then one per --compiler_options."""
    runners = [benchmarking.ours(config, mode, system)
               for system, config in configs(variant, batch_size)]
    _, reference = configs(variant, batch_size)[0]
    return runners + [benchmarking.ours(reference, mode, f"ours {label}", compiler_options=o)
                      for label, o in options.items()]

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
    peak = {dtype: benchmarking.matmul_peak_flops(dtype=dtype) for dtype in _DTYPE.value}
    environment["matmul_peak_flops"] = peak
    print("matmul peak: " + ", ".join(f"{p / 1e9:.0f} GFLOP/s ({d})" for d, p in peak.items()),
          flush=True)
    results = []
    for variant in _VARIANT.value:
      for mode in _MODES.value:
        batch_size = 1 if mode == benchmarking.LATENCY else _BATCH.value
        reference = configs(variant, batch_size)[0][1]
        resolution = benchmarking.input_resolution(reference)
        runners = ours(variant, batch_size, mode)
        runners += [benchmarking.peer(name, variant, resolution, batch_size, mode)
                    for name in _PEER.value]
        first, times = benchmarking.time_in_turns(runners, _WARMUP.value, _REPS.value)
        results += benchmarking.summarise(runners, first, times, reference, peak)
        print(_table(results[-len(runners):]), flush=True)
    output["results"] = [dataclasses.asdict(r) for r in results]
    print("\n" + _table(results))
  environment["load_average_end"] = os.getloadavg()
  print(f"\nload average start {environment['load_average_start']}, "
        f"end {environment['load_average_end']} ({os.cpu_count()} CPUs)")
  if _JSON.value:
    Path(_JSON.value).write_text(json.dumps(output, indent=1))


def _compiler_options(text: str) -> tuple[str, dict[str, bool | int | str]]:
  """"LABEL:KEY=VALUE;KEY=VALUE" → (label, {key: value}); true/false and integers parsed."""
  label, sep, pairs = text.partition(":")
  items = [pair.partition("=") for pair in pairs.split(";") if pair]
  if not sep or not label or not items or any(not k or not eq for k, eq, _ in items):
    raise app.UsageError(f"--compiler_options={text!r}: expected LABEL:KEY=VALUE[;KEY=VALUE]")

  def parse(value: str) -> bool | int | str:
    if value.lower() in ("true", "false"):
      return value.lower() == "true"
    return int(value) if value.lstrip("-").isdigit() else value
  return label, {key: parse(value) for key, _, value in items}


def _table(results):
  """Throughput rows, then latency rows in milliseconds."""
  from efficientnet_jax.research import benchmarking
  throughput = [r for r in results if r.mode != benchmarking.LATENCY]
  latency = [r for r in results if r.mode == benchmarking.LATENCY]
  return "\n\n".join(([benchmarking.to_markdown(throughput)] if throughput else [])
                     + ([benchmarking.latency_markdown(latency)] if latency else []))


if __name__ == "__main__":
  app.run(main)
