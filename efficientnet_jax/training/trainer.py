"""Training and evaluation loop: the paper's recipe, data-parallel through jit + sharding.

Read `train_and_evaluate` top to bottom: it checks the config, builds the model, the
optimizer and the data, restores the latest checkpoint of the workdir if there is one,
then alternates train steps with periodic evaluation (on the EMA weights), logging and
checkpointing.

Parallelism: one mesh axis `data` over every device of every process. The train state is
replicated, the global batch is sharded along `data`, and the state buffers are donated.
BatchNorm sees the global batch (jit computes its statistics with the needed
all-reduces); `config.bn_group_size = k` instead runs the forward/backward per device
under `jax.shard_map` with statistics over groups of k devices, as TF on TPU did.
"""

from __future__ import annotations

import functools
import signal
import threading
import time
from typing import Any

from absl import logging
from etils import epath
from clu import metric_writers, parameter_overview, periodic_actions
import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from jax.sharding import NamedSharding, PartitionSpec as P

from efficientnet_jax.training import checkpointing, ema, freezing
from efficientnet_jax.config import validation
from efficientnet_jax.data import input_pipeline
from efficientnet_jax.training import metrics_log
from efficientnet_jax.models import model as model_lib
from efficientnet_jax.training import optimizers
from efficientnet_jax.data import preprocessing


@flax.struct.dataclass
class TrainState:
  step: jax.Array
  params: Any
  batch_stats: Any
  opt_state: Any
  ema_params: Any
  ema_batch_stats: Any


