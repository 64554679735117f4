"""Export weights for serving: StableHLO, TF SavedModel, TFLite (float32 or int8) or ONNX.

  efficientnet-export weights/b0 serving/b0_stablehlo --format=stablehlo
  efficientnet-export weights/b0 serving/b0_savedmodel/1 --format=savedmodel --include_preprocessing
  efficientnet-export runs/demo serving/demo_int8 --format=tflite --quantize=int8 \\
      --calibration=digits:train
  efficientnet-export weights/lite0 serving/lite0_onnx --format=onnx --batch_size=1

WEIGHTS: a converted-weights directory (efficientnet-convert) or a training workdir (its
latest EMA weights). OUT: a new directory holding the artifact (model.stablehlo,
saved_model.pb + variables/, model.tflite or model.onnx), a copy of model.json with an
"export" section (inputs, outputs, options, versions) and, for 1000-class weights, the
ImageNet label names (labels.txt). The batch axis is symbolic (one artifact serves every
batch size) unless --batch_size fixes it. Inputs: normalised float32 images
[N, R, R, 3] → {"logits"}; with --include_preprocessing, uint8 RGB images at the weights'
resolution → {"logits", "probabilities", "top5_ids"}.
"""

from __future__ import annotations

import json
import os

from absl import app, flags

from efficientnet_jax.export import exporter

_FORMAT = flags.DEFINE_enum("format", None, list(exporter.FORMATS), "Artifact format.")
_BATCH = flags.DEFINE_integer("batch_size", None,
                              "Fixed batch size; default: symbolic (any batch size).")
_DTYPE = flags.DEFINE_enum("dtype", "float32", list(exporter.DTYPES),
                           "Compute dtype (bfloat16: stablehlo and savedmodel only); "
                           "inputs and outputs stay float32.")
_PREPROCESSING = flags.DEFINE_bool(
    "include_preprocessing", False, "Take uint8 RGB images at the weights' resolution, "
    "normalise inside, return logits, probabilities and top-5 ids.")
_QUANTIZE = flags.DEFINE_enum("quantize", "none", list(exporter.QUANTIZATIONS),
                              "int8: post-training quantization (tflite), needs --calibration.")
_CALIBRATION = flags.DEFINE_string(
    "calibration", None, "int8's representative data: a tfds name:split (digits:train, "
    "imagenet2012:train[:1%]) or a folder of images.")
_CALIBRATION_SIZE = flags.DEFINE_integer("calibration_size",
                                         exporter.DEFAULT_CALIBRATION_SIZE,
                                         "Calibration images used.")
_DATA_DIR = flags.DEFINE_string("data_dir", None, "tfds data dir of --calibration.")
_RESOLUTION = flags.DEFINE_integer("resolution", None,
                                   "Serve at this size; default: the weights' resolution.")
_OVERWRITE = flags.DEFINE_bool("overwrite", False,
                               "Replace OUT if it exists (once the new artifact is complete).")
flags.mark_flag_as_required("format")


def main(argv):
  if len(argv) != 3:
    raise app.UsageError("usage: efficientnet-export WEIGHTS OUT "
                         f"--format={'|'.join(exporter.FORMATS)}")
  weights, out = argv[1:]
  options = exporter.ExportOptions(
      format=_FORMAT.value, batch_size=_BATCH.value, dtype=_DTYPE.value,
      include_preprocessing=_PREPROCESSING.value, quantize=_QUANTIZE.value,
      calibration=_CALIBRATION.value, calibration_size=_CALIBRATION_SIZE.value,
      resolution=_RESOLUTION.value, data_dir=_DATA_DIR.value)
  try:  # bad input: its message, not a traceback
    path = exporter.export(weights, out, options, overwrite=_OVERWRITE.value)
  except ValueError as e:
    raise app.UsageError(str(e)) from None
  with open(os.path.join(path, exporter.INFO_FILE)) as f:
    record = json.load(f)["export"]
  print(f"wrote {path}: {exporter.ARTIFACT_FILES[options.format]}, inputs "
        f"{json.dumps(record['inputs'][0]['shape'])} {record['inputs'][0]['dtype']}, "
        f"outputs {', '.join(o['name'] for o in record['outputs'])}")


if __name__ == "__main__":
  app.run(main)

