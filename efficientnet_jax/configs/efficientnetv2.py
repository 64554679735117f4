"""EfficientNetV2 on ImageNet with the recipe of google/automl's released code.

  python -m efficientnet_jax.main --config=configs/efficientnetv2.py:v2_s --workdir=runs/v2_s
  python -m efficientnet_jax.main --config=configs/efficientnetv2.py:v2_b0 --workdir=runs/v2_b0
  python -m efficientnet_jax.main --config=configs/efficientnetv2.py:v2_s,paper --workdir=runs/p

The argument is a variant: v2_b0 … v2_b3, v2_s, v2_m, v2_l, v2_xl, optionally followed by
",paper" (S, M, L) for the paper's progressive schedule instead of the released one.
Published ImageNet top-1 (google/automl efficientnetv2 README; the paper's Table 7 where
it differs): v2_b0 78.7, v2_b1 79.8, v2_b2 80.5, v2_b3 82.1, v2_s 83.9, v2_m 85.2 (paper
85.1), v2_l 85.7; v2_xl has only an ImageNet-21k pre-trained result (87.3).

The recipe (automl hparams.py, datasets.py's ImageNet and effnetv2_configs.py): V1's
RMSProp schedule (0.016 per 256 images, batch 4096, 350 epochs, 5 warm-up epochs, ×0.97
every 2.4 epochs), label smoothing 0.1, EMA 0.9999, L2 1e-5, BatchNorm momentum 0.9 (the
family's default), drop path 0.2, each variant's dropout, training size and evaluation
size (v2_s: 300 / 384) and input normalisation (S–XL (x − 128) / 128, B0–B3 V1's);
B0–B3 with V1's AutoAugment, S–XL with RandAugment (N=2) and Mixup/CutMix at the
strengths below, reached by progressive learning in 4 stages (training/progressive.py):
the image size grows from 128 and RandAugment's magnitude from 5, Mixup/CutMix from 0,
dropout is not scheduled (v2_s: 171/214/257/300 px at magnitude 5/6.67/8.33/10). One
difference from the released code, stated plainly: with both Mixup and CutMix on, automl
mixes half of each batch each way, where this pipeline picks one of the two per batch.

",paper" takes the paper's Table 6 instead: 4 stages from 128 px, RandAugment 5, Mixup 0
and dropout 0.1 in the first to v2_s 300 px, 15, 0, 0.3; v2_m 380, 20, 0.2, 0.4; v2_l 380,
25, 0.4, 0.5 in the last, each value start + (end - start) · i / 3 in stage i.
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

# variant: the paper's Table 6 final values: (image size, RandAugment, Mixup, dropout).
PAPER_SCHEDULES = {"v2_s": (300, 15, 0.0, 0.3), "v2_m": (380, 20, 0.2, 0.4),
                   "v2_l": (380, 25, 0.4, 0.5)}
NUM_STAGES = 4


def get_config(arg: str = "v2_s") -> ml_collections.ConfigDict:
  variant, _, schedule = (arg or "v2_s").strip().lower().partition(",")
  if schedule not in ("", "released", "paper"):
    raise ValueError(f"configs/efficientnetv2.py:{arg}: the schedule after the comma is "
                     "'paper' or 'released'")
  config = defaults.get_config_for("efficientnetv2", variant)
  augment, magnitude, mix_alpha = RECIPES[variant]
  config.input.augment = augment
  if magnitude is not None:
    config.input.randaug_magnitude = magnitude
  config.input.mixup_alpha = config.input.cutmix_alpha = mix_alpha
  config.progressive.num_stages = NUM_STAGES  # the released schedule (defaults' starts)
  if schedule == "paper":
    if variant not in PAPER_SCHEDULES:
      raise ValueError(f"the paper's Table 6 gives progressive settings for "
                       f"{', '.join(PAPER_SCHEDULES)} only, not {variant}")
    size, magnitude, mix_alpha, dropout = PAPER_SCHEDULES[variant]
    config.progressive.interpolation = "paper"
    config.model.resolution = size
    config.input.randaug_magnitude = magnitude
    config.input.mixup_alpha = config.input.cutmix_alpha = mix_alpha
    config.model.dropout_rate = dropout
    config.progressive.start_dropout_rate = 0.1
  return config
