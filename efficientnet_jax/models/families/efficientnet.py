"""EfficientNet (Tan & Le, 2019): B0's stages (the paper's Table 1).

B1–B8 and L2 are B0 scaled by the published (width, depth) rows of `scaling.VARIANTS`;
any other size comes from the φ formula (`scaling.compound`).
"""

from __future__ import annotations

from efficientnet_jax.models.architecture import MBCONV, Architecture, Stage


def _mbconv(kernel: int, stride: int, expansion: int, out_channels: int,
            repeats: int) -> Stage:
  return Stage(MBCONV, kernel, stride, expansion, out_channels, repeats, se_ratio=0.25)


STAGES: tuple[Stage, ...] = (
    _mbconv(kernel=3, stride=1, expansion=1, out_channels=16, repeats=1),
    _mbconv(kernel=3, stride=2, expansion=6, out_channels=24, repeats=2),
    _mbconv(kernel=5, stride=2, expansion=6, out_channels=40, repeats=2),
    _mbconv(kernel=3, stride=2, expansion=6, out_channels=80, repeats=3),
    _mbconv(kernel=5, stride=1, expansion=6, out_channels=112, repeats=3),
    _mbconv(kernel=5, stride=2, expansion=6, out_channels=192, repeats=4),
    _mbconv(kernel=3, stride=1, expansion=6, out_channels=320, repeats=1),
)

B0 = Architecture("efficientnet", stem_channels=32, stages=STAGES, head_channels=1280)
