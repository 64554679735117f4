"""Where our step's time goes, beside timm's: per-operation time grouped by kind.

  # B0 and V2-S train steps, fp32, batch 32 at their resolution, beside timm
  efficientnet-profile --variant=b0,v2_s --batch_size=32 --modes=train --peer=timm
  # inference, or an XLA flag's effect on the breakdown
  efficientnet-profile --variant=b0 --modes=inference
  efficientnet-profile --variant=b0 --xla_flags=--xla_cpu_use_onednn=true

Categories: 1×1 conv, k×k conv, depthwise, BN, activation, squeeze-excite, optimizer/EMA,
other (how each operation is assigned: `efficientnet_jax/research/step_profile.py`).
Each system is warmed up, then profiled over --steps steps; the table gives milliseconds
per step and the share of the step's wall time.
"""

from __future__ import annotations

import os

from absl import app, flags

_VARIANT = flags.DEFINE_list("variant", ["b0"], "Our variant names (b0, v2_s, lite0, ...).")
_BATCH = flags.DEFINE_integer("batch_size", 32, "Batch size.")
_RESOLUTION = flags.DEFINE_integer("resolution", None, "Input size; default: the variant's.")
_DTYPE = flags.DEFINE_enum("dtype", "float32", ["float32", "bfloat16"], "Our compute dtype.")
_MODES = flags.DEFINE_list("modes", ["train"], "train, inference.")
_PEER = flags.DEFINE_list("peer", ["timm"], "timm, or nothing: profile ours alone.")
_STEPS = flags.DEFINE_integer("steps", 3, "Profiled steps per system.")
_WARMUP = flags.DEFINE_integer("warmup", 2, "Untimed steps per system first.")
_XLA_FLAGS = flags.DEFINE_string("xla_flags", "", "Appended to XLA_FLAGS before JAX starts.")


def main(argv):
  del argv
  if set(_PEER.value) - {"timm"}:
    raise app.UsageError(f"--peer: only timm can be profiled, got {_PEER.value}")
  from efficientnet_jax import host_memory
  host_memory.reexec_with_fast_malloc()  # the benchmark's settings: same step times
  if _XLA_FLAGS.value:
    os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {_XLA_FLAGS.value}".strip()
  if _PEER.value:
    import timm  # noqa: F401  before TensorFlow, which benchmarking imports
  from efficientnet_jax.research import benchmarking, step_profile

  for variant in _VARIANT.value:
    config = benchmarking.benchmark_config(variant, _BATCH.value, _RESOLUTION.value,
                                           _DTYPE.value)
    resolution = benchmarking.input_resolution(config)
    for mode in _MODES.value:
      ours = benchmarking.ours(config, mode)
      columns = {}
      for _ in range(_WARMUP.value):
        ours.step()
      columns["ours"] = step_profile.profile_ours(ours.step, ours.compiled.as_text(),
                                                  _STEPS.value)
      if _PEER.value:
        peer = benchmarking.peer("timm", variant, resolution, _BATCH.value, mode)
        for _ in range(_WARMUP.value):
          peer.step()
        columns[f"timm ({benchmarking.timm_name(variant)})"] = step_profile.profile_timm(
            peer.step, _STEPS.value)
      print(f"\n{variant} {mode}, batch {_BATCH.value}, {resolution}×{resolution}, "
            f"{_DTYPE.value}:\n" + step_profile.to_markdown(columns), flush=True)


if __name__ == "__main__":
  app.run(main)
