"""The training loop end to end on the digits data: multi-device, BN sync, exact eval,
resume, logging, and the errors a user gets before anything compiles."""

import json
import os
import shutil
import subprocess
import sys
import textwrap

import jax
import numpy as np
import pytest

from efficientnet_jax.training import checkpointing, metrics_log, trainer
from conftest import REPO, latest_state, tiny_config


def run_with_devices(code: str, devices: int = 4, timeout: int = 600) -> dict:
  """Runs `code` in a fresh Python with `devices` simulated CPU devices; returns the JSON
  object it prints on its last line."""
  env = dict(os.environ)
  env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") +
                      f" --xla_force_host_platform_device_count={devices}").strip()
  env["PYTHONPATH"] = REPO + os.pathsep + env.get("PYTHONPATH", "")
  result = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=env, cwd=REPO,
                          capture_output=True, text=True, timeout=timeout)
  assert result.returncode == 0, result.stderr[-5000:]
  return json.loads(result.stdout.strip().splitlines()[-1])


def test_four_devices_train_bn_sync_exact_eval_and_batch_check(data_dir, tmp_path):
  out = run_with_devices(f"""
    import functools, json
    import jax, jax.numpy as jnp, numpy as np
    from jax.sharding import NamedSharding, PartitionSpec as P
    from efficientnet_jax.data import input_pipeline, preprocessing
    from efficientnet_jax.training import (metrics_log, optimizers, sharding, train_step,
                                           trainer)
    from tests.conftest import tiny_config

    results = {{"devices": jax.device_count()}}

    # 1. A short run: loss goes down; eval on a 1,001-example split counts each once.
    # BN momentum 0 for part 2 (the running statistics after a step are that step's); part
    # 2's global-batch step is then this run's program again, loaded from JAX's cache.
    # No checkpoints but the final one: they are not what this test is about.
    config = tiny_config({data_dir!r}, num_train_steps=20, log_every_steps=5,
                         checkpoint_every_steps=1000, eval_split="train[:1001]",
                         eval_batch_size=64, **{{"model.bn_momentum": 0.0}})
    config.input.crop_area_range = (1.0, 1.0)
    config.input.random_flip = False
    config.schedule.warmup_epochs = 0.0
    config.optimizer.base_learning_rate = 0.1
    final = trainer.train_and_evaluate(config, {str(tmp_path / "run")!r})
    records = metrics_log.read({str(tmp_path / "run")!r})
    losses = [r["loss"] for r in records if "loss" in r]
    results.update(losses=losses, eval_examples=final["eval_num_examples"],
                   eval_batches=final["eval_num_batches"])

    # 2. BatchNorm statistics: global batch by default, per group with bn_group_size.
    rng = np.random.default_rng(0)
    batch = {{"image": rng.integers(0, 256, (16, 32, 32, 3), dtype=np.uint8),
              "label": rng.integers(0, 10, (16,)).astype(np.int32)}}
    images = preprocessing.normalize(batch["image"], config.input.mean_rgb,
                                     config.input.stddev_rgb)
    stem_vars = {{}}
    # As train_and_evaluate computes it, so that the schedule's constants match too.
    steps_per_epoch = (input_pipeline.dataset_info(config).num_train_examples
                       / config.batch_size)
    for group in (0, 2):
      cfg = config.copy_and_resolve_references()
      cfg.bn_group_size = group
      mesh = sharding.make_mesh(group)
      model, resolution = train_step.create_model(cfg, 10)
      lr = optimizers.learning_rate_fn(cfg, steps_per_epoch)
      tx = optimizers.create_optimizer(cfg, lr)
      if group == 0:
        reference = model  # unsynchronised BN: its stats are those of what it is given
        # As the run initialises (the same program, from JAX's cache); a host copy, since
        # the step donates its input.
        initial = jax.device_get(jax.jit(
            functools.partial(train_step.create_train_state, model, tx, resolution),
            out_shardings=NamedSharding(mesh, P()))(jax.random.key(0)))
        variables = {{"params": initial.params, "batch_stats": initial.batch_stats}}
      # The same initial state on this mesh (init has no BN reduction to group).
      state = jax.device_put(initial, NamedSharding(mesh, P()))
      sharded = jax.device_put(batch, sharding.batch_sharding(mesh))
      step = train_step.compile_train_step(model, tx, lr, cfg, mesh)
      new_state, _ = step(state, sharded, jax.random.key(1))
      stem_vars[group] = np.asarray(new_state.batch_stats["stem_bn"]["var"])

    @jax.jit  # one compile per batch size instead of one per operation
    def stem_var(x):
      _, updates = reference.apply(variables, x, train=True, mutable=["batch_stats"],
                                   rngs={{"dropout": jax.random.key(0)}})
      return updates["batch_stats"]["stem_bn"]["var"]

    stats_of = lambda rows: np.asarray(stem_var(images[rows]))

    expected = {{0: stats_of(slice(0, 16)),
                 2: np.mean([stats_of(slice(0, 8)), stats_of(slice(8, 16))], 0)}}
    # Group variances averaged (mean of group means would equal the global mean).
    results["bn_error"] = {{g: float(np.abs(stem_vars[g] - expected[g]).max()) for g in expected}}
    results["bn_group_vs_global"] = float(np.abs(expected[2] - expected[0]).max())

    # 3. A batch that does not split over the devices is refused before compiling.
    try:
      trainer.validate(tiny_config({data_dir!r}, batch_size=6))
    except ValueError as e:
      results["batch_error"] = str(e)
    print(json.dumps(results))
  """)
  assert out["devices"] == 4
  losses = out["losses"]
  assert len(losses) == 4 and losses[-1] < 0.9 * losses[0], losses
  assert out["eval_examples"] == 1001
  assert out["eval_batches"] == 16  # ceil(1001 / 64), the last one padded and masked
  for group, error in out["bn_error"].items():
    assert error < 1e-5, (group, error)
  assert out["bn_group_vs_global"] > 1e-3  # the check above can tell the two apart
  assert "config.batch_size=6" in out["batch_error"]
  assert "device count 4" in out["batch_error"]


