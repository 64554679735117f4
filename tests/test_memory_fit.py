"""A train step that cannot fit in memory is refused before the first step, with XLA's
figures and the settings that would fit."""

import re

import pytest

from efficientnet_jax.training import memory_fit, trainer
from tests.conftest import tiny_config

HUGE_BATCH = 2**20  # about a terabyte of activations for the tiny model: no machine's RAM


def test_a_batch_beyond_the_machine_is_refused_with_what_would_fit(data_dir, tmp_path):
  config = tiny_config(data_dir, batch_size=HUGE_BATCH, eval_batch_size=64)
  with pytest.raises(memory_fit.MemoryWontFit) as caught:
    trainer.train_and_evaluate(config, str(tmp_path / "run"))
  message = str(caught.value)
  needed = float(re.search(r"needs ([\d.]+) GiB per device \(XLA's memory analysis\), but "
                           r"host memory available is ([\d.]+) GiB", message).group(1))
  available, _ = memory_fit.available_bytes()
  assert needed * memory_fit.GiB > available
  # The largest batch by the linear estimate, then each remat policy and bfloat16 at this
  # batch, with XLA's figure for each.
  suggested = int(re.search(r"--config.batch_size=(\d+) \(about", message).group(1))
  assert 0 < suggested < HUGE_BATCH
  for flags in ("--config.model.remat=True --config.model.remat_policy=full",
                "--config.model.remat=True --config.model.remat_policy=save_conv",
                "--config.model.dtype=bfloat16"):
    assert re.search(re.escape(flags) + rf": [\d.]+ GiB at batch {HUGE_BATCH} \(does not fit "
                     r"either\)", message), message
  assert not (tmp_path / "run" / "checkpoints").exists() or not any(
      p.name.isdigit() for p in (tmp_path / "run" / "checkpoints").iterdir())

  # The suggested batch does fit, by XLA's analysis of that step (compiled, not run).
  fitting = tiny_config(data_dir, batch_size=suggested, eval_batch_size=64)
  run = trainer._Run(fitting, str(tmp_path / "fits"), None)
  with run:
    run.enter_stage(1)  # compiles and checks; would raise MemoryWontFit if it did not fit
    assert memory_fit.step_bytes(run.step_fn) <= available * memory_fit.HEADROOM
