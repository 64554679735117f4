"""Keep TensorFlow, which only runs the host-side input pipeline, off the accelerators.

TF would otherwise reserve most of a GPU's memory that JAX needs, or claim the TPU. Call
`hide_accelerators_from_tf()` once where a process starts (efficientnet_jax.main and the
commands that read data do), before TensorFlow runs anything; importing this package
changes nothing.
"""

from __future__ import annotations


def hide_accelerators_from_tf() -> None:
  """Makes TF see no GPU or TPU. Does nothing where there are none, nor once TF has set its
  devices up (too late: call it before TF runs anything)."""
  import tensorflow as tf  # heavy: only when asked for
  for kind in ("GPU", "TPU"):
    try:
      tf.config.set_visible_devices([], kind)
    except (RuntimeError, ValueError):  # devices already initialised / no such device type
      pass
