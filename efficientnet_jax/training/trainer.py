"""The training loop: the paper's recipe, data-parallel through jit + sharding.

Read `train_and_evaluate` top to bottom: it checks the config, sets the run up (`_Run`:
the model, the optimizer and the data, the latest checkpoint of the workdir restored if
there is one), then alternates train steps with logging, periodic evaluation (on the EMA
weights) and checkpointing, each a small method of the run. With progressive learning
(`progressive`) the run enters each stage at its first step: that stage's input pipeline
(image size, augmentation strength), model (dropout) and compiled step.

The pieces live beside it: the train state and step in `train_step`, the mesh in
`sharding`, evaluation in `evaluator`, checkpoints and the workdir lock in
`checkpointing`, SIGTERM handling in `preemption`.
"""

from __future__ import annotations

import functools
import time
from typing import Optional

from absl import logging
from etils import epath
from clu import metric_writers, parameter_overview, periodic_actions
import jax
import ml_collections
import numpy as np

from efficientnet_jax import terminal
from efficientnet_jax.config import validation
from efficientnet_jax.data import input_pipeline
from efficientnet_jax.models import registry
from efficientnet_jax.training import (checkpointing, confusion_matrix, evaluator, freezing,
                                       memory_fit, metrics_log, optimizers, preemption,
                                       progressive, sharding, train_step)

NUM_LOGGED_IMAGES = 8  # training images shown in TensorBoard at the first step


def validate(config: ml_collections.ConfigDict) -> None:
  """Every check that can fail on the config, before data is read or anything compiles."""
  validation.validate(config)
  if config.init_from and not epath.Path(config.init_from).exists():
    raise ValueError(f"config.init_from={config.init_from!r} does not exist")
  if config.init_from:
    _check_init_from_family(config)
  input_pipeline.validate(config)
  if config.progressive.num_stages:  # the stages must fit the run's steps
    info = input_pipeline.dataset_info(config)
    progressive.check(config, optimizers.total_steps(
        config, info.num_train_examples / config.batch_size))


def _with(config: ml_collections.ConfigDict,
          overrides: dict[str, object]) -> ml_collections.ConfigDict:
  """A copy of `config` with dotted keys set ("model.remat": True)."""
  copy = ml_collections.ConfigDict(config.to_dict(), type_safe=False)
  for key, value in overrides.items():
    *parents, leaf = key.split(".")
    node = copy
    for parent in parents:
      node = node[parent]
    node[leaf] = value
  return copy


def _check_init_from_family(config: ml_collections.ConfigDict) -> None:
  """Weights of another family would fail variable by variable; name both families."""
  from efficientnet_jax import inference  # reads model.json, or a workdir's config.json
  try:
    info = inference.read_info(config.init_from)
  except (ValueError, OSError, KeyError):
    return  # no readable description: merge_pretrained still checks every variable
  family = registry.family_of(config.model).name
  if info.family != family:
    raise ValueError(f"config.init_from={config.init_from!r} holds {info.family} weights "
                     f"({info.variant}), but config.model.family is {family!r} "
                     f"(variant {config.model.variant!r}); set "
                     f"--config.model.family={info.family} or use {family} weights")


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str,
                       loss_transform: Optional[train_step.LossTransform] = None
                       ) -> dict[str, float]:
  """Trains `config` in `workdir` (resuming from its latest checkpoint) and evaluates.

  Returns the final evaluation metrics of the EMA weights. Raises `preemption.Preempted`
  after saving on SIGTERM, `train_step.NonFiniteError` on a non-finite step (unless
  config.on_nonfinite="skip").

  `loss_transform(loss, step) -> loss` rewrites each step's batch loss before the gradient
  (`step` counts from 1); it exists for fault injection, e.g. a NaN at one step. None
  trains the recipe as it is.
  """
  validate(config)
  with checkpointing.WorkdirLock(workdir, enabled=jax.process_index() == 0):
    run = _Run(config, workdir, loss_transform)
    with run, preemption.PreemptionWatch(run.checkpoints.latest) as preempted:
      for step in range(run.start_step + 1, run.num_steps + 1):
        run.train(step)
        stopping = preempted.requested(step)
        last = step == run.num_steps
        stage_ends = step == run.stage.last_step  # a stage's throughput stays its own
        if step % config.log_every_steps == 0 or last or stopping or stage_ends:
          run.log(step)
        if step % run.eval_every == 0 or last:
          run.evaluate(step)
          run.save_best(step)
        if run.checkpoints.latest.should_save(step) or last or stopping:
          run.save(step)
        if stopping:
          raise preemption.Preempted(
              f"stopped by SIGTERM after step {step}; checkpoint saved in "
              f"{workdir}/checkpoints/{step}. Run the same command to resume.")
      if run.start_step >= run.num_steps:  # nothing left to train: report the restored weights
        run.evaluate(run.start_step)
    return run.eval_results


