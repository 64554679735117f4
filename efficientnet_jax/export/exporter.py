"""`export`: weights (a weights directory, a training workdir or a `Model`) → a serving
artifact in one of FORMATS, beside a copy of `model.json` that records the export.

OUT is a directory:

  OUT/model.stablehlo | saved_model.pb + variables/ | model.tflite | model.onnx
  OUT/model.json   the weights' settings (classes, preprocessing, source) + "export"
  OUT/labels.txt   class names, one a line (ImageNet weights: 1000 classes)

Every option is checked (and a calibration set's metadata read) before any weights are
loaded or anything converted; the artifact is written into a hidden temporary directory
beside OUT and renamed to OUT only when complete, so a failed export leaves nothing at OUT.
"""

from __future__ import annotations

import dataclasses
import datetime
import importlib.metadata
import json
import os
import shutil
import sys
import tempfile
from typing import Any, Sequence

import numpy as np

from efficientnet_jax import model_api
from efficientnet_jax.export import calibration as calibration_lib
from efficientnet_jax.export import serving_function
from efficientnet_jax.weights import weights_directory

FORMATS = ("stablehlo", "savedmodel", "tflite", "onnx")
DTYPES = ("float32", "bfloat16")
BFLOAT16_FORMATS = ("stablehlo", "savedmodel")  # LiteRT and onnxruntime's CPU kernels: no
QUANTIZATIONS = ("none", "int8")
INT8_FORMATS = ("tflite",)
DEFAULT_CALIBRATION_SIZE = 200
INFO_FILE = weights_directory.INFO_FILE
LABELS_FILE = "labels.txt"
ARTIFACT_FILES = {"stablehlo": "model.stablehlo", "savedmodel": "saved_model.pb",
                  "tflite": "model.tflite", "onnx": "model.onnx"}
PLATFORMS = {"stablehlo": ("cpu", "cuda", "tpu"), "savedmodel": ("cpu", "cuda", "tpu"),
             "tflite": ("cpu",), "onnx": ("cpu",)}
_VERSIONS = {"stablehlo": ("jax",), "savedmodel": ("jax", "tensorflow-cpu", "tensorflow"),
             "tflite": ("jax", "tensorflow-cpu", "tensorflow"),
             "onnx": ("jax", "jax2onnx", "onnx")}

Weights = str | os.PathLike | model_api.Model


@dataclasses.dataclass(frozen=True)
class ExportOptions:
  """What to export; `check` names the first problem."""

  format: str = "stablehlo"
  batch_size: int | None = None        # None: symbolic (every batch size, one artifact)
  dtype: str = "float32"               # compute dtype; inputs and outputs stay float32
  include_preprocessing: bool = False  # uint8 images in; logits, probabilities, top-5 out
  quantize: str = "none"               # "int8": TFLite post-training quantization
  calibration: str | None = None       # int8's representative data: tfds name:split or folder
  calibration_size: int = DEFAULT_CALIBRATION_SIZE
  resolution: int | None = None        # None: the weights' evaluation resolution
  data_dir: str | None = None          # tfds data dir of a calibration dataset

  def check(self) -> None:
    if self.format not in FORMATS:
      raise ValueError(f"unknown export format {self.format!r}; formats: {', '.join(FORMATS)}")
    if self.batch_size is not None and (not isinstance(self.batch_size, int)
                                        or self.batch_size < 1):
      raise ValueError(f"batch_size must be an integer >= 1 or None (symbolic), got "
                       f"{self.batch_size!r}")
    if self.dtype not in DTYPES:
      raise ValueError(f"unknown dtype {self.dtype!r}; dtypes: {', '.join(DTYPES)}")
    if self.dtype != "float32" and self.format not in BFLOAT16_FORMATS:
      raise ValueError(f"dtype={self.dtype} is not supported by format {self.format} "
                       f"(bfloat16: {', '.join(BFLOAT16_FORMATS)})")
    if self.quantize not in QUANTIZATIONS:
      raise ValueError(f"unknown quantize={self.quantize!r}; choices: "
                       f"{', '.join(QUANTIZATIONS)}")
    if self.quantize != "none":
      if self.format not in INT8_FORMATS:
        raise ValueError(f"quantize={self.quantize} is supported by format "
                         f"{', '.join(INT8_FORMATS)} only, not {self.format}")
      if self.dtype != "float32":
        raise ValueError("quantize=int8 quantizes the float32 model: leave dtype=float32")
      if not self.calibration:
        raise ValueError(f"quantize={self.quantize} needs calibration data: set calibration "
                         "to a tfds 'name:split' (e.g. digits:train) or an image folder")
    elif self.calibration:
      raise ValueError("calibration data is only used with quantize=int8")
    if not isinstance(self.calibration_size, int) or self.calibration_size < 1:
      raise ValueError(f"calibration_size must be >= 1, got {self.calibration_size!r}")
    if self.resolution is not None and (not isinstance(self.resolution, int)
                                        or self.resolution < 1):
      raise ValueError(f"resolution must be an integer >= 1, got {self.resolution!r}")


