"""TF SavedModel through jax2tf, with a `serving_default` signature TF Serving loads.

jax2tf (the pinned JAX has only its native serialisation: `native_serialization=False`
is deprecated and ignored) embeds the model's StableHLO, lowered for CPU, CUDA and TPU,
in one `XlaCallModule` op; the weights are TF variables (saved under `variables/`, not as
graph constants, which would hit protobuf's 2 GiB limit for the biggest variants).
The batch axis is polymorphic unless a batch size is fixed.

  model = tf.saved_model.load("OUT")
  outputs = model.signatures["serving_default"](images=tf.constant(images))
  # TF Serving: the SavedModel directory is a model version (<base>/<version>/saved_model.pb)
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from efficientnet_jax.export import serving_function

PLATFORMS = ("cpu", "cuda", "tpu")
SIGNATURE = "serving_default"


def module(function: serving_function.Function, variables: dict[str, Any],
           batch_size: int | None, resolution: int, dtype: np.dtype,
           platforms: tuple[str, ...] = PLATFORMS, polymorphic: bool = False):
  """A tf.Module holding the variables and `serve`, the converted function with one
  input signature (images [N, R, R, 3] of `dtype`) returning a dict of outputs.

  `polymorphic`: convert with a symbolic batch even when the signature fixes it (the
  TFLite converter fails on the static-shape graph's batched matmuls)."""
  import tensorflow as tf
  from jax.experimental import jax2tf
  batch = "batch" if batch_size is None or polymorphic else str(batch_size)
  converted = jax2tf.convert(function, polymorphic_shapes=[None, f"({batch}, ...)"],
                             native_serialization_platforms=platforms, with_gradient=False)
  holder = tf.Module()
  holder.variables_tree = tf.nest.map_structure(
      lambda v: tf.Variable(np.asarray(v), trainable=False), variables)
  signature = tf.TensorSpec((batch_size, resolution, resolution, 3), tf.as_dtype(dtype),
                            name=serving_function.INPUT_NAME)

  @tf.function(input_signature=[signature], autograph=False)
  def serve(images):
    return converted(holder.variables_tree, images)
  holder.serve = serve
  return holder


def write(function: serving_function.Function, variables: dict[str, Any],
          batch_size: int | None, resolution: int, dtype: np.dtype, directory: str,
          platforms: tuple[str, ...] = PLATFORMS, polymorphic: bool = False) -> str:
  """Saves the SavedModel's files (saved_model.pb, variables/) into `directory`."""
  import tensorflow as tf
  holder = module(function, variables, batch_size, resolution, dtype, platforms, polymorphic)
  tf.saved_model.save(holder, directory, signatures={SIGNATURE: holder.serve})
  return directory
