"""EfficientNet-EdgeTPU (tensorflow/tpu `edgetpu/efficientnet_edgetpu_builder.py`).

Fused-MBConv in the first three stages (the Edge TPU runs full convolutions faster than
depthwise ones), ReLU, no squeeze-excite. The first block expands 24 channels ·4 although
the stem gives 32, as the reference does. S, M and L scale this table.
"""

from __future__ import annotations

from efficientnet_jax.models.architecture import FUSED_MBCONV, MBCONV, Architecture, Stage

EDGETPU = Architecture(
    "efficientnet_edgetpu", stem_channels=32, head_channels=1280, activation="relu",
    stages=(Stage(FUSED_MBCONV, 3, 1, 4, 24, 1, activation="relu", expanded_from=24),
            *(Stage(kind, k, s, 8, c, r, activation="relu") for kind, k, s, c, r in (
                (FUSED_MBCONV, 3, 2, 32, 2), (FUSED_MBCONV, 3, 2, 48, 4),
                (MBCONV, 5, 2, 96, 5), (MBCONV, 5, 1, 144, 4), (MBCONV, 5, 2, 192, 2)))))
