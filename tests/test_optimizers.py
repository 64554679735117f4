"""The recipe against its tensorflow/tpu reference: TF1 RMSProp, the schedule, L2 term."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import tensorflow as tf

from efficientnet_jax.config import defaults
from efficientnet_jax.training import optimizers
from conftest import with_overrides

STEPS_PER_EPOCH = 1281167 / 4096  # ImageNet at the paper's batch


def _config(**overrides):
  return with_overrides(defaults.get_config(), **overrides)


def _tf_reference_lr(steps, peak, steps_per_epoch, warmup_epochs=5, decay_epochs=2.4,
                     decay_rate=0.97):
  """utils.build_learning_rate of tensorflow/tpu, vectorised (tf.where for tf.cond)."""
  global_step = tf.constant(steps, tf.int64)
  lr = tf.compat.v1.train.exponential_decay(
      peak, global_step, steps_per_epoch * decay_epochs, decay_rate, staircase=True)()
  warmup_steps = int(warmup_epochs * steps_per_epoch)
  warmup_lr = peak * tf.cast(global_step, tf.float32) / tf.cast(warmup_steps, tf.float32)
  return tf.where(global_step < warmup_steps, warmup_lr, lr).numpy()


def test_peak_learning_rate_scales_with_batch():
  assert optimizers.peak_learning_rate(_config()) == pytest.approx(0.256)
  assert optimizers.peak_learning_rate(_config(batch_size=1024)) == pytest.approx(0.064)


def test_exponential_schedule_matches_formula_at_key_steps():
  schedule = optimizers.learning_rate_fn(_config(), STEPS_PER_EPOCH)
  peak, warmup, interval = 0.256, 1563, 2.4 * STEPS_PER_EPOCH
  assert int(5 * STEPS_PER_EPOCH) == warmup
  expected = {
      0: 0.0,
      781: peak * 781 / warmup,             # mid-warmup
      750: peak * 750 / warmup,             # first decay boundary (750.68) is inside
      751: peak * 751 / warmup,             # warmup: warmup wins on both sides
      1562: peak * 1562 / warmup,           # last warmup step
      1563: peak * 0.97**2,                 # counted from 0: two decays already passed
      2252: peak * 0.97**2,                 # just before the third boundary (2252.05)
      2253: peak * 0.97**3,                 # just after it
      # The last of 350 epochs, 145 decays: the rate is applied as float32(0.97), as in
      # the reference, which is 3e-8 relatively off 0.97, so 4e-6 off after 145 powers.
      109_474: peak * float(np.float32(0.97))**math.floor(109_474 / interval),
  }
  for step, value in expected.items():
    np.testing.assert_allclose(float(schedule(step)), value, rtol=1e-6, atol=0,
                               err_msg=f"step {step}")
  # Same values when the step is a traced int32 array, as in the train step.
  steps = jnp.array(list(expected), jnp.int32)
  np.testing.assert_allclose(jax.jit(schedule)(steps), list(expected.values()),
                             rtol=1e-6, atol=0)


def test_exponential_schedule_matches_tf_reference_at_every_step():
  total = int(350 * STEPS_PER_EPOCH)
  steps = np.arange(total + 1)
  ours = np.asarray(jax.jit(optimizers.learning_rate_fn(_config(), STEPS_PER_EPOCH))(
      jnp.asarray(steps, jnp.int32)))
  theirs = _tf_reference_lr(steps, 0.256, STEPS_PER_EPOCH)
  np.testing.assert_allclose(ours, theirs, rtol=1e-6, atol=0)


def test_cosine_and_polynomial_schedules():
  common = {"num_train_steps": 110, "schedule.warmup_epochs": 1.0,
            "schedule.end_learning_rate_factor": 0.1}
  peak, end = 0.256, 0.0256
  cosine = optimizers.learning_rate_fn(_config(**common, **{"schedule.name": "cosine"}), 10)
  np.testing.assert_allclose(
      [cosine(5), cosine(10), cosine(60), cosine(110)],
      [peak * 5 / 10, peak, end + (peak - end) * 0.5, end], rtol=1e-6)
  poly = optimizers.learning_rate_fn(
      _config(**common, **{"schedule.name": "polynomial", "schedule.power": 2.0}), 10)
  np.testing.assert_allclose(
      [poly(10), poly(35), poly(60), poly(110)],
      [peak, end + (peak - end) * 0.75**2, end + (peak - end) * 0.5**2, end], rtol=1e-6)


def test_rmsprop_matches_tf1_rmsprop():
  rng = np.random.RandomState(0)
  init = {"w": rng.normal(size=(3, 4)).astype(np.float32),
          "b": rng.normal(size=(5,)).astype(np.float32)}
  # Gradients of mixed scale so that eps and the ones-initialised accumulator matter.
  grads = [{k: (rng.normal(size=v.shape) * 10.0**rng.uniform(-2, 1, v.shape))
            .astype(np.float32) for k, v in init.items()} for _ in range(5)]
  schedule = optimizers.learning_rate_fn(_config(), STEPS_PER_EPOCH)
  lrs = [float(schedule(s)) for s in (1, 400, 800, 1200, 1600)]  # warmup, then decay

  tf_vars = {k: tf.Variable(v) for k, v in init.items()}
  step = [0]
  tf_opt = tf.compat.v1.train.RMSPropOptimizer(
      lambda: lrs[step[0]], decay=0.9, momentum=0.9, epsilon=1e-3)
  for step[0], g in enumerate(grads):
    tf_opt.apply_gradients([(tf.constant(g[k]), tf_vars[k]) for k in init])
  expected = {k: v.numpy() for k, v in tf_vars.items()}

  def run(tx):
    params = jax.tree.map(jnp.asarray, init)
    state = tx.init(params)
    for g in grads:
      updates, state = tx.update(g, state, params)
      params = optax.apply_updates(params, updates)
    return params

  ours = run(optimizers.create_optimizer(_config(), lambda count: jnp.asarray(lrs)[count]))
  for k in init:
    np.testing.assert_allclose(ours[k], expected[k], rtol=1e-6, atol=0)
    # The displacement, not only the parameters, agrees closely.
    np.testing.assert_allclose(ours[k] - init[k], expected[k] - init[k], rtol=2e-6,
                               atol=0)
  # The comparison has teeth: a zero-initialised accumulator (optax's default) or eps
  # outside the square root each move the parameters by far more than the tolerance.
  lr = lambda count: jnp.asarray(lrs)[count]
  for other in (optax.rmsprop(lr, decay=0.9, eps=1e-3, momentum=0.9),
                optax.rmsprop(lr, decay=0.9, eps=1e-3, initial_scale=1.0,
                              eps_in_sqrt=False, momentum=0.9)):
    wrong = run(other)["w"]
    assert np.max(np.abs(wrong - expected["w"]) / np.abs(expected["w"])) > 1e-3


def _param_tree():
  return {
      "stem_conv": {"conv": {"kernel": jnp.full((3, 3, 3, 2), 0.5)}},
      "stem_bn": {"scale": jnp.full((2,), 3.0), "bias": jnp.full((2,), 4.0)},
      "blocks_0": {
          "project_conv": {"conv": {"kernel": jnp.array([[[[1.0, -2.0]]]])}},
          "project_bn": {"scale": jnp.full((2,), 5.0), "bias": jnp.full((2,), 6.0)},
          "se": {"reduce": {"conv": {"kernel": jnp.array([[[[2.0]]]]),
                                     "bias": jnp.array([3.0])}}},
      },
      "classifier": {"kernel": jnp.array([[1.0, 1.0]]), "bias": jnp.array([-1.0, 2.0])},
  }


def test_l2_loss_skips_exactly_batch_norm():
  # Non-BN leaves: 54·0.25 + (1 + 4) + 4 + 9 + (1 + 1) + (1 + 4) = 38.5; halved.
  assert float(optimizers.l2_loss(_param_tree())) == pytest.approx(38.5 / 2, rel=1e-7)
  assert float(optimizers.l2_loss({"head_bn": {"scale": jnp.ones(4)}})) == 0.0


def _one_step(name, lr=0.1, grad_value=0.0, steps=1):
  tx = optimizers.create_optimizer(
      _config(**{"optimizer.name": name}), optax.constant_schedule(lr))
  params = _param_tree()
  state = tx.init(params)
  grads = jax.tree.map(lambda p: jnp.full_like(p, grad_value), params)
  for _ in range(steps):
    updates, state = tx.update(grads, state, params)
    params = optax.apply_updates(params, updates)
  return params


def test_adamw_and_lars_decay_only_non_bn_non_bias():
  start = _param_tree()
  for name, factor in (("adamw", 1 - 0.1 * 0.05),      # lr · weight_decay
                       ("lars", 1 - 0.1 * 0.001)):     # lr · trust_coefficient
    params = _one_step(name)
    np.testing.assert_allclose(params["stem_conv"]["conv"]["kernel"],
                               start["stem_conv"]["conv"]["kernel"] * factor, rtol=1e-6)
    np.testing.assert_allclose(params["classifier"]["kernel"],
                               start["classifier"]["kernel"] * factor, rtol=1e-6)
    for path in (("stem_bn", "scale"), ("blocks_0", "project_bn", "bias"),
                 ("classifier", "bias"), ("blocks_0", "se", "reduce", "conv", "bias")):
      leaf_new, leaf_old = params, start
      for k in path:
        leaf_new, leaf_old = leaf_new[k], leaf_old[k]
      np.testing.assert_array_equal(leaf_new, leaf_old, err_msg=f"{name} {path}")


def test_sgd_uses_heavy_ball_momentum():
  params = _one_step("sgd", lr=0.1, grad_value=1.0, steps=2)
  # Two steps of constant gradient 1: -0.1·1 then -0.1·(1 + 0.9).
  np.testing.assert_allclose(params["classifier"]["bias"],
                             np.array([-1.0, 2.0]) - 0.1 - 0.19, rtol=1e-6)


@pytest.mark.parametrize("key, value, message", [
    ("optimizer.name", "adam", "config.optimizer.name"),
    ("schedule.name", "step", "config.schedule.name"),
    ("schedule.decay_epochs", 0.0, "config.schedule.decay_epochs"),
    ("optimizer.base_batch_size", 0, "config.optimizer.base_batch_size"),
])
def test_bad_config_raises_naming_the_key(key, value, message):
  config = _config(**{key: value})
  with pytest.raises(ValueError, match=message):
    schedule = optimizers.learning_rate_fn(config, STEPS_PER_EPOCH)
    optimizers.create_optimizer(config, schedule)


def test_cosine_without_steps_after_warmup_raises():
  config = _config(**{"schedule.name": "cosine", "num_train_steps": 10})
  with pytest.raises(ValueError, match="config.num_train_steps"):
    optimizers.learning_rate_fn(config, 100.0)
