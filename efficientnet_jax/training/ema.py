"""Exponential moving average of the weights (params and batch_stats), as the reference.

tensorflow/tpu builds `tf.train.ExponentialMovingAverage(decay, num_updates=global_step)`
and runs `ema.apply` under a control dependency on the train op, and
`optimizer.minimize(loss, global_step)` increments global_step inside that op. So the
average after the n-th optimizer update uses num_updates = n (1 at the first update),
with decay min(max_decay, (1 + n) / (10 + n)). The shadow copies start equal to the
initial weights.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp


def ema_decay(step: jax.typing.ArrayLike, max_decay: float) -> jax.Array:
  """min(max_decay, (1 + step) / (10 + step)): averages over few updates early on."""
  t = jnp.asarray(step, jnp.float32)
  return jnp.minimum(max_decay, (1.0 + t) / (10.0 + t))


def update_ema(ema_tree: Any, new_tree: Any, step: jax.typing.ArrayLike,
               max_decay: float) -> Any:
  """Moves every leaf of `ema_tree` towards `new_tree` by (1 - decay).

  Call it after the optimizer update with `step` = the number of updates done so far,
  this one included (the train state's step after incrementing: 1 after the first
  update). Initialise `ema_tree` as a copy of the initial weights.
  """
  decay = ema_decay(step, max_decay)
  # TF's form: shadow -= (1 - decay) · (shadow - value).
  return jax.tree.map(
      lambda e, v: e - ((1.0 - decay) * (e - v)).astype(e.dtype), ema_tree, new_tree)
