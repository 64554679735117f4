"""Fault injection: SIGTERM and SIGKILL mid-run, corrupted checkpoints, NaN losses, two runs
on one workdir, and bad configs. Run alone with `pytest -m faults`."""

import os
import random
import shutil
import signal
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from efficientnet_jax.config import validation
from efficientnet_jax.training import checkpointing, metrics_log, train_step, trainer
from conftest import REPO, latest_state, tiny_config

pytestmark = pytest.mark.faults

EXIT_PREEMPTED = 75


NUM_STEPS = 20


def overrides(data_dir):
  return {"data_dir": data_dir, "model.width": 0.25, "model.depth": 0.25,
          "batch_size": 16, "num_train_steps": NUM_STEPS, "log_every_steps": 1,
          "checkpoint_every_steps": 4, "eval_every_epochs": 1000.0,
          "eval_batch_size": 64, "input.shuffle_buffer": 256}


def main_command(data_dir, workdir):
  return ([sys.executable, "-m", "efficientnet_jax.main", "--config=configs/demo.py",
           f"--workdir={workdir}"] +
          [f"--config.{k}={v}" for k, v in overrides(data_dir).items()])


def main_config(data_dir):
  """The config `main_command` trains, for a run in this process."""
  return tiny_config(**overrides(data_dir))


