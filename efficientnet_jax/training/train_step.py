"""The train state and one optimizer step of the paper's recipe, jitted for a mesh.

`compile_train_step` is what training runs and what the benchmark measures: the state is
replicated, the global batch sharded along the mesh and the state buffers donated.
BatchNorm sees the global batch (jit computes its statistics with the needed all-reduces);
`config.bn_group_size = k` instead runs the forward/backward per device under
`jax.shard_map` with statistics over groups of k devices, as TF on TPU did.

A step whose loss or update is not finite leaves the weights as they were and says so in
its metrics ("nonfinite"); the loop decides what to do (`NonFiniteError`, or skip).
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Optional

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import optax
from jax.sharding import PartitionSpec as P

from efficientnet_jax.data import preprocessing
from efficientnet_jax.models import convnet
from efficientnet_jax.training import ema, optimizers, sharding

# (loss, step) -> loss, applied to the batch loss before the gradient; `step` is the number
# of the step being computed (1 for the first), traced. Tests inject faults through it.
LossTransform = Callable[[jax.Array, jax.Array], jax.Array]


class NonFiniteError(RuntimeError):
  """A step produced a non-finite loss or update (config.on_nonfinite == "stop")."""


@flax.struct.dataclass
class TrainState:
  step: jax.Array
  params: Any
  batch_stats: Any
  opt_state: Any
  ema_params: Any
  ema_batch_stats: Any


def create_model(config: ml_collections.ConfigDict,
                 num_classes: int) -> tuple[convnet.ConvNet, int]:
  """The model of `config.model` (BN grouped as config.bn_group_size asks) and its resolution."""
  model, size = convnet.create(config.model, num_classes=num_classes)
  if config.bn_group_size:  # statistics over the inner mesh axis: one group of devices
    model = model.clone(bn_axis_name="data")
  if config.finetune.freeze_bn:
    model = model.clone(bn_frozen=True)
  return model, size.resolution


def create_train_state(model: nn.Module, tx: optax.GradientTransformation, resolution: int,
                       rng: jax.Array) -> TrainState:
  """Initial weights from `rng`; the EMA copies start equal to them."""
  variables = model.init(rng, jnp.zeros((1, resolution, resolution, 3), jnp.float32))
  params, batch_stats = variables["params"], variables.get("batch_stats", {})
  return TrainState(step=jnp.zeros((), jnp.int32), params=params, batch_stats=batch_stats,
                    opt_state=tx.init(params), ema_params=params, ema_batch_stats=batch_stats)


def cross_entropy(logits: jax.Array, labels: jax.Array, num_classes: int,
                  label_smoothing: float) -> jax.Array:
  """Per-example softmax cross-entropy against smoothed one-hot labels, in float32."""
  targets = optax.smooth_labels(jax.nn.one_hot(labels, num_classes), label_smoothing)
  return optax.softmax_cross_entropy(logits.astype(jnp.float32), targets)


def train_step(state: TrainState, batch: dict[str, jax.Array], dropout_rng: jax.Array, *,
               model: nn.Module, tx: optax.GradientTransformation,
               learning_rate_fn: optax.Schedule, config: ml_collections.ConfigDict,
               mesh: jax.sharding.Mesh, loss_transform: Optional[LossTransform] = None
               ) -> tuple[TrainState, dict[str, jax.Array]]:
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
    if loss_transform is not None:
      loss = loss_transform(loss, state.step + 1)
    l2 = optimizers.l2_loss(params)
    metrics = {"loss": loss, "l2_loss": l2,
               "accuracy": jnp.mean(jnp.argmax(logits, -1) == labels)}
    return loss + config.optimizer.l2_weight_decay * l2, (updates["batch_stats"], metrics)

  grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
  if config.bn_group_size:
    grad_fn = _per_device_with_bn_groups(grad_fn, mesh)
  (_, (batch_stats, metrics)), grads = grad_fn(state.params, state.batch_stats, images,
                                               labels, rng)

  # The scopes name these operations in profiles (research/step_profile.py).
  with jax.named_scope("optimizer"):
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
  step = state.step + 1
  if config.ema_decay:
    with jax.named_scope("ema"):
      ema_params = ema.update_ema(state.ema_params, params, step, config.ema_decay)
      ema_batch_stats = ema.update_ema(state.ema_batch_stats, batch_stats, step,
                                       config.ema_decay)
  else:
    ema_params, ema_batch_stats = params, batch_stats
  metrics["learning_rate"] = learning_rate_fn(state.step)
  metrics["grad_norm"] = optax.global_norm(grads)
  new_state = TrainState(step=step, params=params, batch_stats=batch_stats,
                         opt_state=opt_state, ema_params=ema_params,
                         ema_batch_stats=ema_batch_stats)
  # A non-finite loss or update leaves the weights as they were (only the step and so the
  # data position advance); the host reads the flag with the other metrics, no extra sync.
  with jax.named_scope("optimizer"):
    finite = jnp.isfinite(metrics["loss"]) & jnp.isfinite(optax.global_norm(updates))
    new_state = jax.tree.map(lambda new, old: jnp.where(finite, new, old), new_state,
                             state.replace(step=step))
  metrics["nonfinite"] = 1.0 - finite.astype(jnp.float32)
  return new_state, metrics


def _per_device_with_bn_groups(grad_fn: Callable, mesh: jax.sharding.Mesh) -> Callable:
  """`grad_fn` run per device, BN statistics over groups of devices, gradients averaged."""
  axes = mesh.axis_names

  def per_device(params, batch_stats, images, labels, rng):
    rng = jax.random.fold_in(rng, jax.lax.axis_index(axes))
    return jax.lax.pmean(grad_fn(params, batch_stats, images, labels, rng), axes)

  # check_vma off: BN statistics vary over "bn_groups" only, which pmean handles fine.
  return jax.shard_map(per_device, mesh=mesh, check_vma=False,
                       in_specs=(P(), P(), P(axes), P(axes), P()), out_specs=P())


def compile_train_step(model: nn.Module, tx: optax.GradientTransformation,
                       learning_rate_fn: optax.Schedule, config: ml_collections.ConfigDict,
                       mesh: jax.sharding.Mesh,
                       loss_transform: Optional[LossTransform] = None):
  """`train_step` jitted for the mesh: (state, global batch, rng) → (state, metrics).

  `loss_transform(loss, step) -> loss`, when given, rewrites the batch loss before the
  gradient (fault injection: a NaN at a chosen step); None trains the recipe as it is.
  """
  replicated, data = sharding.replicated(mesh), sharding.batch_sharding(mesh)
  return jax.jit(
      functools.partial(train_step, model=model, tx=tx, learning_rate_fn=learning_rate_fn,
                        config=config, mesh=mesh, loss_transform=loss_transform),
      in_shardings=(replicated, data, replicated), out_shardings=(replicated, replicated),
      donate_argnums=0)
