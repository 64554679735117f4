"""EfficientNet-B6 on ImageNet, the paper's recipe with AutoAugment; expected top-1 84.0%
(paper Table 2, which tensorflow/tpu's README lists as its AutoAugment result).

  python -m efficientnet_jax.main --config=configs/b6.py --workdir=runs/b6
"""

from efficientnet_jax.config import defaults


def get_config():
  config = defaults.get_config()
  config.model.variant = "b6"
  config.input.augment = "autoaugment"  # Table 2's accuracies were trained with it
  return config