class _Run:
  """One training run's set-up, and the steps the loop calls: train, log, evaluate, save.

  As a context manager it completes the started checkpoint saves and flushes the metric
  writers on the way out, whatever stopped the loop.
  """

  def __init__(self, config: ml_collections.ConfigDict, workdir: str,
               loss_transform: Optional[train_step.LossTransform]):
    self.config, self.workdir = config, workdir
    self.mesh = sharding.make_mesh(config.bn_group_size)
    replicated = sharding.replicated(self.mesh)
    is_main = jax.process_index() == 0

    # The model, the schedule and the optimizer, from the dataset's size.
    info = input_pipeline.dataset_info(config)
    self.num_classes, self.skipped_records = info.num_classes, info.num_skipped_records
    model, resolution = train_step.create_model(config, info.num_classes)
    eval_resolution = registry.scaling_of(config.model).eval_size  # V2 evaluates larger
    self.steps_per_epoch = info.num_train_examples / config.batch_size
    self.num_steps = optimizers.total_steps(config, self.steps_per_epoch)
    self.eval_every = max(1, int(round(config.eval_every_epochs * self.steps_per_epoch)))
    learning_rate_fn = optimizers.learning_rate_fn(config, self.steps_per_epoch)
    self.stages = progressive.stages(config, self.num_steps)
    self.learning_rate_fn, self.loss_transform = learning_rate_fn, loss_transform
    self.tx = tx = freezing.freeze_backbone_for(
        optimizers.create_optimizer(config, learning_rate_fn),
        int(round(config.finetune.freeze_backbone_epochs * self.steps_per_epoch)))

    # Outputs: metrics (TensorBoard and metrics.jsonl on process 0 only) and checkpoints.
    self.writer = metric_writers.create_default_writer(workdir, just_logging=not is_main)
    self.jsonl = metrics_log.JsonlWriter(workdir) if is_main else None
    self.checkpoints = checkpointing.Checkpoints(workdir, config)

    # The state: the latest checkpoint's, else initialised (from config.init_from if set).
    init_rng, self.dropout_rng = jax.random.split(jax.random.key(config.seed))
    state = jax.jit(functools.partial(train_step.create_train_state, model, tx, resolution),
                    out_shardings=replicated)(init_rng)
    self.state = self.checkpoints.restore_or_init(state, replicated)
    self.start_step = int(self.state.step)
    if self.start_step == 0 and config.init_from:
      self.state = checkpointing.merge_pretrained(
          self.state, checkpointing.load_variables(config.init_from), config.init_from)
    if self.start_step == 0:
      parameter_overview.log_parameter_overview(self.state.params)
      self.writer.write_hparams(metrics_log.hparams(config))
    logging.info("%s: %d params, %d classes, resolution %d (eval %d), %d steps (%.1f per "
                 "epoch), %d devices, start at step %d", config.model.variant,
                 sum(x.size for x in jax.tree.leaves(self.state.params)), info.num_classes,
                 resolution, eval_resolution, self.num_steps, self.steps_per_epoch,
                 jax.device_count(), self.start_step)

    if config.progressive.num_stages:
      logging.info("progressive learning (%s):\n%s", config.progressive.interpolation,
                   progressive.describe(self.stages))

    # Evaluation; the train step and data come per stage (`enter_stage`), from where the
    # restored state left off.
    self.evaluator = evaluator.Evaluator(model, config, self.mesh, eval_resolution)
    self.stage: Optional[progressive.Stage] = None
    self.progress = periodic_actions.ReportProgress(num_train_steps=self.num_steps,
                                                    writer=self.writer)
    self.hooks = [self.progress] if is_main else []
    self.bar = terminal.progress(total=self.num_steps, initial=self.start_step,
                                 desc=f"train {config.model.variant}", unit="step",
                                 enabled=is_main)

    self.eval_results: dict[str, float] = {}
    self.pending_metrics: list[dict[str, jax.Array]] = []  # device arrays, since last log
    self.nonfinite_total = 0.0
    self.last_log_time, self.last_log_step = time.time(), self.start_step

  def __enter__(self) -> "_Run":
    return self

  def __exit__(self, *exc_info) -> None:
    self.checkpoints.close()  # waits for async saves: a started checkpoint is completed
    self.writer.flush()
    self.bar.close()

  def enter_stage(self, step: int) -> None:
    """Builds the train step and input stream of the stage of `step` (the whole run when
    progressive learning is off), the stream starting at that step's batch.

    Batches are a function of the step (see `create_train_dataset`), so entering a stage
    midway, on resume, yields what an uninterrupted run trains on."""
    config = self.config
    self.stage = stage = progressive.stage_of(self.stages, step)
    stage_config = progressive.stage_config(config, stage)
    dataset = input_pipeline.create_train_dataset(
        stage_config, stage.image_size, process_index=jax.process_index(),
        process_count=jax.process_count(), start_step=step - 1)
    batch_shapes = {key: jax.ShapeDtypeStruct(
        (spec.shape[0] * jax.process_count(), *spec.shape[1:]), spec.dtype.as_numpy_dtype,
        sharding=sharding.batch_sharding(self.mesh)) for key, spec in dataset.element_spec.items()}

    def compile_step(step_config: ml_collections.ConfigDict) -> jax.stages.Compiled:
      model, _ = train_step.create_model(step_config, self.num_classes)  # the stage's dropout
      return train_step.compile_train_step(
          model, self.tx, self.learning_rate_fn, step_config, self.mesh, self.loss_transform
      ).lower(self.state, batch_shapes, self.dropout_rng).compile()

    # Compiled ahead of the first batch, once per stage (the persistent cache serves it
    # again on restart), and checked against the device's memory before it runs.
    self.step_fn = compile_step(stage_config)
    step_bytes = memory_fit.check(
        self.step_fn, stage_config, image_size=stage.image_size,
        state_bytes=sum(x.nbytes for x in jax.tree.leaves(self.state)),
        compile_variant=lambda overrides: compile_step(_with(stage_config, overrides)))
    logging.info("train step at %d px: %.3f GiB per device (XLA's memory analysis)",
                 stage.image_size, step_bytes / memory_fit.GiB)
    self.train_batches = dataset.as_numpy_iterator()
    self.stage_entry_step, self.stage_clock = step, None
    if config.progressive.num_stages:
      terminal.say(f"stage {stage.index + 1}/{len(self.stages)} from step {step}: "
                   f"{stage.image_size} px, " + ", ".join(
                       f"{k} {v:.4g}" for k, v in stage.values().items()
                       if k not in ("stage", "image_size")))

  def train(self, step: int) -> None:
    """Runs train step `step` on the next global batch; its metrics stay on the device."""
    if self.stage is None or step > self.stage.last_step:
      self.enter_stage(step)
    with jax.profiler.StepTraceAnnotation("train", step_num=step):
      host_batch = next(self.train_batches)
      if step == 1 and self.jsonl:  # what the model sees, after augmentation
        self.writer.write_images(step, {"train/augmented_images":
                                        host_batch["image"][:NUM_LOGGED_IMAGES]})
      batch = sharding.global_batch(host_batch, self.mesh)
      self.state, metrics = self.step_fn(self.state, batch, self.dropout_rng)
    if step == self.stage_entry_step:  # the stage's clock starts after its compile
      jax.block_until_ready(self.state)
      self.stage_clock = (time.time(), step)
    self.pending_metrics.append(metrics)  # fetched only when logged: no host sync per step
    for hook in self.hooks:
      hook(step)
    self.bar.update()

  def log(self, step: int) -> None:
    """Writes the mean of the train metrics since the last log, with throughput."""
    self.raise_if_nonfinite()
    fetched = jax.device_get(self.pending_metrics)
    summary = {k: float(np.mean([m[k] for m in fetched])) for k in fetched[0]}
    self.nonfinite_total += sum(float(m["nonfinite"]) for m in fetched)
    summary["nonfinite_steps"] = self.nonfinite_total
    summary["skipped_records"] = float(self.skipped_records)
    now = time.time()
    summary["images_per_second"] = ((step - self.last_log_step) * self.config.batch_size
                                    / max(now - self.last_log_time, 1e-9))
    summary["epoch"] = step / self.steps_per_epoch
    if self.config.progressive.num_stages:
      summary.update(self.stage.values())
      clock_time, clock_step = self.stage_clock or (now, step)
      if step == self.stage.last_step and step > clock_step:  # the stage's steady rate
        summary["stage_images_per_second"] = ((step - clock_step) * self.config.batch_size
                                              / max(now - clock_time, 1e-9))
        terminal.say(f"stage {self.stage.index + 1}/{len(self.stages)} "
                     f"({self.stage.image_size} px): "
                     f"{summary['stage_images_per_second']:.1f} img/s")
    self.last_log_time, self.last_log_step, self.pending_metrics = now, step, []
    self.bar.set_postfix(loss=f"{summary['loss']:.3f}", epoch=f"{summary['epoch']:.1f}",
                         refresh=False)
    self.writer.write_scalars(step, {f"train_{k}" if k != "epoch" else k: v
                                     for k, v in summary.items()})
    if self.jsonl:
      self.jsonl.write(step, summary)

  def evaluate(self, step: int) -> None:
    """Evaluates the EMA weights (and the raw ones if config.eval_raw_weights) and logs."""
    config, state = self.config, self.state
    with self.progress.timed("eval"):
      results = {f"eval_{k}": v for k, v in self.evaluator.evaluate(
          state.ema_params, state.ema_batch_stats).items()}
      confusion = self.evaluator.confusion_matrix
      if config.eval_raw_weights and config.ema_decay:
        results.update({f"eval_raw_{k}": v for k, v in self.evaluator.evaluate(
            state.params, state.batch_stats).items()})
    results["epoch"] = step / self.steps_per_epoch
    self.writer.write_scalars(step, results)
    if self.jsonl and confusion is not None:
      self.writer.write_images(step, {"eval/confusion_matrix":
                                      confusion_matrix.image(confusion)[None]})
      self.writer.write_texts(step, {"eval/confusion_counts":
                                     confusion_matrix.markdown(confusion)})
    if self.jsonl:
      self.jsonl.write(step, results)
      terminal.say(f"step {step} (epoch {results['epoch']:.1f}): "
                   + evaluator.describe(results))
    self.eval_results = results

  def save_best(self, step: int) -> None:
    """Keeps the state in best/ if its last evaluation has the best top-1 so far."""
    self.checkpoints.save_best(step, self.state, self.eval_results["eval_top1"])

  def save(self, step: int) -> None:
    """Starts an (async) checkpoint of the state; never one past a non-finite step."""
    self.raise_if_nonfinite()
    self.checkpoints.save(step, self.state, force=True)

  def raise_if_nonfinite(self) -> None:
    """`NonFiniteError` naming the first bad step since the last log, when
    config.on_nonfinite is "stop" (the bad update was not applied)."""
    flags = [float(m["nonfinite"]) for m in jax.device_get(self.pending_metrics)]
    if any(flags) and self.config.on_nonfinite == "stop":
      bad = self.last_log_step + 1 + flags.index(1.0)
      raise train_step.NonFiniteError(
          f"non-finite loss or update at step {bad} (the update was not applied). Last "
          f"checkpoint: step {self.checkpoints.latest.latest_step()} in "
          f"{self.workdir}/checkpoints. Lower the learning rate, or set "
          "config.on_nonfinite='skip' to skip such steps.")
