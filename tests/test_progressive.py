"""Progressive learning: the schedules against automl's formulas and the paper's Table 6,
what a progressive run's pipeline and model actually use, bitwise resume inside a stage
and at a stage boundary, and the schedules that are refused."""

import hashlib
import os
import types

import jax
import numpy as np
import pytest

from efficientnet_jax.config import validation
from efficientnet_jax.data import augment
from efficientnet_jax.research import sweep
from efficientnet_jax.training import (metrics_log, progressive, sharding, train_step,
                                       trainer)
from tests.conftest import REPO, latest_state, tiny_config, with_overrides

V2_CONFIG = os.path.join(REPO, "configs", "efficientnetv2.py")


def _automl_released(train_size, final_magnitude, final_mix, num_steps, stages=4, ibase=128):
  """google/automl efficientnetv2/main.py's stage loop, written out: for stage i,
  ratio = (i + 1) / stages, its last step int(ratio · steps), image size
  int(ibase + (size − ibase) · ratio), RandAugment np.linspace(5, ram, stages)[i] and
  Mixup/CutMix np.linspace(0, alpha, stages)[i]."""
  rows = []
  for i in range(stages):
    ratio = float(i + 1) / float(stages)
    rows.append((int(ratio * num_steps), int(ibase + (train_size - ibase) * ratio),
                 np.linspace(5, final_magnitude, stages)[i],
                 np.linspace(0, final_mix, stages)[i]))
  return rows


class Recorder:
  """What a run hands the pipeline and the model: each pipeline's RandAugment magnitude
  and mixing alphas (when tf.data traces them), each batch's shape and bytes, and each
  compiled step's model dropout and drop-path rates."""

  def __init__(self, monkeypatch, crash_at_batch=None):
    self.magnitudes, self.alphas, self.batches, self.models = [], [], [], []
    randaugment, mix_batch = augment.randaugment, augment.mix_batch
    global_batch, compile_step = sharding.global_batch, train_step.compile_train_step

    def record_randaugment(image, seed, num_layers, magnitude):
      self.magnitudes.append(float(magnitude))
      return randaugment(image, seed, num_layers, magnitude)

    def record_mix(batch, seed, mixup_alpha, cutmix_alpha):
      self.alphas.append((float(mixup_alpha), float(cutmix_alpha)))
      return mix_batch(batch, seed, mixup_alpha, cutmix_alpha)

    def record_batch(host_batch, mesh):
      if crash_at_batch is not None and len(self.batches) == crash_at_batch:
        raise KeyboardInterrupt("simulated crash")  # as if killed before this step
      digest = hashlib.sha256(b"".join(np.ascontiguousarray(host_batch[k]).tobytes()
                                       for k in sorted(host_batch))).hexdigest()
      self.batches.append((host_batch["image"].shape, digest))
      return global_batch(host_batch, mesh)

    def record_compile(model, *args, **kwargs):
      blocks = model.network.blocks  # block i of N drops with rate · i / N
      self.models.append((model.dropout_rate, blocks[1].drop_path_rate * len(blocks)))
      return compile_step(model, *args, **kwargs)

    monkeypatch.setattr(augment, "randaugment", record_randaugment)
    monkeypatch.setattr(augment, "mix_batch", record_mix)
    # The trainer's batches only, not the evaluator's.
    monkeypatch.setattr(trainer, "sharding", types.SimpleNamespace(
        **{**vars(sharding), "global_batch": record_batch}))
    monkeypatch.setattr(train_step, "compile_train_step", record_compile)


def _distinct(values):
  """`values` without consecutive repeats (tf.data may trace a function more than once)."""
  return [v for i, v in enumerate(values) if i == 0 or v != values[i - 1]]


@pytest.mark.parametrize("variant, train_size, magnitude, mix, dropout", [
    ("v2_s", 300, 10, 0.0, 0.2), ("v2_m", 384, 15, 0.2, 0.3)])
