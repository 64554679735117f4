"""Learning-rate schedule, optimizer and L2 term of the tensorflow/tpu EfficientNet recipe.

The reference trains with TF1 RMSProp (decay 0.9, momentum 0.9, epsilon 1e-3 inside the
square root, mean-square accumulator initialised to ones), a linearly warmed-up,
staircase-exponentially decayed learning rate, and weight decay as an L2 term in the loss
(`l2_loss`), so the decay gradient passes through RMSProp like any other.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import optax

SCHEDULES = ("exponential", "cosine", "polynomial")
OPTIMIZERS = ("rmsprop", "sgd", "lars", "adamw")


def peak_learning_rate(config: ml_collections.ConfigDict) -> float:
  """The base rate scaled linearly with the global batch (0.016/256 → 0.256 at 4096)."""
  if config.optimizer.base_batch_size <= 0:
    raise ValueError("config.optimizer.base_batch_size must be positive, got "
                     f"{config.optimizer.base_batch_size}")
  return (config.optimizer.base_learning_rate * config.batch_size
          / config.optimizer.base_batch_size)


def total_steps(config: ml_collections.ConfigDict, steps_per_epoch: float) -> int:
  """config.num_train_steps when set, else int(num_epochs · steps_per_epoch)."""
  if config.num_train_steps is not None:
    return int(config.num_train_steps)
  return int(config.num_epochs * steps_per_epoch)


def learning_rate_fn(config: ml_collections.ConfigDict,
                     steps_per_epoch: float) -> optax.Schedule:
  """Linear warmup from 0, then the decay named by config.schedule.name.

  Warmup: `peak · step / warmup_steps` for step < warmup_steps, with
  warmup_steps = int(warmup_epochs · steps_per_epoch).

  "exponential" (the paper): `peak · decay_rate ** floor(step / (decay_epochs ·
  steps_per_epoch))`, the step counted from 0 as in the reference, not from the end of
  warmup. The division is float32 like the reference's `tf.train.exponential_decay`, so
  both cross a boundary one step early in the same rare cases (1 step of 109,474 at
  batch 4096) where step / interval lies within float32 rounding below an integer.

  "cosine" / "polynomial": from peak to `peak · end_learning_rate_factor` over the steps
  after warmup, up to config.num_train_steps (or num_epochs · steps_per_epoch).

  Raises ValueError, naming the config key, before anything is traced.
  """
  name = config.schedule.name
  if name not in SCHEDULES:
    raise ValueError(f"config.schedule.name must be one of {SCHEDULES}, got {name!r}")
  if steps_per_epoch <= 0:
    raise ValueError(f"steps_per_epoch must be positive, got {steps_per_epoch}")
  if config.schedule.warmup_epochs < 0:
    raise ValueError("config.schedule.warmup_epochs must be >= 0, got "
                     f"{config.schedule.warmup_epochs}")
  peak = peak_learning_rate(config)
  warmup_steps = int(config.schedule.warmup_epochs * steps_per_epoch)

  if name == "exponential":
    if config.schedule.decay_epochs <= 0:
      raise ValueError("config.schedule.decay_epochs must be positive, got "
                       f"{config.schedule.decay_epochs}")
    # A float transition_steps works: optax computes floor(count / transition_steps).
    decay = optax.exponential_decay(
        peak, transition_steps=config.schedule.decay_epochs * steps_per_epoch,
        decay_rate=config.schedule.decay_rate, staircase=True)
  else:
    decay_steps = total_steps(config, steps_per_epoch) - warmup_steps
    if decay_steps <= 0:
      raise ValueError(
          "config.num_train_steps (or config.num_epochs) leaves no steps after the "
          f"{warmup_steps} warmup steps of config.schedule.warmup_epochs")
    end = peak * config.schedule.end_learning_rate_factor
    if name == "cosine":
      after = optax.cosine_decay_schedule(
          peak, decay_steps, alpha=config.schedule.end_learning_rate_factor)
    else:
      after = optax.polynomial_schedule(peak, end, config.schedule.power, decay_steps)
    decay = lambda step: after(step - warmup_steps)

  def schedule(step: Any) -> jax.Array:
    if warmup_steps == 0:
      return jnp.asarray(decay(step), jnp.float32)
    # Same operation order as the reference: (peak · float(step)) / float(warmup).
    warm = peak * jnp.asarray(step, jnp.float32) / warmup_steps
    return jnp.where(step < warmup_steps, warm, decay(step))

  return schedule


def is_batch_norm(path: tuple[Any, ...]) -> bool:
  """True for a leaf under a BatchNorm module (our model names them `*_bn`)."""
  return any(str(getattr(k, "key", k)).endswith("_bn") for k in path[:-1])


def _decay_mask(params: Any) -> Any:
  """Decoupled decay (adamw, lars) skips BatchNorm and bias variables, as is usual."""
  return jax.tree_util.tree_map_with_path(
      lambda path, _: not (is_batch_norm(path)
                           or str(getattr(path[-1], "key", path[-1])) == "bias"),
      params)


def create_optimizer(config: ml_collections.ConfigDict,
                     learning_rate: optax.Schedule) -> optax.GradientTransformation:
  """The optimizer named by config.optimizer.name, driven by `learning_rate`.

  "rmsprop" is TF1's RMSPropOptimizer: ms starts at ONES, ms = ρ·ms + (1-ρ)·g²,
  mom = μ·mom + lr·g/sqrt(ms + ε), param -= mom (the learning rate sits inside the
  momentum, which optax's chain rms → lr → trace reproduces).
  """
  opt = config.optimizer
  if opt.name == "rmsprop":
    return optax.rmsprop(learning_rate, decay=opt.rmsprop_decay, eps=opt.rmsprop_epsilon,
                         initial_scale=1.0, eps_in_sqrt=True, momentum=opt.momentum)
  if opt.name == "sgd":
    return optax.sgd(learning_rate, momentum=opt.momentum, nesterov=False)
  if opt.name == "lars":
    # The reference LARS skips both the decay and the trust ratio for BN and biases.
    return optax.lars(learning_rate, weight_decay=opt.adamw_weight_decay,
                      weight_decay_mask=_decay_mask, trust_ratio_mask=_decay_mask,
                      momentum=opt.momentum)
  if opt.name == "adamw":
    return optax.adamw(learning_rate, weight_decay=opt.adamw_weight_decay,
                       mask=_decay_mask)
  raise ValueError(f"config.optimizer.name must be one of {OPTIMIZERS}, got {opt.name!r}")


def l2_loss(params: Any) -> jax.Array:
  """Σ v²/2 over every parameter except BatchNorm's (scale, bias under `*_bn`).

  The reference decays every trainable variable whose name lacks 'batch_normalization',
  so conv kernels, SE conv biases and the classifier's kernel and bias all count.
  """
  leaves = [v for path, v in jax.tree_util.tree_flatten_with_path(params)[0]
            if not is_batch_norm(path)]
  return sum((jnp.sum(jnp.square(v.astype(jnp.float32))) for v in leaves),
             jnp.zeros((), jnp.float32)) / 2