def export(weights: Weights, out: str | os.PathLike, options: ExportOptions | None = None, *,
           overwrite: bool = False, progress: bool | None = None, **option_values: Any) -> str:
  """Writes the artifact of `weights` into the directory `out`; returns its path.

  Args:
    weights: a converted-weights directory, a training workdir, or a `Model`
      (`create_model(...)`) already in memory.
    out: the directory to create (it must not exist unless `overwrite`).
    options: an `ExportOptions`, or its fields as keyword arguments
      (`export("weights/b0", "out", format="onnx", batch_size=1)`).
    overwrite: replace `out` if it exists (only once the new artifact is complete).
    progress: a progress bar over the phases; None: when stderr is a terminal.
  """
  from tqdm.auto import tqdm
  options = dataclasses.replace(options or ExportOptions(), **option_values)
  options.check()
  out = os.path.abspath(os.fspath(out))
  if os.path.lexists(out) and not overwrite:
    raise ValueError(f"output path {out} exists: choose another or pass overwrite")
  info = _info(weights)
  if info.num_classes < 1:
    raise ValueError("these weights have no classifier (num_classes 0, a backbone): "
                     "nothing to serve")
  info = dataclasses.replace(info, resolution=options.resolution or info.resolution)
  source = None
  if options.quantize != "none":
    source = calibration_lib.parse(options.calibration)
    calibration_lib.check(source, info, options.calibration_size, options.data_dir)

  phases = ["load weights"] + (["calibration data"] if source else []) + [
      f"convert to {options.format}", f"write {INFO_FILE}", "move into place"]
  bar = tqdm(total=len(phases), desc=f"export {options.format}", unit="phase",
             disable=not sys.stderr.isatty() if progress is None else not progress)

  def phase(i: int) -> None:
    bar.set_postfix_str(phases[i])
    if i:
      bar.update(1)

  parent = os.path.dirname(out)
  os.makedirs(parent, exist_ok=True)
  work = tempfile.mkdtemp(prefix=f".{os.path.basename(out)}.", suffix=".partial", dir=parent)
  try:
    step = 0
    phase(step)
    model, variables = _model(weights, options)
    function = serving_function.serving_function(model, info, options.include_preprocessing)
    batches = None
    if source is not None:
      step += 1
      phase(step)
      batches = calibration_lib.load(source, info, options.calibration_size,
                                     options.include_preprocessing, options.data_dir)
    step += 1
    phase(step)
    _convert(function, variables, info, options, work, batches)
    step += 1
    phase(step)
    _write_info(work, info, options, batches, model.num_classes)
    step += 1
    phase(step)
    _move(work, out)
    bar.update(1)
  except BaseException:
    shutil.rmtree(work, ignore_errors=True)
    raise
  finally:
    bar.close()
  return out


def artifact_path(out: str | os.PathLike, format: str) -> str:
  """The file a runtime loads (for a SavedModel: its directory, `out` itself)."""
  out = os.fspath(out)
  return out if format == "savedmodel" else os.path.join(out, ARTIFACT_FILES[format])


def _info(weights: Weights) -> weights_directory.WeightsInfo:
  if isinstance(weights, model_api.Model):
    return weights.info
  path = os.fspath(weights)
  if not os.path.isdir(path):
    raise ValueError(f"weights {path!r} is not a directory (a converted-weights directory "
                     "or a training workdir)")
  return model_api.read_info(path)


