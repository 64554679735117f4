"""EfficientNet-EdgeTPU on ImageNet, as tensorflow/tpu trains it.

  python -m efficientnet_jax.main --config=configs/efficientnet_edgetpu.py:edgetpu_s \
      --workdir=runs/edgetpu_s

The argument is edgetpu_s, edgetpu_m or edgetpu_l. Published ImageNet top-1, float
(tensorflow/tpu edgetpu README): S 77.23, M 78.69, L 80.62.

The recipe is tensorflow/tpu main.py's, as for Lite (configs/efficientnet_lite.py), with
the EdgeTPU builder's (x − 127) / 128 input. The released checkpoints have 1001 classes
(class 0 is background); training here uses the dataset's 1000.
"""

from __future__ import annotations

import ml_collections

from efficientnet_jax.config import defaults


def get_config(arg: str = "edgetpu_s") -> ml_collections.ConfigDict:
  return defaults.get_config_for("efficientnet_edgetpu", (arg or "edgetpu_s").strip().lower())
