"""Exact evaluation on a mesh: top-1, top-5 and loss over every example of the eval split.

Used by training (on the EMA weights, and the raw ones if asked), by `inference.evaluate`
and so by efficientnet-evaluate. Every process reads its part of the split, padded to a
common batch count; padding examples are masked out, so each real example counts once
whatever the batch size and the number of processes.
"""

from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import tensorflow as tf

from efficientnet_jax import terminal
from efficientnet_jax.data import input_pipeline, preprocessing
from efficientnet_jax.training import confusion_matrix, sharding
from efficientnet_jax.training.train_step import cross_entropy


def eval_step(params: Any, batch_stats: Any, batch: dict[str, jax.Array], *, model: nn.Module,
              config: ml_collections.ConfigDict) -> dict[str, jax.Array]:
  """Sums over the real (mask True) examples of the batch: loss, top-1, top-5, count, and
  the confusion matrix (true class × predicted class) for up to 100 classes."""
  images = preprocessing.normalize(batch["image"], config.input.mean_rgb,
                                   config.input.stddev_rgb)
  logits = model.apply({"params": params, "batch_stats": batch_stats}, images, train=False)
  labels, mask = batch["label"], batch["mask"].astype(jnp.float32)
  loss = cross_entropy(logits, labels, model.num_classes, 0.0)
  k = min(5, model.num_classes)
  top5 = jnp.any(jax.lax.top_k(logits, k)[1] == labels[:, None], axis=-1)
  predictions = jnp.argmax(logits, -1)
  sums = {"loss": jnp.sum(loss * mask),
          "top1": jnp.sum((predictions == labels) * mask),
          "top5": jnp.sum(top5 * mask),
          "count": jnp.sum(mask)}
  if model.num_classes <= confusion_matrix.MAX_CLASSES:
    sums["confusion"] = jnp.zeros((model.num_classes,) * 2).at[labels, predictions].add(mask)
  return sums


class Evaluator:
  """Evaluates weights of `model` on `config`'s eval split at `resolution`, on `mesh`.

  Owns the jitted eval step and, with config.input.cache_eval, the eval dataset: it is
  built once and its preprocessed images stay in memory, so later evaluations of the same
  evaluator skip the decoding.
  """

  def __init__(self, model: nn.Module, config: ml_collections.ConfigDict,
               mesh: jax.sharding.Mesh, resolution: int):
    self.config = config
    self.mesh = mesh
    self.resolution = resolution
    replicated = sharding.replicated(mesh)
    self._step = jax.jit(functools.partial(eval_step, model=model, config=config),
                         in_shardings=(replicated, replicated, sharding.batch_sharding(mesh)),
                         out_shardings=replicated)
    self._cached_dataset: tuple[tf.data.Dataset, int] | None = None
    # Counts [true class, predicted class] of the last evaluation; None beyond 100 classes.
    self.confusion_matrix: np.ndarray | None = None

  def dataset(self) -> tuple[tf.data.Dataset, int]:
    """This process's eval batches and their count (see `input_pipeline.create_eval_dataset`)."""
    if self._cached_dataset is not None:
      return self._cached_dataset
    dataset = input_pipeline.create_eval_dataset(
        self.config, self.resolution, process_index=jax.process_index(),
        process_count=jax.process_count())
    if self.config.input.cache_eval:
      self._cached_dataset = dataset
    return dataset

  def evaluate(self, params: Any, batch_stats: Any) -> dict[str, float]:
    """Top-1, top-5 and loss over every example of the eval split (padding masked out),
    with the example and batch counts."""
    dataset, num_batches = self.dataset()
    totals = None
    for batch in terminal.progress(dataset.as_numpy_iterator(), total=num_batches,
                                   desc="eval", unit="batch", leave=False,
                                   enabled=jax.process_index() == 0):
      sums = self._step(params, batch_stats, sharding.global_batch(batch, self.mesh))
      totals = sums if totals is None else jax.tree.map(jnp.add, totals, sums)
    totals = jax.device_get(totals)
    confusion = totals.pop("confusion", None)
    self.confusion_matrix = None if confusion is None else np.rint(confusion).astype(np.int64)
    count = float(totals["count"])
    return {"top1": float(totals["top1"]) / count, "top5": float(totals["top5"]) / count,
            "loss": float(totals["loss"]) / count, "num_examples": count,
            "num_batches": num_batches}


def describe(results: dict[str, float], prefix: str = "eval_") -> str:
  """'top-1 97.50% (351/360), top-5 99.72%, loss 0.105' from `evaluate`'s results (keys
  with `prefix`)."""
  count = int(results[f"{prefix}num_examples"])
  return (f"top-1 {results[f'{prefix}top1']:.2%} "
          f"({round(results[f'{prefix}top1'] * count)}/{count}), "
          f"top-5 {results[f'{prefix}top5']:.2%}, loss {results[f'{prefix}loss']:.3f}")
