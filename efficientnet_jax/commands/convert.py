"""Convert published EfficientNet weights into a weights directory of this project.

  efficientnet-convert efficientnet-b0/ weights/b0 --format=tf
  efficientnet-convert model.safetensors weights/tf_b3 --format=timm \
      --timm_name=tf_efficientnet_b3
  efficientnet-convert efficientnetb0.h5 weights/keras_b0 --format=keras

SRC: a Keras .h5/.weights.h5/.keras file, a tensorflow/tpu checkpoint directory or prefix,
or a timm .safetensors/.pth file. DST: a new directory (Orbax checkpoint + model.json) that
`efficientnet_jax.load`, efficientnet-predict, efficientnet-evaluate and
`--config.init_from` read. The variant is inferred from the tensor shapes unless given.
timm weights: the name decides padding and BN epsilon (tf_efficientnet_* → 'same', 1e-3;
efficientnet_* → 'symmetric', 1e-5); without one the tf_ convention is assumed.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from absl import app, flags

from efficientnet_jax.models import scaling
from efficientnet_jax.weights import weights_directory

_FORMAT = flags.DEFINE_enum("format", None, ["keras", "tf", "timm"], "Format of SRC.")
_VARIANT = flags.DEFINE_string("variant", None, "b0 … l2; default: inferred from shapes.")
_TIMM_NAME = flags.DEFINE_string(
    "timm_name", None, "timm model name (tf_efficientnet_b3, efficientnet_b0.ra_in1k): "
    "sets padding/epsilon and AdvProp normalisation.")
_PADDING = flags.DEFINE_enum("padding", None, ["same", "symmetric"],
                             "Override the padding the format/name implies.")
_BN_EPSILON = flags.DEFINE_float("bn_epsilon", None, "Override the BatchNorm epsilon.")
_ADVPROP = flags.DEFINE_bool("advprop", False, "tf: AdvProp checkpoint (inputs in [-1, 1]).")
_RAW = flags.DEFINE_bool("raw_weights", False,
                         "tf: take the raw weights instead of the ExponentialMovingAverage.")
_RESOLUTION = flags.DEFINE_integer("resolution", None,
                                   "Override the recorded evaluation resolution.")
_CROP_FRACTION = flags.DEFINE_float(
    "crop_fraction", None, "Record a center crop of this fraction of the short side "
    "(timm's crop_pct) instead of the reference's resolution/(resolution+32).")
_OVERWRITE = flags.DEFINE_bool("overwrite", False, "Replace DST if it exists.")
flags.mark_flag_as_required("format")


def convert(src: str, fmt: str) -> tuple[dict, weights_directory.WeightsInfo]:
  """(variables, info) of SRC in format `fmt`, with the command line's options."""
  if fmt == "keras":
    from efficientnet_jax.weights import keras
    converted = keras.keras_variables(src, _VARIANT.value)
    size = scaling.variant(converted.variant)
    info = weights_directory.WeightsInfo(
        variant=converted.variant, width=size.width, depth=size.depth,
        num_classes=converted.num_classes, padding="same",
        bn_epsilon=keras.KERAS_BN_EPSILON, dropout_rate=size.dropout_rate,
        resolution=size.resolution, crop_padding=32, mean_rgb=converted.mean_rgb,
        stddev_rgb=converted.stddev_rgb,
        source={"format": "keras", "file": str(Path(src).resolve())})
    variables = converted.variables
  elif fmt == "tf":
    from efficientnet_jax.weights import tf_checkpoint
    variables, info = tf_checkpoint.tf_variables(src, _VARIANT.value, use_ema=not _RAW.value,
                                                 advprop=_ADVPROP.value)
  else:
    from efficientnet_jax.weights import timm
    variables, info = timm.timm_variables(src, _VARIANT.value, _TIMM_NAME.value,
                                          _PADDING.value, _BN_EPSILON.value)
  overrides = {"padding": _PADDING.value, "bn_epsilon": _BN_EPSILON.value,
               "resolution": _RESOLUTION.value, "crop_fraction": _CROP_FRACTION.value}
  return variables, dataclasses.replace(
      info, **{k: v for k, v in overrides.items() if v is not None})


def main(argv):
  if len(argv) != 3:
    raise app.UsageError("usage: convert_weights.py SRC DST --format=keras|tf|timm")
  src, dst = argv[1:]
  if _TIMM_NAME.value and _FORMAT.value != "timm":
    raise app.UsageError("--timm_name is for --format=timm")
  variables, info = convert(src, _FORMAT.value)
  weights_directory.save_weights(dst, variables, info, overwrite=_OVERWRITE.value)
  print(f"wrote {dst}: {json.dumps(info.to_json())}")


def run():
  """Console script `efficientnet-convert`."""
  app.run(main)


if __name__ == "__main__":
  run()
