"""Export for serving: StableHLO (`jax.export`), TF SavedModel (jax2tf), TFLite (float32
and int8) and ONNX (jax2onnx), each with a `model.json` recording the export.

  from efficientnet_jax import export
  export.export("weights/b0", "serving/b0_onnx", format="onnx")
  export.export("runs/demo", "serving/demo_int8", format="tflite", quantize="int8",
                calibration="digits:train")

The command line is `efficientnet-export` (efficientnet_jax/commands/export.py).
"""

from efficientnet_jax.export.exporter import (ARTIFACT_FILES, BFLOAT16_FORMATS, DTYPES,  # noqa: F401
                                              FORMATS, QUANTIZATIONS, ExportOptions,
                                              artifact_path, export)
