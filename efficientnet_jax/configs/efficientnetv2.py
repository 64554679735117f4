"""EfficientNetV2 on ImageNet with the recipe of google/automl's released code.

  python -m efficientnet_jax.main --config=configs/efficientnetv2.py:v2_s --workdir=runs/v2_s
  python -m efficientnet_jax.main --config=configs/efficientnetv2.py:v2_b0 --workdir=runs/v2_b0

The argument is a variant: v2_b0 … v2_b3, v2_s, v2_m, v2_l, v2_xl. Published ImageNet top-1
(google/automl efficientnetv2 README; the paper's Table 7 where it differs): v2_b0 78.7,
v2_b1 79.8, v2_b2 80.5, v2_b3 82.1, v2_s 83.9, v2_m 85.2 (paper 85.1), v2_l 85.7; v2_xl
has only an ImageNet-21k pre-trained result (87.3).

The recipe (automl hparams.py, datasets.py's ImageNet and effnetv2_configs.py): V1's
RMSProp schedule (0.016 per 256 images, batch 4096, 350 epochs, 5 warm-up epochs, ×0.97
every 2.4 epochs), label smoothing 0.1, EMA 0.9999, L2 1e-5, BatchNorm momentum 0.9 (the
family's default), drop path 0.2, each variant's dropout, training size and evaluation
size (v2_s: 300 / 384) and input normalisation (S–XL (x − 128) / 128, B0–B3 V1's);
B0–B3 with V1's AutoAugment, S–XL with RandAugment (N=2) and Mixup/CutMix at the
strengths below. Two differences from the released code, stated
plainly: automl trains in 4 progressive stages (image size and regularisation growing to
these values), which this codebase does not have yet, so every step here runs at the
final stage's size and strength; and with both Mixup and CutMix on, automl mixes half of
each batch each way, where this pipeline picks one of the two per batch.
"""

from __future__ import annotations

import ml_collections

from efficientnet_jax.config import defaults

# variant: (augmentation, RandAugment magnitude, Mixup and CutMix alpha), as released.
RECIPES = {
    "v2_b0": ("autoaugment", None, 0.0), "v2_b1": ("autoaugment", None, 0.0),
    "v2_b2": ("autoaugment", None, 0.0), "v2_b3": ("autoaugment", None, 0.0),
    "v2_s": ("randaugment", 10, 0.0), "v2_m": ("randaugment", 15, 0.2),
    "v2_l": ("randaugment", 20, 0.5), "v2_xl": ("randaugment", 20, 0.5),
}


def get_config(arg: str = "v2_s") -> ml_collections.ConfigDict:
  variant = (arg or "v2_s").strip().lower()
  config = defaults.get_config_for("efficientnetv2", variant)
  augment, magnitude, mix_alpha = RECIPES[variant]
  config.input.augment = augment
  if magnitude is not None:
    config.input.randaug_magnitude = magnitude
  config.input.mixup_alpha = config.input.cutmix_alpha = mix_alpha
  return config
