"""StableHLO: a serialised `jax.export.Exported`, lowered for CPU, CUDA and TPU at once.

Reload it without this package's code (any JAX at least as new as the exporting one's
serialisation version):

  exported = jax.export.deserialize(open("model.stablehlo", "rb").read())
  outputs = exported.call(images)      # {"logits": ...}

The batch axis is a symbolic dimension ("batch") unless a batch size was fixed, so one
artifact runs every batch size; jax compiles it per shape at the first call.
"""

from __future__ import annotations

import os
from typing import Callable

import jax
import numpy as np

FILE = "model.stablehlo"
PLATFORMS = ("cpu", "cuda", "tpu")


def input_spec(batch_size: int | None, resolution: int, dtype: np.dtype) -> jax.ShapeDtypeStruct:
  """[N, R, R, 3]; N symbolic ("batch") when `batch_size` is None."""
  batch = jax.export.symbolic_shape("batch")[0] if batch_size is None else batch_size
  return jax.ShapeDtypeStruct((batch, resolution, resolution, 3), dtype)


def write(function: Callable, spec: jax.ShapeDtypeStruct, directory: str) -> str:
  """Exports `function` (images → outputs, weights baked in) into directory/FILE."""
  exported = jax.export.export(jax.jit(function), platforms=PLATFORMS)(spec)
  path = os.path.join(directory, FILE)
  with open(path, "wb") as f:
    f.write(exported.serialize())
  return path
