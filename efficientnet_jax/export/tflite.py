"""TFLite: float32, or int8 post-training quantization from a representative dataset; run
by the LiteRT interpreter (`ai-edge-litert`).

  interpreter = ai_edge_litert.interpreter.Interpreter("model.tflite")
  outputs = interpreter.get_signature_runner()(images=images)   # {"logits": ...}

Route (pinned JAX and TF): jax2tf, whose only mode left is native serialisation, puts
the model's StableHLO in an XlaCallModule op; a SavedModel of it, lowered for CPU only,
goes through `tf.lite.TFLiteConverter.from_saved_model`, which legalises that StableHLO to
TFLite builtin ops (CONV_2D, DEPTHWISE_CONV_2D, FULLY_CONNECTED, ...; no Flex/Select TF
ops, so the plain LiteRT interpreter runs it). The symbolic batch survives as a dynamic
first dimension: the signature runner resizes the input for each batch size.

int8: weights and activations int8 (`Optimize.DEFAULT` with a representative dataset),
float input and output, so a client feeds what the float model takes. The converter
falls back to float for ops without an int8 kernel rather than failing.

Sigmoid (in swish and the squeeze-excite gate): JAX lowers it to 1/(1 + exp(-x)), which
the converter keeps as four ops. Quantized, exp(-x) spans ~[0, 1e9] in 256 steps, so
1 + exp(-x) rounds to 0 and LiteRT's int8 DIV refuses to run (`data[i] != zero_point`);
while converting we lower it to StableHLO's own `logistic` op instead, which becomes
TFLite's LOGISTIC (one op, with an int8 kernel of output range [0, 1]).
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from typing import Any, Iterator, Sequence

import numpy as np

from efficientnet_jax.export import savedmodel, serving_function

FILE = "model.tflite"


def write(function: serving_function.Function, variables: dict[str, Any],
          batch_size: int | None, resolution: int, dtype: np.dtype, directory: str,
          calibration: Sequence[np.ndarray] | None = None) -> str:
  """directory/FILE: float32 (`calibration` None) or int8 calibrated on `calibration`
  (batches [1, R, R, 3] of the model's input dtype)."""
  import tensorflow as tf
  with tempfile.TemporaryDirectory(dir=directory, prefix=".savedmodel-") as saved:
    with logistic_as_one_op():
      savedmodel.write(function, variables, batch_size, resolution, dtype, saved,
                       platforms=("cpu",), polymorphic=True)
    converter = tf.lite.TFLiteConverter.from_saved_model(saved)
    if calibration is not None:
      batches = list(calibration)
      converter.optimizations = [tf.lite.Optimize.DEFAULT]
      converter.representative_dataset = lambda: ([b] for b in batches)
    flatbuffer = converter.convert()
  path = os.path.join(directory, FILE)
  with open(path, "wb") as f:
    f.write(flatbuffer)
  return path


@contextlib.contextmanager
def logistic_as_one_op() -> Iterator[None]:
  """Inside the block, `lax.logistic` (jax.nn.sigmoid) lowers to `stablehlo.logistic`.

  JAX registers (and we restore) its own decomposed rule; lowerings are looked up when a
  function is lowered, so only what is exported inside the block is affected.
  """
  import jax
  from jax._src.interpreters import mlir as mlir_internal  # the registry, to restore it
  from jax.extend.mlir.dialects import stablehlo
  from jax.interpreters import mlir
  primitive = jax.lax.logistic_p
  previous = mlir_internal._lowerings[primitive]

  def one_op(ctx, x, accuracy=None):
    del ctx, accuracy
    return [stablehlo.logistic(x)]
  mlir.register_lowering(primitive, one_op)
  try:
    yield
  finally:
    mlir_internal._lowerings[primitive] = previous
