"""Exported artifacts timed in their own runtimes beside our jitted model and the peers.

`efficientnet-benchmark --exported=OUT1,OUT2 --peer=timm` runs this: for batch 1
(latency) and batch 32 (throughput) every system steps once per round, in turns, so that
a change of machine load hits all of them alike (`benchmarking.time_in_turns`). An
artifact with a fixed batch size runs only at its own size. Inputs are random images of
the artifact's input dtype at its resolution; our model runs at the same resolution.
"""

from __future__ import annotations

import json
import os
import statistics
from typing import Any, Sequence

import numpy as np

from efficientnet_jax.export import exporter
from efficientnet_jax.research import benchmarking

BATCH_SIZES = (1, 32)


def read_export(out: str) -> dict[str, Any]:
  with open(os.path.join(out, exporter.INFO_FILE)) as f:
    record = json.load(f)
  if "export" not in record:
    raise ValueError(f"{out}/{exporter.INFO_FILE} has no 'export' section: not an "
                     "efficientnet-export output")
  return record


def artifact_runner(out: str, batch_size: int) -> benchmarking.Runner:
  """One step = one call of the artifact on a batch, outputs materialised on the host."""
  record = read_export(out)
  export = record["export"]
  fmt, (_, height, width, channels) = export["format"], export["inputs"][0]["shape"]
  shape = (batch_size, height, width, channels)
  rng = np.random.RandomState(0)
  images = (rng.randint(0, 256, shape).astype(np.uint8)
            if export["inputs"][0]["dtype"] == "uint8" else
            rng.normal(size=shape).astype(np.float32))
  path = exporter.artifact_path(out, fmt)
  if fmt == "stablehlo":
    import jax
    with open(path, "rb") as f:
      call = jax.jit(jax.export.deserialize(bytearray(f.read())).call)
    step = lambda: jax.block_until_ready(call(images))  # noqa: E731
  elif fmt == "savedmodel":
    import tensorflow as tf
    serve = tf.saved_model.load(path).signatures["serving_default"]
    tensor = tf.constant(images)
    step = lambda: {k: v.numpy() for k, v in serve(images=tensor).items()}  # noqa: E731
  elif fmt == "tflite":
    from ai_edge_litert.interpreter import Interpreter
    runner = Interpreter(model_path=path, num_threads=os.cpu_count()).get_signature_runner()
    step = lambda: runner(images=images)  # noqa: E731
  else:
    import onnxruntime
    session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
    step = lambda: session.run(None, {"images": images})  # noqa: E731
  name = fmt + (" int8" if export.get("quantize") == "int8" else "")
  return benchmarking.Runner(system=f"{name} ({os.path.basename(out.rstrip('/'))})",
                             mode="inference", step=step)


def run(outs: Sequence[str], variant: str, peers: Sequence[str] = (), warmup: int = 2,
        reps: int = 5, batch_sizes: Sequence[int] = BATCH_SIZES) -> list[dict[str, Any]]:
  """Rows {system, batch_size, median_ms, images_per_second} per batch size."""
  records = {out: read_export(out) for out in outs}
  resolutions = {r["export"]["inputs"][0]["shape"][1] for r in records.values()}
  if len(resolutions) != 1:
    raise ValueError(f"the artifacts have different resolutions {sorted(resolutions)}")
  resolution = resolutions.pop()
  rows = []
  for batch in batch_sizes:
    runners = [artifact_runner(out, batch) for out, r in records.items()
               if r["export"]["batch_size"] in (None, batch)]
    config = benchmarking.benchmark_config(variant, batch, resolution)
    runners.append(benchmarking.ours(config, "inference", "ours (jit)"))
    runners += [benchmarking.peer(p, variant, resolution, batch, "inference") for p in peers]
    _, times = benchmarking.time_in_turns(runners, warmup, reps)
    for runner, rounds in zip(runners, times):
      median = statistics.median(wall for wall, _, _ in rounds)
      rows.append({"system": runner.system, "batch_size": batch,
                   "median_ms": 1000 * median, "images_per_second": batch / median})
  return rows


def to_markdown(rows: Sequence[dict[str, Any]]) -> str:
  lines = ["| system | batch | median ms/step | images/s |", "|---|---|---|---|"]
  lines += [f"| {r['system']} | {r['batch_size']} | {r['median_ms']:.1f} | "
            f"{r['images_per_second']:.1f} |" for r in rows]
  return "\n".join(lines)
