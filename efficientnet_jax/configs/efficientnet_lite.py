"""EfficientNet-Lite on ImageNet, as tensorflow/tpu trains it.

  python -m efficientnet_jax.main --config=configs/efficientnet_lite.py:lite0 --workdir=runs/lite0

The argument is lite0 … lite4. Published ImageNet top-1, float (tensorflow/tpu lite
README): lite0 75.1, lite1 76.7, lite2 77.6, lite3 79.8, lite4 81.5.

tensorflow/tpu trains Lite with the same main.py as EfficientNet, and the Lite README
names no other settings, so this is that script's recipe: RMSProp 0.016 per 256 images,
350 epochs, 5 warm-up epochs, ×0.97 every 2.4 epochs, label smoothing 0.1, EMA 0.9999,
L2 1e-5, no AutoAugment (main.py's default), drop path 0.2, BatchNorm momentum 0.99. The
input is normalised as the Lite builder does, (x − 127) / 128. (main.py's default batch
is 2048; this codebase's recipe uses 4096 with the learning rate scaled per 256.)
"""

from __future__ import annotations

import ml_collections

from efficientnet_jax.config import defaults


def get_config(arg: str = "lite0") -> ml_collections.ConfigDict:
  return defaults.get_config_for("efficientnet_lite", (arg or "lite0").strip().lower())