def test_resume_gives_bitwise_identical_parameters(data_dir, tmp_path, tiny_run):
  """An 8-step run extended to 12 steps ends where a 12-step run does."""
  straight, resumed = tiny_run(12), str(tmp_path / "resumed")
  shutil.copytree(tiny_run(8), resumed)
  assert latest_state(resumed)[0] == 8
  trainer.train_and_evaluate(tiny_config(data_dir, num_train_steps=12), resumed)
  (step_a, a), (step_b, b) = latest_state(straight), latest_state(resumed)
  assert step_a == step_b == 12
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
    np.testing.assert_array_equal(x, y)
  # The logged training losses after the restart equal the uninterrupted run's too.
  losses = lambda w: [r["loss"] for r in metrics_log.read(w) if "loss" in r]
  assert losses(straight)[-1] == losses(resumed)[-1]


def test_workdir_outputs(tiny_run):
  workdir = tiny_run(8)
  with open(os.path.join(workdir, "config.json")) as f:
    assert json.load(f)["model"]["width"] == 0.25
  records = metrics_log.read(workdir)
  train_records = [r for r in records if "loss" in r]
  assert [r["step"] for r in train_records] == [4, 8]
  for key in ("learning_rate", "images_per_second", "epoch", "accuracy"):
    assert key in train_records[0]
  assert records[-1]["step"] == 8
  assert records[-1]["eval_num_examples"] == 360  # the whole digits test split
  assert any(name.startswith("events.out.tfevents") for name in os.listdir(workdir))
  assert os.listdir(os.path.join(workdir, "best"))


def test_resume_with_another_config_is_refused(data_dir, tmp_path, tiny_run):
  workdir = str(tmp_path / "run")  # a copy of an 8-step run
  shutil.copytree(tiny_run(8), workdir)
  changed = tiny_config(data_dir, num_train_steps=12, **{"model.width": 0.5})
  with pytest.raises(ValueError, match=r"model.width: 0.25 -> 0.5"):
    checkpointing.Checkpoints(workdir, changed)
  changed.allow_config_change = True
  checkpointing.Checkpoints(workdir, changed).close()  # allowed when asked for


@pytest.mark.parametrize("overrides, message", [
    ({"dataset": "imagenet2021"}, "config.dataset='imagenet2021'.*imagenet2012"),
    ({"dataset": "imagenet2012", "data_dir": None},
     "(?s)config.data_dir.*ILSVRC2012_img_train.tar"),
    ({"optimizer.name": "adagrad"}, "config.optimizer.name"),
    ({"schedule.name": "step"}, "config.schedule.name"),
    ({"eval_split": "validation"}, "config.eval_split='validation'"),
    ({"model.variant": "b10"}, "config.model.variant='b10'"),
    ({"bn_group_size": 3}, "config.bn_group_size"),
    ({"ema_decay": 1.5}, "config.ema_decay"),
])
def test_bad_config_is_refused_before_compiling(data_dir, overrides, message):
  config = tiny_config(data_dir)
  for key, value in overrides.items():
    *parents, leaf = key.split(".")
    node = config
    for p in parents:
      node = node[p]
    node[leaf] = value
  with pytest.raises(ValueError, match=message):
    trainer.validate(config)
