"""Convert published EfficientNet weights into a weights directory of this project.

  efficientnet-convert efficientnet-b0/ weights/b0 --format=tf
  efficientnet-convert model.safetensors weights/tf_b3 --format=timm \
      --timm_name=tf_efficientnet_b3
  efficientnet-convert efficientnetb0.h5 weights/keras_b0 --format=keras
  efficientnet-convert hf_folder/ weights/v2_s --format=timm
  efficientnet-convert efficientnet-b0-355c32eb.pth weights/ep_b0 --format=efficientnet_pytorch

SRC: a Keras .h5/.weights.h5/.keras file (V1 or V2), a tensorflow/tpu or google/automl
checkpoint directory or prefix, a timm .safetensors/.pth file or timm Hugging Face folder
(config.json + weights), or an efficientnet_pytorch .pth/.safetensors file. DST: a new
directory (Orbax checkpoint + model.json) that `efficientnet_jax.load`, efficientnet-predict,
efficientnet-evaluate and `--config.init_from` read. The variant (and its family) is
inferred from the tensor names and shapes unless given. timm weights: the name decides
padding and BN epsilon (tf_efficientnet_* → 'same', 1e-3; efficientnet_* → 'symmetric',
1e-5); without one (and without timm's Hugging Face folder) the file is refused unless
--padding and --bn_epsilon are given.
"""

from __future__ import annotations

import json
import sys

from absl import app, flags

from efficientnet_jax import terminal
from efficientnet_jax.weights import converters
from efficientnet_jax.weights import weights_directory

_FORMAT = flags.DEFINE_enum("format", None, list(converters.FORMATS), "Format of SRC.")
_VARIANT = flags.DEFINE_string("variant", None, "b0 … l2, v2_s, lite0, edgetpu_s, …; default: "
                               "inferred from names and shapes.")
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
_VERBOSE = flags.DEFINE_bool("verbose", False, terminal.VERBOSE_HELP)
flags.mark_flag_as_required("format")
# Flags that only some formats take → the converter option each sets.
_FORMAT_FLAGS = {"timm_name": "timm_name", "advprop": "advprop", "raw_weights": "use_ema"}


def converter_options() -> dict[str, object]:
  """The converter options the flags set; None: not given (the converter's default)."""
  return {"variant": _VARIANT.value, "timm_name": _TIMM_NAME.value,
          "padding": _PADDING.value, "bn_epsilon": _BN_EPSILON.value,
          "advprop": True if _ADVPROP.value else None,
          "use_ema": False if _RAW.value else None,
          "resolution": _RESOLUTION.value, "crop_fraction": _CROP_FRACTION.value}


def main(argv):
  if len(argv) != 3:
    raise app.UsageError(
        f"usage: efficientnet-convert SRC DST --format={'|'.join(converters.FORMATS)}")
  src, dst = argv[1:]
  options = converter_options()
  for flag, option in _FORMAT_FLAGS.items():  # refused rather than silently ignored
    if options[option] is not None and option not in converters.options(_FORMAT.value):
      takes = "|".join(f for f in converters.FORMATS if option in converters.options(f))
      raise app.UsageError(f"--{flag} is for --format={takes}")
  if not _VERBOSE.value:
    terminal.quiet_output()
  # A file that does not fit, is cut short or is another format, or a DST that is
  # refused: its message on stderr, exit status 1, no traceback and nothing written.
  step = f"checking {dst}"
  try:
    weights_directory.check_destination(dst, _OVERWRITE.value)  # before the slow part
    with terminal.progress(total=2, desc="convert", unit="step") as bar:
      step = f"reading {src}"
      bar.set_postfix_str(step)
      variables, info = converters.convert(src, _FORMAT.value, **options)
      bar.update()
      step = f"writing {dst}"
      bar.set_postfix_str(step)
      # Written beside DST and renamed when whole: a failure leaves no partial DST.
      weights_directory.save_weights(dst, variables, info, overwrite=_OVERWRITE.value)
      bar.update()
  except ValueError as e:
    sys.exit(f"error: {e}")
  except OSError as e:  # no permission, a full disk: what was being done, and why not
    sys.exit(f"error: {step}: {e}")
  print(f"wrote {dst}: {json.dumps(info.to_json())}")


if __name__ == "__main__":
  app.run(main)
