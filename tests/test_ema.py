"""The weight EMA against tf.train.ExponentialMovingAverage(decay, num_updates=step)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import tensorflow as tf

from efficientnet_jax.training import ema


def test_ema_decay_values():
  assert float(ema.ema_decay(0, 0.9999)) == pytest.approx(1 / 10)
  assert float(ema.ema_decay(1, 0.9999)) == pytest.approx(2 / 11)  # the first update
  assert float(ema.ema_decay(jnp.int32(50), 0.9999)) == pytest.approx(51 / 60)
  assert float(ema.ema_decay(1_000_000, 0.9999)) == pytest.approx(0.9999)


def test_update_ema_matches_tf_exponential_moving_average():
  rng = np.random.RandomState(0)
  init = {"params": {"kernel": rng.normal(size=(3, 4)).astype(np.float32)},
          "batch_stats": {"mean": rng.normal(size=(4,)).astype(np.float32),
                          "var": rng.uniform(0.5, 2, size=(4,)).astype(np.float32)}}
  # Early steps, where (1 + t) / (10 + t) wins, then steps where 0.9999 caps it.
  steps = [1, 2, 3, 4, 5, 6, 200_000, 200_001, 200_002]
  values = [jax.tree.map(lambda v: (v + rng.normal(size=v.shape)).astype(np.float32), init)
            for _ in steps]

  leaves = jax.tree.leaves(init)
  tf_vars = [tf.Variable(v) for v in leaves]
  num_updates = tf.Variable(0, dtype=tf.int64)
  tf_ema = tf.train.ExponentialMovingAverage(decay=0.9999, num_updates=num_updates)
  tf_ema.apply(tf_vars)  # creates the shadows, equal to the initial weights

  update = jax.jit(ema.update_ema, static_argnums=3)
  ours = jax.tree.map(jnp.asarray, init)
  for step, new in zip(steps, values):
    for var, value in zip(tf_vars, jax.tree.leaves(new)):
      var.assign(value)
    num_updates.assign(step)
    tf_ema.apply(tf_vars)
    ours = update(ours, new, jnp.int32(step), 0.9999)
    for got, var in zip(jax.tree.leaves(ours), tf_vars):
      np.testing.assert_allclose(got, tf_ema.average(var).numpy(), rtol=1e-6, atol=1e-7,
                                 err_msg=f"step {step}")

  # By hand for the first update: decay 2/11 towards the first values.
  first = ema.update_ema(init, values[0], 1, 0.9999)
  np.testing.assert_allclose(
      first["batch_stats"]["mean"],
      init["batch_stats"]["mean"] * 2 / 11 + values[0]["batch_stats"]["mean"] * 9 / 11,
      rtol=1e-6)