def make_mesh(bn_group_size: int = 0) -> jax.sharding.Mesh:
  """All devices on one batch axis `data`; with BN groups of k devices, a (n/k, k) mesh
  ("bn_groups", "data") whose inner axis is one group. The batch is split over all axes."""
  devices = jax.device_count()
  # Auto axis types: Explicit mode would give dropout masks sharding-dependent shapes.
  if bn_group_size:
    return jax.make_mesh((devices // bn_group_size, bn_group_size), ("bn_groups", "data"),
                         axis_types=(jax.sharding.AxisType.Auto,) * 2)
  return jax.make_mesh((devices,), ("data",), axis_types=(jax.sharding.AxisType.Auto,))


def batch_sharding(mesh: jax.sharding.Mesh) -> NamedSharding:
  """The leading (batch) dimension split over every device of the mesh."""
  return NamedSharding(mesh, P(mesh.axis_names))


class Preempted(Exception):
  """Training stopped on SIGTERM after saving a checkpoint; rerun the command to resume."""


class NonFiniteError(RuntimeError):
  """A step produced a non-finite loss or update (config.on_nonfinite == "stop")."""


# Fault injection for tests: a step number whose loss is replaced by NaN (None: off).
_INJECT_NAN_AT_STEP: int | None = None


def validate(config: ml_collections.ConfigDict) -> None:
  """Every check that can fail on the config, before data is read or anything compiles."""
  validation.validate(config)
  if config.init_from and not epath.Path(config.init_from).exists():
    raise ValueError(f"config.init_from={config.init_from!r} does not exist")
  input_pipeline.validate(config)


def create_model(config: ml_collections.ConfigDict,
                 num_classes: int) -> tuple[model_lib.EfficientNet, int]:
  """The model of `config.model` (BN grouped as config.bn_group_size asks) and its resolution."""
  model, size = model_lib.create(config.model, num_classes=num_classes)
  if config.bn_group_size:  # statistics over the inner mesh axis: one group of devices
    model = model.clone(bn_axis_name="data")
  if config.finetune.freeze_bn:
    model = model.clone(bn_frozen=True)
  return model, size.resolution


def create_train_state(model: nn.Module, tx: optax.GradientTransformation, resolution: int,
                       rng: jax.Array) -> TrainState:
  variables = model.init(rng, jnp.zeros((1, resolution, resolution, 3), jnp.float32))
  params, batch_stats = variables["params"], variables.get("batch_stats", {})
  return TrainState(step=jnp.zeros((), jnp.int32), params=params, batch_stats=batch_stats,
                    opt_state=tx.init(params), ema_params=params, ema_batch_stats=batch_stats)


def cross_entropy(logits: jax.Array, labels: jax.Array, num_classes: int,
                  label_smoothing: float) -> jax.Array:
  targets = optax.smooth_labels(jax.nn.one_hot(labels, num_classes), label_smoothing)
  return optax.softmax_cross_entropy(logits.astype(jnp.float32), targets)


def train_step(state: TrainState, batch: dict[str, jax.Array], dropout_rng: jax.Array, *,
               model: nn.Module, tx: optax.GradientTransformation,
               learning_rate_fn: optax.Schedule, config: ml_collections.ConfigDict,
               mesh: jax.sharding.Mesh) -> tuple[TrainState, dict[str, jax.Array]]:
  """One optimizer step on the global batch; returns the new state and batch metrics."""
  images = preprocessing.normalize(batch["image"], config.input.mean_rgb,
                                   config.input.stddev_rgb)
  # Mixup/CutMix batches carry a second label and its weight: loss = w·CE(y) + (1-w)·CE(y').
  labels = (batch["label"], batch.get("label_mix", batch["label"]),
            batch.get("mix_weight", jnp.ones(batch["label"].shape, jnp.float32)))
  # Deterministic in (seed, step): a resumed run draws the same dropout masks.
  rng = jax.random.fold_in(dropout_rng, state.step)

  def loss_fn(params, batch_stats, images, labels, rng):
    labels, labels_mix, weight = labels
    logits, updates = model.apply({"params": params, "batch_stats": batch_stats}, images,
                                  train=True, mutable=["batch_stats"], rngs={"dropout": rng})
    ce = lambda y: cross_entropy(logits, y, model.num_classes, config.label_smoothing)
    loss = jnp.mean(weight * ce(labels) + (1 - weight) * ce(labels_mix))
    if _INJECT_NAN_AT_STEP is not None:
      loss = jnp.where(state.step + 1 == _INJECT_NAN_AT_STEP, jnp.nan, loss)
    l2 = optimizers.l2_loss(params)
    metrics = {"loss": loss, "l2_loss": l2,
               "accuracy": jnp.mean(jnp.argmax(logits, -1) == labels)}
    return loss + config.optimizer.l2_weight_decay * l2, (updates["batch_stats"], metrics)

  grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
  if config.bn_group_size:
    # Per-device forward/backward; BN statistics over groups of devices; mean gradients.
    local_grad_fn = grad_fn

    axes = mesh.axis_names

    def per_device(params, batch_stats, images, labels, rng):
      rng = jax.random.fold_in(rng, jax.lax.axis_index(axes))
      return jax.lax.pmean(local_grad_fn(params, batch_stats, images, labels, rng), axes)

    # check_vma off: BN statistics vary over "bn_groups" only, which pmean handles fine.
    grad_fn = jax.shard_map(per_device, mesh=mesh, check_vma=False,
                            in_specs=(P(), P(), P(axes), P(axes), P()), out_specs=P())
  (_, (batch_stats, metrics)), grads = grad_fn(state.params, state.batch_stats, images,
                                               labels, rng)

  updates, opt_state = tx.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  step = state.step + 1
  if config.ema_decay:
    ema_params = ema.update_ema(state.ema_params, params, step, config.ema_decay)
    ema_batch_stats = ema.update_ema(state.ema_batch_stats, batch_stats, step, config.ema_decay)
  else:
    ema_params, ema_batch_stats = params, batch_stats
  metrics["learning_rate"] = learning_rate_fn(state.step)
  metrics["grad_norm"] = optax.global_norm(grads)
  new_state = TrainState(step=step, params=params, batch_stats=batch_stats,
                         opt_state=opt_state, ema_params=ema_params,
                         ema_batch_stats=ema_batch_stats)
  # A non-finite loss or update leaves the weights as they were (only the step and so the
  # data position advance); the host reads the flag with the other metrics, no extra sync.
  finite = jnp.isfinite(metrics["loss"]) & jnp.isfinite(optax.global_norm(updates))
  new_state = jax.tree.map(lambda new, old: jnp.where(finite, new, old), new_state,
                           state.replace(step=step))
  metrics["nonfinite"] = 1.0 - finite.astype(jnp.float32)
  return new_state, metrics


def eval_step(params: Any, batch_stats: Any, batch: dict[str, jax.Array], *, model: nn.Module,
              config: ml_collections.ConfigDict) -> dict[str, jax.Array]:
  """Sums over the real (mask True) examples of the batch: loss, top-1, top-5, count."""
  images = preprocessing.normalize(batch["image"], config.input.mean_rgb,
                                   config.input.stddev_rgb)
  logits = model.apply({"params": params, "batch_stats": batch_stats}, images, train=False)
  labels, mask = batch["label"], batch["mask"].astype(jnp.float32)
  loss = cross_entropy(logits, labels, model.num_classes, 0.0)
  k = min(5, model.num_classes)
  top5 = jnp.any(jax.lax.top_k(logits, k)[1] == labels[:, None], axis=-1)
  return {"loss": jnp.sum(loss * mask),
          "top1": jnp.sum((jnp.argmax(logits, -1) == labels) * mask),
          "top5": jnp.sum(top5 * mask),
          "count": jnp.sum(mask)}


def compile_train_step(model: nn.Module, tx: optax.GradientTransformation,
                       learning_rate_fn: optax.Schedule, config: ml_collections.ConfigDict,
                       mesh: jax.sharding.Mesh):
  """`train_step` jitted for the mesh: (state, global batch, rng) → (state, metrics)."""
  replicated, data = NamedSharding(mesh, P()), batch_sharding(mesh)
  return jax.jit(
      functools.partial(train_step, model=model, tx=tx, learning_rate_fn=learning_rate_fn,
                        config=config, mesh=mesh),
      in_shardings=(replicated, data, replicated), out_shardings=(replicated, replicated),
      donate_argnums=0)


def compile_eval_step(model: nn.Module, config: ml_collections.ConfigDict,
                      mesh: jax.sharding.Mesh):
  """`eval_step` jitted for the mesh: (params, batch_stats, global batch) → sums."""
  replicated, data = NamedSharding(mesh, P()), batch_sharding(mesh)
  return jax.jit(functools.partial(eval_step, model=model, config=config),
                 in_shardings=(replicated, replicated, data), out_shardings=replicated)


def evaluate(eval_fn, params: Any, batch_stats: Any, config: ml_collections.ConfigDict,
             resolution: int, data_sharding: NamedSharding) -> dict[str, float]:
  """Top-1, top-5 and loss over every example of the eval split (padding masked out)."""
  dataset, num_batches = input_pipeline.create_eval_dataset(
      config, resolution, process_index=jax.process_index(),
      process_count=jax.process_count())
  totals = None
  for batch in dataset.as_numpy_iterator():
    batch = jax.tree.map(
        lambda x: jax.make_array_from_process_local_data(data_sharding, x), batch)
    sums = eval_fn(params, batch_stats, batch)
    totals = sums if totals is None else jax.tree.map(jnp.add, totals, sums)
  totals = jax.device_get(totals)
  count = float(totals["count"])
  return {"top1": float(totals["top1"]) / count, "top5": float(totals["top5"]) / count,
          "loss": float(totals["loss"]) / count, "num_examples": count,
          "num_batches": num_batches}


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, float]:
  """Trains `config` in `workdir` (resuming from its latest checkpoint) and evaluates.

  Returns the final evaluation metrics of the EMA weights. Raises `Preempted` after saving
  on SIGTERM, `NonFiniteError` on a non-finite step (unless config.on_nonfinite="skip").
  """
  validate(config)
  with checkpointing.WorkdirLock(workdir, enabled=jax.process_index() == 0):
    return _train_and_evaluate(config, workdir)