def _model(weights: Weights, options: ExportOptions):
  """The module (grouped-convolution depthwise: the op every runtime has; the CPU default,
  a sum of shifted slices, would export as hundreds of slices) and its variables."""
  import jax.numpy as jnp
  overrides = dict(depthwise_impl="xla", dtype=jnp.dtype(options.dtype))
  if isinstance(weights, model_api.Model):
    return weights.module.clone(**overrides), weights.variables
  model, variables, _ = model_api.create_model(weights=weights, **overrides)
  return model, variables


def _convert(function: serving_function.Function, variables: dict[str, Any],
             info: weights_directory.WeightsInfo, options: ExportOptions, work: str,
             calibration: Sequence[np.ndarray] | None) -> None:
  from efficientnet_jax.export import stablehlo
  dtype = serving_function.input_dtype(options.include_preprocessing)
  resolution = info.resolution
  if options.format == "stablehlo":
    stablehlo.write(serving_function.bake(function, variables),
                    stablehlo.input_spec(options.batch_size, resolution, dtype), work)
  elif options.format == "onnx":
    from efficientnet_jax.export import onnx
    onnx.write(serving_function.bake(function, variables),
               stablehlo.input_spec(options.batch_size, resolution, dtype),
               serving_function.INPUT_NAME,
               serving_function.output_names(options.include_preprocessing), work)
  elif options.format == "savedmodel":
    from efficientnet_jax.export import savedmodel
    savedmodel.write(function, variables, options.batch_size, resolution, dtype, work)
  else:
    from efficientnet_jax.export import tflite
    tflite.write(function, variables, options.batch_size, resolution, dtype, work,
                 calibration)


def _write_info(work: str, info: weights_directory.WeightsInfo, options: ExportOptions,
                calibration: Sequence[np.ndarray] | None, num_classes: int) -> None:
  """model.json: the weights' record (preprocessing.resolution = the served size) plus
  what was exported and how; labels.txt for ImageNet weights."""
  record = info.to_json()
  dtype = serving_function.input_dtype(options.include_preprocessing)
  batch = options.batch_size
  k = min(serving_function.TOP_K, num_classes)
  outputs = [{"name": "logits", "shape": [batch, num_classes], "dtype": "float32"}]
  if options.include_preprocessing:
    outputs += [{"name": "probabilities", "shape": [batch, num_classes], "dtype": "float32"},
                {"name": "top5_ids", "shape": [batch, k], "dtype": "int32"}]
  export_record = dataclasses.asdict(options)
  export_record.update(
      artifact=ARTIFACT_FILES[options.format], platforms=list(PLATFORMS[options.format]),
      calibration_size=len(calibration) if calibration is not None else None,
      inputs=[{"name": serving_function.INPUT_NAME,
               "shape": [batch, info.resolution, info.resolution, 3], "dtype": dtype.name,
               "expects": ("uint8 RGB, center-cropped and resized; normalised inside"
                           if options.include_preprocessing else
                           "RGB (image - mean_rgb) / stddev_rgb, as 'preprocessing' says")}],
      outputs=outputs, versions=_versions(options.format),
      created=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"))
  record["export"] = export_record
  with open(os.path.join(work, INFO_FILE), "w") as f:
    json.dump(record, f, indent=1)
  if num_classes == 1000:
    from efficientnet_jax import inference
    with open(os.path.join(work, LABELS_FILE), "w") as f:
      f.writelines(f"{name}\n" for name in inference.imagenet_class_names())


def _versions(format: str) -> dict[str, str]:
  versions = {}
  for package in _VERSIONS[format]:
    try:
      versions[package] = importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
      pass
  return versions


def _move(work: str, out: str) -> None:
  """Puts the finished `work` at `out`, replacing what was there only now."""
  if not os.path.lexists(out):
    os.rename(work, out)
    return
  old = tempfile.mkdtemp(prefix=f".{os.path.basename(out)}.", suffix=".old",
                         dir=os.path.dirname(out))
  os.rename(out, os.path.join(old, "previous"))
  os.rename(work, out)
  shutil.rmtree(old, ignore_errors=True)
