"""The paper's other baselines (its Table 3): ResNet-50/152, MobileNetV1 and MobileNetV2.

Written in the same vocabulary as EfficientNet, so the same width/depth/resolution
scaling applies to them. Unscaled parameter counts (1000 classes) match the standard
implementations exactly: ResNet-50 25,557,032 and ResNet-152 60,192,808 (torchvision,
v1.5: stride on the 3×3 conv), MobileNetV2 3,504,872 (torchvision), MobileNetV1 4,231,976
(Keras, trainable). MobileNetV2's inverted residual is an MBConv without squeeze-excite.
"""

from __future__ import annotations

from efficientnet_jax.models.architecture import (BOTTLENECK, DEPTHWISE_SEPARABLE, MBCONV,
                                                  Architecture, Stage)


def _resnet(name: str, repeats: tuple[int, int, int, int]) -> Architecture:
  stages = tuple(Stage(BOTTLENECK, 3, stride, 4, out, n, activation="relu")
                 for stride, out, n in zip((1, 2, 2, 2), (256, 512, 1024, 2048), repeats))
  return Architecture(name, stem_channels=64, stages=stages, head_channels=0, stem_kernel=7,
                      stem_pool=True, activation="relu")


RESNET50 = _resnet("resnet50", (3, 4, 6, 3))
RESNET152 = _resnet("resnet152", (3, 8, 36, 3))

# Sandler et al. 2018, Table 2: (t, c, n, s) rows.
MOBILENETV2 = Architecture(
    "mobilenetv2", stem_channels=32,
    stages=tuple(Stage(MBCONV, 3, s, t, c, n, activation="relu6") for t, c, n, s in (
        (1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1),
        (6, 160, 3, 2), (6, 320, 1, 1))),
    head_channels=1280, activation="relu6", min_head_width=1.0)

# Howard et al. 2017, Table 1, with runs of equal layers grouped into stages.
MOBILENETV1 = Architecture(
    "mobilenetv1", stem_channels=32,
    stages=tuple(Stage(DEPTHWISE_SEPARABLE, 3, s, 1, c, n, activation="relu6")
                 for c, s, n in ((64, 1, 1), (128, 2, 2), (256, 2, 2), (512, 2, 6),
                                 (1024, 2, 2))),
    head_channels=0, activation="relu6")

ARCHITECTURES = (RESNET50, RESNET152, MOBILENETV2, MOBILENETV1)
