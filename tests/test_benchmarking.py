"""The benchmark machinery on a tiny model: well-formed figures, XLA's own FLOP count."""

import dataclasses
import json

import jax
import pytest

from efficientnet_jax.research import benchmarking
from efficientnet_jax.models import costs
from efficientnet_jax.training import train_step


def tiny_config(remat_policy=None):
  return benchmarking.benchmark_config("b0", batch_size=2, resolution=32, width=0.25,
                                       depth=0.25, remat_policy=remat_policy)


@pytest.fixture(scope="module")
def measured():
  config = tiny_config()
  runners = [benchmarking.ours(config, mode) for mode in benchmarking.MODES]
  first, times = benchmarking.time_in_turns(runners, warmup=1, reps=3)
  peak = benchmarking.matmul_peak_flops(size=256, reps=2)
  return config, benchmarking.summarise(runners, first, times, config, peak)


def test_measurements_are_well_formed(measured):
  config, results = measured
  assert [r.mode for r in results] == ["inference", "train"]
  for r in results:
    assert 0 < r.images_per_second_min <= r.images_per_second <= r.images_per_second_max
    assert r.cpu_ms_per_image > 0 and r.first_call_seconds > 0 and r.compile_seconds > 0
    assert 0 <= r.system_ms_per_image <= r.cpu_ms_per_image
    assert 0 < r.mfu < 1
    assert r.ratio_to_ours == 1.0
    assert r.temp_bytes > 0 and r.argument_bytes > 0 and r.output_bytes > 0
    assert r.peak_rss_bytes > 2**20
    assert (r.variant, r.resolution, r.batch_size, r.dtype) == ("b0", 32, 2, "float32")
  inference, training = results
  assert training.model_flops == 3 * inference.model_flops
  model, _ = train_step.create_model(config, benchmarking.NUM_CLASSES)
  assert inference.model_flops == 2 * 2 * costs.multiply_adds(model.network, 32)
  assert training.alias_bytes > 0  # the donated state's buffers are reused
  json.dumps([dataclasses.asdict(r) for r in results])
  table = benchmarking.to_markdown(results).splitlines()
  assert len(table) == 2 + len(results) and all(line.count("|") == 14 for line in table)


def test_flops_are_xla_s(measured):
  config, results = measured
  model, resolution = train_step.create_model(config, benchmarking.NUM_CLASSES)
  images = jax.ShapeDtypeStruct((2, resolution, resolution, 3), "uint8")
  variables = jax.eval_shape(model.init, jax.random.key(0),
                             jax.ShapeDtypeStruct((1, resolution, resolution, 3), "float32"))
  cost = costs.xla_cost(benchmarking.inference_fn(model, config), variables, images)
  assert results[0].xla_flops == cost.flops > 0


def test_compile_only_memory_shrinks_with_remat(measured):
  _, (_, training) = measured
  remat = benchmarking.memory_row(tiny_config("full"), "remat")
  assert remat["temp_bytes_per_image"] == remat["temp_bytes"] / 2
  assert 0 < remat["temp_bytes"] < training.temp_bytes
  assert remat["xla_flops"] > training.xla_flops  # the forward runs again
  assert remat["argument_bytes"] == training.argument_bytes
  assert len(benchmarking.memory_markdown([remat]).splitlines()) == 3


def test_latency_rows_and_one_runner_per_dtype():
  float32 = benchmarking.benchmark_config("b0", batch_size=1, resolution=32, width=0.25,
                                          depth=0.25)
  bfloat16 = benchmarking.benchmark_config("b0", batch_size=1, resolution=32, width=0.25,
                                           depth=0.25, dtype="bfloat16")
  runners = [benchmarking.ours(float32, "latency"),
             benchmarking.ours(bfloat16, "latency", "ours bf16")]
  first, times = benchmarking.time_in_turns(runners, warmup=1, reps=3)
  peaks = {"float32": 1e11, "bfloat16": 2e11}
  results = benchmarking.summarise(runners, first, times, float32, peaks)
  assert [(r.mode, r.dtype, r.batch_size) for r in results] == [
      ("latency", "float32", 1), ("latency", "bfloat16", 1)]
  for r, peak in zip(results, peaks.values()):
    assert r.mfu == pytest.approx(r.model_flops * r.images_per_second / peak)
  assert results[0].ratio_to_ours == 1.0
  rows = benchmarking.latency_markdown(results).splitlines()[2:]
  median_ms = 1e3 / results[1].images_per_second
  assert rows[1].startswith("| ours bf16 | b0 | 32 | bfloat16 | "
                            f"{median_ms:.1f} [") and rows[1].endswith(
      f"| {1 / results[1].ratio_to_ours:.2f} |")
  with pytest.raises(ValueError, match="mode must be one of"):
    benchmarking.ours(float32, "serving")


def test_compiler_options_reach_xla():
  config = tiny_config()
  runner = benchmarking.ours(config, "inference", "ours no xnnpack",
                             compiler_options={"xla_cpu_use_xnnpack": False})
  runner.step()
  with pytest.raises(jax.errors.JaxRuntimeError,
                     match="No such compile option: 'xla_cpu_no_such_option'"):
    benchmarking.ours(config, "inference", compiler_options={"xla_cpu_no_such_option": True})
