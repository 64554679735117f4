"""ONNX through jax2onnx, with a dynamic batch axis ("batch") unless a batch size is fixed.

  session = onnxruntime.InferenceSession("model.onnx")
  logits, = session.run(None, {"images": images})

jax2onnx converts the jaxpr primitive by primitive (convolutions, depthwise as grouped
Conv, top_k as TopK), so the graph is plain ONNX that any runtime with opset 23 runs.
"""

from __future__ import annotations

import os
from typing import Callable, Sequence

import jax

FILE = "model.onnx"
OPSET = 23


def write(function: Callable, spec: jax.ShapeDtypeStruct, input_name: str,
          output_names: Sequence[str], directory: str) -> str:
  """Converts `function` (images → dict of outputs, weights baked in) into directory/FILE."""
  import onnx
  from jax2onnx import to_onnx  # heavy: only when exporting ONNX
  names = list(output_names)

  def as_tuple(images):
    outputs = function(images)
    return tuple(outputs[n] for n in names)
  model = to_onnx(as_tuple, [spec], model_name="efficientnet", opset=OPSET,
                  return_mode="proto", input_names=[input_name], output_names=names)
  # jax2onnx annotates some intermediate values with NHWC shapes where its lowering is
  # NCHW (the squeeze-excite means); onnxruntime then warns while merging them. The
  # annotations are optional (runtimes infer shapes), so leave them out.
  del model.graph.value_info[:]
  path = os.path.join(directory, FILE)
  onnx.save(model, path)
  return path