def start(data_dir, workdir):
  env = dict(os.environ, PYTHONPATH=REPO)
  return subprocess.Popen(main_command(data_dir, workdir), cwd=REPO, env=env,
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def records_so_far(workdir):
  try:
    return len(metrics_log.read(workdir))
  except FileNotFoundError:
    return 0


def wait_for_step(workdir, step, process, earlier_records=0, timeout=300):
  """Blocks until `process` logs `step` (it is past compilation). metrics.jsonl only
  grows: its first `earlier_records` records are earlier runs', which may already be past
  `step`."""
  deadline = time.time() + timeout
  while time.time() < deadline:
    assert process.poll() is None, process.stderr.read()[-3000:]
    try:
      if any(r["step"] >= step for r in metrics_log.read(workdir)[earlier_records:]):
        return
    except (FileNotFoundError, ValueError):
      pass
    time.sleep(0.2)
  raise TimeoutError(f"run did not reach step {step}")


def test_sigterm_then_repeated_sigkill_resume_to_the_uninterrupted_result(data_dir, tmp_path):
  straight, faulty = str(tmp_path / "straight"), str(tmp_path / "faulty")
  # 1. SIGTERM: the step finishes, a checkpoint is committed, exit status 75.
  run = start(data_dir, faulty)
  wait_for_step(faulty, 6, run)
  run.send_signal(signal.SIGTERM)
  assert run.wait(timeout=300) == EXIT_PREEMPTED, run.stderr.read()[-3000:]
  preempted_at, _ = latest_state(faulty)
  assert 6 <= preempted_at < NUM_STEPS

  # 2. SIGKILL at a random moment 0-2 s after the resumed run logs its first step (mid-step,
  # or inside an async save), twice.
  rng = random.Random(0)
  kills = 0
  for _ in range(2):
    earlier_records = records_so_far(faulty)
    run = start(data_dir, faulty)
    wait_for_step(faulty, preempted_at + 1, run, earlier_records)
    time.sleep(rng.uniform(0.0, 2.0))
    if run.poll() is None:
      run.kill()
      kills += 1
    run.wait(timeout=60)
    preempted_at, _ = latest_state(faulty)  # always a complete, readable checkpoint
  assert kills >= 1

  # 3. A final restart (here in this process: the same config and, through JAX's cache,
  # the same program) finishes; the result equals an uninterrupted run's, bitwise.
  trainer.train_and_evaluate(main_config(data_dir), faulty)
  straight_config = main_config(data_dir)
  straight_config.checkpoint_every_steps = NUM_STEPS  # only its final state is compared
  trainer.train_and_evaluate(straight_config, straight)
  (step_a, a), (step_b, b) = latest_state(straight), latest_state(faulty)
  assert step_a == step_b == NUM_STEPS
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
    np.testing.assert_array_equal(x, y)


def test_corrupted_latest_checkpoint_is_reported_and_skipped(data_dir, tmp_path, tiny_run):
  workdir = str(tmp_path / "run")  # a copy of an 8-step run, checkpoints at 4 and 8
  shutil.copytree(tiny_run(8), workdir)
  assert latest_state(workdir)[0] == 8
  # Damage every data file of step 8, as a disk fault or a cut-short copy would.
  damaged = 0
  for root, _, files in os.walk(os.path.join(workdir, "checkpoints", "8")):
    for name in files:
      path = os.path.join(root, name)
      if os.path.getsize(path) > 64 and "metadata" not in name:
        with open(path, "r+b") as f:
          f.truncate(16)
        damaged += 1
  assert damaged
  trainer.train_and_evaluate(tiny_config(data_dir, num_train_steps=12,
                                       checkpoint_every_steps=4), workdir)
  names = os.listdir(os.path.join(workdir, "checkpoints"))
  assert any(n.startswith("8.unreadable-") for n in names), names  # kept, not deleted
  # Resumed from step 4 and trained on to 12: same as a clean 12-step run.
  clean = tiny_run(12)
  for x, y in zip(jax.tree.leaves(latest_state(workdir)[1]),
                  jax.tree.leaves(latest_state(clean)[1]), strict=True):
    np.testing.assert_array_equal(x, y)


def nan_at_step(bad_step):
  """A `loss_transform` that replaces the loss of step `bad_step` (counted from 1) by NaN."""
  return lambda loss, step: jnp.where(step == bad_step, jnp.nan, loss)


def test_nan_stops_with_the_step_and_keeps_the_last_checkpoint(data_dir, tmp_path):
  workdir = str(tmp_path / "run")
  config = tiny_config(data_dir, num_train_steps=12, log_every_steps=4,
                       checkpoint_every_steps=4)
  with pytest.raises(train_step.NonFiniteError, match=r"at step 6 .*Last checkpoint: step 4"):
    trainer.train_and_evaluate(config, workdir, loss_transform=nan_at_step(6))
  step, state = latest_state(workdir)
  assert step == 4
  assert all(np.isfinite(leaf).all() for leaf in jax.tree.leaves(state))


def test_nan_steps_are_skipped_and_counted(data_dir, tmp_path):
  workdir = str(tmp_path / "run")
  config = tiny_config(data_dir, num_train_steps=8, log_every_steps=4, on_nonfinite="skip")
  trainer.train_and_evaluate(config, workdir, loss_transform=nan_at_step(6))
  records = [r for r in metrics_log.read(workdir) if "loss" in r]
  assert [r["nonfinite_steps"] for r in records] == [0.0, 1.0]
  _, state = latest_state(workdir)
  assert all(np.isfinite(leaf).all() for leaf in jax.tree.leaves(state))


def test_metrics_log_write_cut_short_keeps_the_earlier_records(tmp_path, monkeypatch):
  writer = metrics_log.JsonlWriter(str(tmp_path))
  writer.write(1, {"loss": 2.0})
  path_type = type(writer.path)
  write_text = path_type.write_text

  def killed_mid_write(self, text, *args, **kwargs):
    write_text(self, text[:10], *args, **kwargs)
    raise KeyboardInterrupt  # as a kill would stop it: 10 characters written

  monkeypatch.setattr(path_type, "write_text", killed_mid_write)
  with pytest.raises(KeyboardInterrupt):
    writer.write(2, {"loss": 1.0})
  assert metrics_log.read(str(tmp_path)) == [{"step": 1, "loss": 2.0}]


def test_two_runs_cannot_share_a_workdir(data_dir, tmp_path):
  workdir = str(tmp_path / "run")
  with checkpointing.WorkdirLock(workdir):
    with pytest.raises(ValueError, match=r"is in use by pid \d+"):
      trainer.train_and_evaluate(tiny_config(data_dir), workdir)
  assert not os.path.exists(os.path.join(workdir, "checkpoints"))  # nothing was touched


BAD_CONFIGS = [
    ("modle.width", 1.0, "config.modle.width (did you mean config.model.width?)"),
    ("batch_sise", 8, "config.batch_sise (did you mean config.batch_size?)"),
    ("model.variant", "b9", "config.model.variant='b9'"),
    ("model.width", -1.0, "config.model.width=-1.0"),
    ("model.depth", 0.0, "config.model.depth=0.0"),
    ("model.resolution", 16, "config.model.resolution=16"),
    ("model.resolution", 33.5, "config.model.resolution=33.5"),
    ("model.dropout_rate", 1.0, "config.model.dropout_rate=1.0"),
    ("model.drop_path_rate", -0.1, "config.model.drop_path_rate=-0.1"),
    ("model.num_classes", -3, "config.model.num_classes=-3"),
    ("model.padding", "valid", "config.model.padding='valid'"),
    ("model.depthwise_impl", "cuda", "config.model.depthwise_impl='cuda'"),
    ("model.dtype", "float16", "config.model.dtype='float16'"),
    ("model.remat", "yes", "config.model.remat='yes'"),
    ("model.alpha", 0.5, "config.model.alpha=0.5"),
    ("model.bn_epsilon", 0.0, "config.model.bn_epsilon=0.0"),
    ("batch_size", 0, "config.batch_size=0"),
    ("num_epochs", -1.0, "config.num_epochs=-1.0"),
    ("num_train_steps", 0, "config.num_train_steps=0"),
    ("optimizer.name", "adagrad", "config.optimizer.name='adagrad'"),
    ("optimizer.base_learning_rate", 0.0, "config.optimizer.base_learning_rate=0.0"),
    ("optimizer.momentum", 1.0, "config.optimizer.momentum=1.0"),
    ("optimizer.rmsprop_epsilon", -1e-3, "config.optimizer.rmsprop_epsilon=-0.001"),
    ("schedule.name", "step", "config.schedule.name='step'"),
    ("schedule.decay_epochs", 0.0, "config.schedule.decay_epochs=0.0"),
    ("schedule.decay_rate", 1.5, "config.schedule.decay_rate=1.5"),
    ("label_smoothing", 1.0, "config.label_smoothing=1.0"),
    ("ema_decay", 1.0, "config.ema_decay=1.0"),
    ("bn_group_size", -1, "config.bn_group_size=-1"),
    ("log_every_steps", 0, "config.log_every_steps=0"),
    ("keep_checkpoints", 0, "config.keep_checkpoints=0"),
    ("on_nonfinite", "ignore", "config.on_nonfinite='ignore'"),
    ("input.crop_fraction", 1.5, "config.input.crop_fraction=1.5"),
    ("input.crop_area_range", (0.9, 0.1), "config.input.crop_area_range"),
    ("input.stddev_rgb", (1.0, 0.0, 1.0), "config.input.stddev_rgb"),
    ("input.shuffle_buffer", 0, "config.input.shuffle_buffer=0"),
]


@pytest.mark.parametrize("key, value, message", BAD_CONFIGS)
def test_bad_config_names_the_key(key, value, message, data_dir):
  # Built from a plain dict: a ConfigDict would refuse a wrongly typed value on assignment.
  raw = tiny_config(data_dir).to_dict()
  *parents, leaf = key.split(".")
  node = raw
  for p in parents:
    node = node.setdefault(p, {})
  node[leaf] = value
  with pytest.raises(ValueError) as error:
    validation.validate(ml_collections.ConfigDict(raw))
  assert message in str(error.value)
