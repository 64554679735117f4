"""The per-operation profile (research/step_profile.py) on tiny models: every kind of
operation lands in its category, for ours (XLA's HLO) and for timm (torch.profiler).

timm is profiled in a child process: importing it loads torchvision → triton, which
segfaults a process that has already loaded TensorFlow (pytest's workers import every test
module, and the rest of the suite loads TensorFlow).
"""

import json
import re
import subprocess
import sys

import pytest

from efficientnet_jax.research import benchmarking, step_profile


def tiny(depthwise_impl="auto"):
  return benchmarking.benchmark_config("b0", batch_size=2, resolution=32, width=0.25,
                                       depth=0.25, depthwise_impl=depthwise_impl)


@pytest.fixture(scope="module")
def grouped_depthwise_train_step():
  """The real train step with XLA's grouped convolution for depthwise (visible as such)."""
  return benchmarking.ours(tiny("xla"), "train")


def test_hlo_instructions_are_categorised_by_what_they_compute(grouped_depthwise_train_step):
  hlo = grouped_depthwise_train_step.compiled.as_text()
  categories = step_profile.categorise_hlo(hlo)
  lines, _ = step_profile._hlo_instructions(hlo)
  grouped = [n for n, rhs in lines.items() if step_profile._opcode(rhs) == "convolution"
             and int(re.search(r"feature_group_count=(\d+)", rhs + "feature_group_count=1")
                     .group(1)) > 1]
  assert grouped and all(categories[n] == "depthwise" for n in grouped)
  stem = [n for n, rhs in lines.items() if step_profile._opcode(rhs) == "convolution"
          and "window={size=3x3" in rhs and "feature_group_count" not in rhs]
  assert stem and all(categories[n] == "k×k conv" for n in stem)  # the stem, fwd and bwd
  dots = {n: step_profile._op_name(rhs) for n, rhs in lines.items()
          if step_profile._opcode(rhs) == "dot"}
  assert {categories[n] for n, op in dots.items() if "/se/" in op} == {"squeeze-excite"}
  assert {categories[n] for n, op in dots.items() if "/classifier/" in op} == {"other"}
  assert "1×1 conv" in {categories[n] for n, op in dots.items()
                        if re.search(r"(expand|project|head)_conv", op)}
  found = set(categories.values())
  assert {"BN", "activation", "optimizer/EMA"} <= found, found


def test_profile_of_our_train_step_covers_the_step(grouped_depthwise_train_step):
  runner = benchmarking.ours(tiny(), "train")  # the CPU default: shift-add depthwise
  runner.step()
  per_step, wall_ms = step_profile.profile_ours(runner.step, runner.compiled.as_text(),
                                                steps=2)
  assert list(per_step) == list(step_profile.CATEGORIES)
  for category in ("1×1 conv", "k×k conv", "depthwise", "BN", "activation",
                   "squeeze-excite", "optimizer/EMA"):
    assert per_step[category] > 0, (category, per_step)
  assert sum(per_step.values()) >= wall_ms * 0.999
  table = step_profile.to_markdown({"ours": (per_step, wall_ms)}).splitlines()
  assert len(table) == 2 + len(step_profile.CATEGORIES) + 1


PROFILE_TIMM = """
import json, sys
import timm  # before TensorFlow, which benchmarking imports
from efficientnet_jax.research import benchmarking, step_profile
runner = benchmarking.timm("b0", 32, 2, "train")
runner.step()
print(json.dumps(step_profile.profile_timm(runner.step, steps=2)))
"""


def test_profile_of_timm_train_step_covers_the_step():
  child = subprocess.run([sys.executable, "-c", PROFILE_TIMM], capture_output=True,
                         text=True, timeout=600)
  assert child.returncode == 0, child.stderr[-3000:]
  per_step, wall_ms = json.loads(child.stdout.strip().splitlines()[-1])
  assert list(per_step) == list(step_profile.CATEGORIES)
  for category in ("1×1 conv", "k×k conv", "depthwise", "BN", "activation",
                   "squeeze-excite", "optimizer/EMA"):
    assert per_step[category] > 0, (category, per_step)
  named = sum(v for k, v in per_step.items() if k != "other")
  assert named <= wall_ms * 1.05  # one thread's operators: no double counting
  assert sum(per_step.values()) >= wall_ms * 0.999


def test_peer_names():
  assert [benchmarking.timm_name(v) for v in ("b0", "v2_s", "v2_b0", "lite0")] == [
      "efficientnet_b0", "efficientnetv2_s", "tf_efficientnetv2_b0", "efficientnet_lite0"]
  assert [benchmarking.keras_name(v) for v in ("b0", "v2_s", "v2_b0")] == [
      "EfficientNetB0", "EfficientNetV2S", "EfficientNetV2B0"]
  with pytest.raises(ValueError, match="Keras has no 'lite0'"):
    benchmarking.keras_name("lite0")