def test_v2_runs_use_automl_released_schedule(data_dir, tmp_path, monkeypatch, variant,
                                              train_size, magnitude, mix, dropout):
  """A V2 run (its network shrunk, on digits, one step per stage) trains each stage at
  automl's size and strength, read from what the pipeline and model were given."""
  config = sweep.load_config(f"{V2_CONFIG}:{variant}")
  assert config.progressive.num_stages == 4 and config.progressive.interpolation == "released"
  config = with_overrides(config, **{
      "dataset": "digits", "data_dir": data_dir, "train_split": "train", "eval_split": "test",
      "model.width": 0.1, "model.depth": 0.1, "model.eval_resolution": 64,
      "batch_size": 2, "eval_batch_size": 120, "num_train_steps": 4, "log_every_steps": 1,
      "checkpoint_every_steps": 100, "eval_every_epochs": 1000.0,
      "input.shuffle_buffer": 64})
  recorder = Recorder(monkeypatch)
  trainer.train_and_evaluate(config, str(tmp_path / "run"))
  expected = _automl_released(train_size, magnitude, mix, num_steps=4)
  sizes = [size for _, size, _, _ in expected]
  assert sizes == ([171, 214, 257, 300] if variant == "v2_s" else [192, 256, 320, 384])
  assert [shape for shape, _ in recorder.batches] == [(2, s, s, 3) for s in sizes]
  np.testing.assert_allclose(_distinct(recorder.magnitudes), [m for *_, m, _ in expected],
                             rtol=1e-12)
  if mix:  # mixing is off in a stage whose alphas are both 0: no pipeline op to record
    np.testing.assert_allclose(_distinct(recorder.alphas), [(a, a) for *_, a in expected[1:]],
                               rtol=1e-12)
  else:
    assert recorder.alphas == []
  # Dropout is not scheduled in automl's code.
  np.testing.assert_allclose(recorder.models, [(dropout, 0.2)] * 4, rtol=1e-12)
  logged = [r for r in metrics_log.read(str(tmp_path / "run")) if "stage" in r]
  assert [(r["step"], r["stage"], r["image_size"]) for r in logged] == [
      (last, i, size) for i, (last, size, _, _) in enumerate(expected)]
  assert all(r["stage_images_per_second"] > 0 for r in logged[1:] if "stage_images_per_second" in r)


def test_paper_schedule_follows_table_6():
  """configs/efficientnetv2.py:v2_s,paper: every value start + (end − start) · i / 3."""
  config = sweep.load_config(f"{V2_CONFIG}:v2_s,paper")
  stages = progressive.stages(config, 400)
  assert [s.last_step for s in stages] == [100, 200, 300, 400]
  assert [s.image_size for s in stages] == [128, 185, 242, 300]
  np.testing.assert_allclose([s.randaug_magnitude for s in stages], [5, 25 / 3, 35 / 3, 15])
  np.testing.assert_allclose([s.dropout_rate for s in stages], [0.1, 0.1 + 0.2 / 3,
                                                                  0.1 + 0.4 / 3, 0.3])
  assert [s.mixup_alpha for s in stages] == [0.0] * 4
  m = progressive.stages(sweep.load_config(f"{V2_CONFIG}:v2_m,paper"), 4)
  assert [s.image_size for s in m] == [128, 212, 296, 380]
  np.testing.assert_allclose([s.mixup_alpha for s in m], [0, 0.2 / 3, 0.4 / 3, 0.2])
  with pytest.raises(ValueError, match="Table 6 gives progressive settings for v2_s"):
    sweep.load_config(f"{V2_CONFIG}:v2_b0,paper")


def test_size_multiple_and_unscheduled_values():
  config = tiny_config("/unused", **{"model.resolution": 100, "progressive.num_stages": 3,
                                     "progressive.start_image_size": 40,
                                     "progressive.image_size_multiple": 16})
  stages = progressive.stages(config, 10)
  # 40 + 60·(1/3, 2/3, 1) = 60, 80, 100: rounded down to 48, 80; the last is the resolution.
  assert [(s.first_step, s.last_step, s.image_size) for s in stages] == [
      (1, 3, 48), (4, 6, 80), (7, 10, 100)]
  assert {s.randaug_magnitude for s in stages} == {None}  # demo: no RandAugment
  assert {(s.dropout_rate, s.drop_path_rate) for s in stages} == {(0.1, 0.2)}
  off = tiny_config("/unused")
  assert progressive.stage_config(off, progressive.stages(off, 8)[0]) is off


def _progressive_config(data_dir):
  """A tiny V1 run at 64 px in 4 stages of 3 steps from 32 px (sizes 40, 48, 56, 64),
  RandAugment, Mixup and dropout scheduled, a checkpoint after every step."""
  return tiny_config(data_dir, num_train_steps=12, **{
      "model.resolution": 64, "progressive.num_stages": 4,
      "progressive.start_image_size": 32, "input.augment": "randaugment",
      "input.randaug_magnitude": 10, "input.mixup_alpha": 0.2,
      "progressive.start_dropout_rate": 0.0, "checkpoint_every_steps": 1})


