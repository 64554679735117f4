"""EfficientNet-B0 on ImageNet, the paper's recipe with AutoAugment; expected top-1 77.1%
(paper Table 2, which tensorflow/tpu's README lists as its AutoAugment result).

  python -m efficientnet_jax.main --config=configs/b0.py --workdir=runs/b0

Without AutoAugment (`--config.input.augment=none`) the tensorflow/tpu README reports
76.7% (its "baseline preprocessing").
"""

from efficientnet_jax.config import defaults


def get_config():
  config = defaults.get_config()
  config.model.variant = "b0"
  config.input.augment = "autoaugment"  # Table 2's accuracies were trained with it
  return config