def _train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, float]:
  mesh = make_mesh(config.bn_group_size)
  replicated = NamedSharding(mesh, P())
  data_sharding = batch_sharding(mesh)
  is_main = jax.process_index() == 0

  info = input_pipeline.dataset_info(config)
  model, resolution = create_model(config, info.num_classes)
  steps_per_epoch = info.num_train_examples / config.batch_size
  num_steps = optimizers.total_steps(config, steps_per_epoch)
  eval_every = max(1, int(round(config.eval_every_epochs * steps_per_epoch)))
  learning_rate_fn = optimizers.learning_rate_fn(config, steps_per_epoch)
  tx = freezing.freeze_backbone_for(
      optimizers.create_optimizer(config, learning_rate_fn),
      int(round(config.finetune.freeze_backbone_epochs * steps_per_epoch)))

  writer = metric_writers.create_default_writer(workdir, just_logging=not is_main)
  jsonl = metrics_log.JsonlWriter(workdir) if is_main else None
  checkpoints = checkpointing.Checkpoints(workdir, config)

  init_rng, dropout_rng = jax.random.split(jax.random.key(config.seed))
  state = jax.jit(functools.partial(create_train_state, model, tx, resolution),
                  out_shardings=replicated)(init_rng)
  state = checkpoints.restore_or_init(state, replicated)
  start_step = int(state.step)
  if start_step == 0 and config.init_from:
    state = checkpointing.merge_pretrained(
        state, checkpointing.load_variables(config.init_from), config.init_from)
  if start_step == 0:
    parameter_overview.log_parameter_overview(state.params)
    writer.write_hparams(metrics_log.flatten_config(config))
  logging.info("%s: %d params, %d classes, resolution %d, %d steps (%.1f per epoch), "
               "%d devices, start at step %d", config.model.variant,
               sum(x.size for x in jax.tree.leaves(state.params)), info.num_classes,
               resolution, num_steps, steps_per_epoch, jax.device_count(), start_step)

  step_fn = compile_train_step(model, tx, learning_rate_fn, config, mesh)
  eval_fn = compile_eval_step(model, config, mesh)
  train_iter = input_pipeline.create_train_dataset(
      config, resolution, process_index=jax.process_index(),
      process_count=jax.process_count(), start_step=start_step).as_numpy_iterator()
  progress = periodic_actions.ReportProgress(num_train_steps=num_steps, writer=writer)
  hooks = [progress] if is_main else []

  def run_eval(step: int) -> dict[str, float]:
    with progress.timed("eval"):
      results = {f"eval_{k}": v for k, v in evaluate(
          eval_fn, state.ema_params, state.ema_batch_stats, config, resolution,
          data_sharding).items()}
      if config.eval_raw_weights and config.ema_decay:
        results.update({f"eval_raw_{k}": v for k, v in evaluate(
            eval_fn, state.params, state.batch_stats, config, resolution,
            data_sharding).items()})
    results["epoch"] = step / steps_per_epoch
    writer.write_scalars(step, results)
    if jsonl:
      jsonl.write(step, results)
    return results

  # SIGTERM (preemption of a TPU VM, SLURM's notice) ends the current step, then a checkpoint
  # is written and training stops with `Preempted`; the same command resumes. With several
  # processes, JAX's preemption service catches the signal and picks one step for all.
  sigterm = threading.Event()
  multi_process = jax.process_count() > 1
  previous_handler = (None if multi_process else
                      signal.signal(signal.SIGTERM, lambda *_: sigterm.set()))

  def preempted(step: int) -> bool:
    if multi_process:
      return checkpoints.latest.reached_preemption(step)
    return sigterm.is_set()

  def check_finite(metrics_list: list[dict[str, jax.Array]], first_step: int) -> None:
    flags = [float(m["nonfinite"]) for m in jax.device_get(metrics_list)]
    if any(flags) and config.on_nonfinite == "stop":
      bad = first_step + flags.index(1.0)
      raise NonFiniteError(
          f"non-finite loss or update at step {bad} (the update was not applied). Last "
          f"checkpoint: step {checkpoints.latest.latest_step()} in {workdir}/checkpoints. "
          "Lower the learning rate, or set config.on_nonfinite='skip' to skip such steps.")

  eval_results: dict[str, float] = {}
  pending_metrics, nonfinite_total = [], 0.0
  last_log_time, last_log_step = time.time(), start_step
  try:
    for step in range(start_step + 1, num_steps + 1):
      with jax.profiler.StepTraceAnnotation("train", step_num=step):
        local_batch = next(train_iter)
        batch = jax.tree.map(
            lambda x: jax.make_array_from_process_local_data(data_sharding, x), local_batch)
        state, metrics = step_fn(state, batch, dropout_rng)
      pending_metrics.append(metrics)  # fetched only when logged: no host sync per step
      for hook in hooks:
        hook(step)

      stopping = preempted(step)
      if step % config.log_every_steps == 0 or step == num_steps or stopping:
        check_finite(pending_metrics, last_log_step + 1)
        fetched = jax.device_get(pending_metrics)
        summary = {k: float(np.mean([m[k] for m in fetched])) for k in fetched[0]}
        nonfinite_total += sum(float(m["nonfinite"]) for m in fetched)
        summary["nonfinite_steps"] = nonfinite_total
        now = time.time()
        summary["images_per_second"] = ((step - last_log_step) * config.batch_size
                                        / max(now - last_log_time, 1e-9))
        summary["epoch"] = step / steps_per_epoch
        last_log_time, last_log_step, pending_metrics = now, step, []
        writer.write_scalars(step, {f"train_{k}" if k != "epoch" else k: v
                                    for k, v in summary.items()})
        if jsonl:
          jsonl.write(step, summary)

      if step % eval_every == 0 or step == num_steps:
        eval_results = run_eval(step)
        checkpoints.save_best(step, state, eval_results["eval_top1"])
      if checkpoints.latest.should_save(step) or step == num_steps or stopping:
        check_finite(pending_metrics, last_log_step + 1)  # never save past a bad step
        checkpoints.save(step, state, force=True)
      if stopping:
        raise Preempted(f"stopped by SIGTERM after step {step}; checkpoint saved in "
                        f"{workdir}/checkpoints/{step}. Run the same command to resume.")

    if start_step >= num_steps:  # nothing left to train: report the restored weights
      eval_results = run_eval(start_step)
  finally:
    if previous_handler is not None:
      signal.signal(signal.SIGTERM, previous_handler)
    checkpoints.close()  # waits for async saves: a started checkpoint is completed
    writer.flush()
  return eval_results
