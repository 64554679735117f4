"""The function every export format traces: the model in eval mode, variables → outputs.

Without preprocessing it maps normalised float32 images [N, R, R, 3] to logits; with
`include_preprocessing` it takes uint8 RGB images at the weights' resolution, applies the
normalisation recorded with the weights (so that a serving client cannot get mean/std
wrong) and returns logits, softmax probabilities and the top-5 class ids.

The variables are an argument rather than closed over, because the formats differ in
where the weights live: StableHLO and ONNX bake them into the graph as constants (`bake`),
a SavedModel keeps them as TF variables (a graph of constants hits protobuf's 2 GiB limit
for the biggest variants).
"""

from __future__ import annotations

import functools
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from efficientnet_jax.data import preprocessing
from efficientnet_jax.weights import weights_directory

TOP_K = 5
LOGITS = "logits"
# With include_preprocessing, in the order of a flattened dict (sorted keys), which is the
# order jax2onnx and the TFLite signature list the outputs in.
OUTPUT_NAMES = ("logits", "probabilities", "top5_ids")
INPUT_NAME = "images"

Function = Callable[[dict[str, Any], jax.Array], Any]


def input_dtype(include_preprocessing: bool) -> np.dtype:
  return np.dtype(np.uint8 if include_preprocessing else np.float32)


def output_names(include_preprocessing: bool) -> tuple[str, ...]:
  return OUTPUT_NAMES if include_preprocessing else (LOGITS,)


def serving_function(model: Any, info: weights_directory.WeightsInfo,
                     include_preprocessing: bool = False) -> Function:
  """(variables, images) → {"logits"} or, with `include_preprocessing`, the dict of
  OUTPUT_NAMES. Outputs are float32 (top-5 ids int32) whatever the compute dtype."""
  top_k = min(TOP_K, model.num_classes)

  def logits_of(variables: dict[str, Any], images: jax.Array) -> jax.Array:
    return model.apply(variables, images.astype(model.dtype), train=False).astype(jnp.float32)

  def classify(variables: dict[str, Any], images: jax.Array) -> dict[str, jax.Array]:
    if not include_preprocessing:
      return {LOGITS: logits_of(variables, images)}
    logits = logits_of(variables, preprocessing.normalize(images, info.mean_rgb,
                                                          info.stddev_rgb))
    return {"logits": logits, "probabilities": jax.nn.softmax(logits),
            "top5_ids": top_k_ids(logits, top_k)}
  return classify


def top_k_ids(logits: jax.Array, k: int) -> jax.Array:
  """The ids of the k largest logits, largest first, ties to the lower id (as a stable
  sort of the negated probabilities orders them, which is what `predict` does).

  k rounds of max-and-mask instead of `lax.top_k` or `argmax`: the pinned JAX lowers
  top_k to a `stablehlo.composite` that TensorFlow's XlaCallModule (StableHLO 1.13) cannot
  deserialise, and argmax to a two-operand reduce that the TFLite converter cannot
  legalise; a max, a compare and a min over the class ids are plain ops everywhere.
  """
  classes = jnp.arange(logits.shape[-1], dtype=jnp.int32)
  ids = []
  for _ in range(k):
    is_best = logits == jnp.max(logits, axis=-1, keepdims=True)
    best = jnp.min(jnp.where(is_best, classes, logits.shape[-1]), axis=-1)
    ids.append(best)
    logits = jnp.where(classes == best[:, None], -jnp.inf, logits)
  return jnp.stack(ids, axis=-1)


def bake(function: Function, variables: dict[str, Any]) -> Callable[[jax.Array], Any]:
  """images → outputs with the variables as numpy leaves: traced as constants, so the
  artifact needs no separate weights."""
  return functools.partial(function, jax.tree.map(np.asarray, variables))