def test_resume_inside_a_stage_and_at_its_boundary_is_bitwise(data_dir, tmp_path,
                                                             monkeypatch):
  """Killed at step 5 (inside stage 2, steps 4–6; resumed from checkpoint 4) and again at
  step 7 (resumed from checkpoint 6, the boundary of stages 2 and 3), the run ends with
  the uninterrupted run's state, having trained on the same batches."""
  straight, resumed = str(tmp_path / "straight"), str(tmp_path / "resumed")
  uninterrupted = Recorder(monkeypatch)
  trainer.train_and_evaluate(_progressive_config(data_dir), straight)
  sizes = [shape[1] for shape, _ in uninterrupted.batches]
  assert sizes == [40] * 3 + [48] * 3 + [56] * 3 + [64] * 3
  np.testing.assert_allclose(_distinct(uninterrupted.magnitudes), [5, 20 / 3, 25 / 3, 10])
  np.testing.assert_allclose(_distinct(uninterrupted.alphas),
                             [(0.2 / 3, 0), (0.4 / 3, 0), (0.2, 0)])
  np.testing.assert_allclose(uninterrupted.models, [(0, 0.2), (0.1 / 3, 0.2),
                                                    (0.2 / 3, 0.2), (0.1, 0.2)])

  trained = []
  for crash_after, resume_step in ((4, 0), (2, 4), (None, 6)):
    part = Recorder(monkeypatch, crash_at_batch=crash_after)
    if crash_after is None:
      trainer.train_and_evaluate(_progressive_config(data_dir), resumed)
    else:
      with pytest.raises(KeyboardInterrupt):
        trainer.train_and_evaluate(_progressive_config(data_dir), resumed)
    assert latest_state(resumed)[0] == resume_step + len(part.batches)
    # The batches after the restart are those the uninterrupted run trained on then.
    assert part.batches == uninterrupted.batches[resume_step:resume_step + len(part.batches)]
    trained.append(len(part.batches))
  assert trained == [4, 2, 6]
  (step_a, a), (step_b, b) = latest_state(straight), latest_state(resumed)
  assert step_a == step_b == 12
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
    np.testing.assert_array_equal(x, y)
  losses = lambda w: {r["step"]: r["loss"] for r in metrics_log.read(w) if "loss" in r}
  assert losses(straight)[12] == losses(resumed)[12]


@pytest.mark.parametrize("overrides, message", [
    ({"progressive.start_image_size": 16},
     r"config.progressive.start_image_size: the stage image sizes \[28, 40, 52, 64\] go "
     r"below the network's total stride 32"),
    ({"progressive.image_size_multiple": 64},
     r"config.progressive.image_size_multiple: the stage image sizes \[0, 0, 0, 64\]"),
    ({"progressive.start_randaug_magnitude": 12},
     r"config.progressive.start_randaug_magnitude=12.0 exceeds its final value 10.0 "
     r"\(config.input.randaug_magnitude\): progressive stages must grow"),
    ({"progressive.start_image_size": 80},
     r"config.progressive.start_image_size=80 exceeds its final value 64 "
     r"\(config.model.resolution\)"),
    ({"progressive.start_dropout_rate": 0.5},
     r"config.progressive.start_dropout_rate=0.5 exceeds its final value 0.1"),
    ({"progressive.num_stages": 1}, r"config.progressive.num_stages=1 is fixed-size"),
    ({"progressive.interpolation": "cosine"},
     r"config.progressive.interpolation='cosine' must be one of released, paper"),
    ({"progressive.start_mixup_alpha": -1.0},
     r"config.progressive.start_mixup_alpha=-1.0 must be >= 0"),
])
def test_bad_schedules_are_refused_naming_the_key(data_dir, overrides, message):
  config = with_overrides(_progressive_config(data_dir), **overrides)
  with pytest.raises(ValueError, match=message):
    validation.validate(config)


def test_more_stages_than_steps_is_refused_before_training(data_dir, tmp_path):
  config = with_overrides(_progressive_config(data_dir), **{"progressive.num_stages": 13})
  with pytest.raises(ValueError, match=r"config.progressive.num_stages=13 does not fit the "
                                       r"run's 12 train steps"):
    trainer.train_and_evaluate(config, str(tmp_path / "run"))
  assert not os.path.exists(tmp_path / "run" / "checkpoints")


def test_sweeps_take_progressive_settings(tmp_path):
  """A φ sweep's runs carry the progressive overrides to main.py, each run's stages
  growing to its own resolution."""
  overrides = ["config.progressive.num_stages=4", "config.progressive.start_image_size=32"]
  demo = os.path.join(REPO, "configs", "demo.py")
  runs = sweep.expand(demo, str(tmp_path), overrides=overrides, phis=[1.0, 3.0])
  finals = []
  for run in runs:
    args = sweep.main_args(run, demo, overrides)
    assert "--config.progressive.num_stages=4" in args
    config = sweep.load_config(demo, args[2:])  # what main.py parses from these arguments
    validation.validate(config)
    stages = progressive.stages(config, 8)
    assert len(stages) == 4 and stages[0].image_size > 32
    finals.append(stages[-1].image_size)
  assert finals == [run.resolution for run in runs] and finals[0] < finals[1]
