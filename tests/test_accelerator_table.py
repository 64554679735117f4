"""The accelerator table's batch search and rows, on CPU with a tiny B0."""

import subprocess
import sys

import pytest

from efficientnet_jax.research import accelerator_table
from efficientnet_jax.training import memory_fit

SIZES = {"resolution": 32, "width": 0.25, "depth": 0.25}


def test_the_batch_is_the_largest_power_of_two_that_fits():
  at_4, at_8 = (accelerator_table.step_bytes("b0", "float32", "train", b, **SIZES)
                for b in (4, 8))
  assert at_4 < at_8
  between = (at_4 + at_8) / 2
  assert accelerator_table.batch_that_fits("b0", "float32", "train", between, **SIZES) == 4
  assert accelerator_table.batch_that_fits("b0", "float32", "train", at_8, **SIZES) == 8
  assert accelerator_table.batch_that_fits("b0", "float32", "train", 1e15, max_batch=16,
                                           **SIZES) == 16
  with pytest.raises(memory_fit.MemoryWontFit, match=r"b0 train float32: even batch 1 needs"):
    accelerator_table.batch_that_fits("b0", "float32", "train", 1e5, **SIZES)


def test_rows_carry_the_published_anchors():
  row = accelerator_table.measure("b0", "float32", "inference", 2, peak_flops=1e11, warmup=1,
                                  reps=2, **SIZES)
  assert (row.batch_size, row.resolution) == (2, 32) and row.images_per_second > 0
  assert 0 < row.step_gib < 1 and 0 < row.mfu < 1 and row.compile_seconds > 0
  assert row.device_peak_gib is None  # CPU devices report no allocator statistics
  line = accelerator_table.to_markdown([row]).splitlines()[-1]
  rate = row.images_per_second / 10239
  assert f"NVIDIA PyTorch AMP, A100 10,239: ours {rate:.2f}×" in line


def test_the_command_prints_the_table():
  result = subprocess.run(
      [sys.executable, "-m", "efficientnet_jax.commands.accelerator_table", "--variant=b0",
       "--resolution=32", "--dtype=float32", "--modes=inference", "--max_batch=2",
       "--reps=1", "--warmup=1"], capture_output=True, text=True, timeout=600)
  assert result.returncode == 0, result.stderr[-3000:]
  rows = [l for l in result.stdout.splitlines() if l.startswith("| b0 | inference")]
  assert len(rows) == 2 and "| float32 | 32 | 2 |" in rows[-1], result.stdout
  assert "host memory available" in result.stdout
