"""EfficientNetV2 (Tan & Le, 2021): the google/automl `effnetv2_configs.py` tables.

Fused-MBConv in the early stages (no squeeze-excite), MBConv with squeeze-excite 0.25 of
the block input later, all kernels 3×3, SiLU. B0–B3 scale the base table (width rounding
to multiples of 8 without V1's 10% rule, repeats by ceil); S, M, L and XL are tables of
their own. Rows: (block, stride, expansion, out channels, repeats, SE ratio).
"""

from __future__ import annotations

from efficientnet_jax.models.architecture import FUSED_MBCONV, MBCONV, Architecture, Stage

_F, _M = FUSED_MBCONV, MBCONV


def _stages(*rows: tuple[str, int, int, int, int, float]) -> tuple[Stage, ...]:
  return tuple(Stage(block, 3, stride, expansion, out, repeats, se_ratio=se)
               for block, stride, expansion, out, repeats, se in rows)


BASE = Architecture("efficientnetv2", stem_channels=32, head_channels=1280, round_limit=0.0,
                    stages=_stages((_F, 1, 1, 16, 1, 0), (_F, 2, 4, 32, 2, 0),
                                   (_F, 2, 4, 48, 2, 0), (_M, 2, 4, 96, 3, 0.25),
                                   (_M, 1, 6, 112, 5, 0.25), (_M, 2, 6, 192, 8, 0.25)))
S = Architecture("efficientnetv2_s", stem_channels=24, head_channels=1280,
                 stages=_stages((_F, 1, 1, 24, 2, 0), (_F, 2, 4, 48, 4, 0),
                                (_F, 2, 4, 64, 4, 0), (_M, 2, 4, 128, 6, 0.25),
                                (_M, 1, 6, 160, 9, 0.25), (_M, 2, 6, 256, 15, 0.25)))
M = Architecture("efficientnetv2_m", stem_channels=24, head_channels=1280,
                 stages=_stages((_F, 1, 1, 24, 3, 0), (_F, 2, 4, 48, 5, 0),
                                (_F, 2, 4, 80, 5, 0), (_M, 2, 4, 160, 7, 0.25),
                                (_M, 1, 6, 176, 14, 0.25), (_M, 2, 6, 304, 18, 0.25),
                                (_M, 1, 6, 512, 5, 0.25)))
L = Architecture("efficientnetv2_l", stem_channels=32, head_channels=1280,
                 stages=_stages((_F, 1, 1, 32, 4, 0), (_F, 2, 4, 64, 7, 0),
                                (_F, 2, 4, 96, 7, 0), (_M, 2, 4, 192, 10, 0.25),
                                (_M, 1, 6, 224, 19, 0.25), (_M, 2, 6, 384, 25, 0.25),
                                (_M, 1, 6, 640, 7, 0.25)))
XL = Architecture("efficientnetv2_xl", stem_channels=32, head_channels=1280,
                  stages=_stages((_F, 1, 1, 32, 4, 0), (_F, 2, 4, 64, 8, 0),
                                 (_F, 2, 4, 96, 8, 0), (_M, 2, 4, 192, 16, 0.25),
                                 (_M, 1, 6, 256, 24, 0.25), (_M, 2, 6, 512, 32, 0.25),
                                 (_M, 1, 6, 640, 8, 0.25)))
