"""EfficientNet-Lite (tensorflow/tpu `lite/efficientnet_lite_builder.py`).

B0's stages without squeeze-excite and with ReLU6 (friendlier to int8 quantisation); the
stem (32) and head (1280) are never scaled, nor the repeats of the first and last stage.
"""

from __future__ import annotations

from efficientnet_jax.models.architecture import MBCONV, Architecture, Stage

LITE = Architecture(
    "efficientnet_lite", stem_channels=32, head_channels=1280, activation="relu6",
    fixed_stem_head=True, fixed_end_repeats=True,
    stages=tuple(Stage(MBCONV, k, s, e, c, r, activation="relu6") for k, s, e, c, r in (
        (3, 1, 1, 16, 1), (3, 2, 6, 24, 2), (5, 2, 6, 40, 2), (3, 2, 6, 80, 3),
        (5, 1, 6, 112, 3), (5, 2, 6, 192, 4), (3, 1, 6, 320, 1))))
