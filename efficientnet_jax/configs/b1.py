"""EfficientNet-B1 on ImageNet, the paper's recipe with AutoAugment; expected top-1 79.1%
(paper Table 2, which tensorflow/tpu's README lists as its AutoAugment result).

  python -m efficientnet_jax.main --config=configs/b1.py --workdir=runs/b1
"""

from efficientnet_jax.config import defaults


def get_config():
  config = defaults.get_config()
  config.model.variant = "b1"
  config.input.augment = "autoaugment"  # Table 2's accuracies were trained with it
  return config
