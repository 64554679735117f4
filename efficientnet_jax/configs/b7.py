"""EfficientNet-B7 on ImageNet, the paper's recipe with AutoAugment; expected top-1 84.3%
(paper Table 2, which tensorflow/tpu's README lists as its AutoAugment result).

  python -m efficientnet_jax.main --config=configs/b7.py --workdir=runs/b7

RandAugment instead (tensorflow/tpu README: 84.7% with N=2, M=28):

  python -m efficientnet_jax.main --config=configs/b7.py --workdir=runs/b7_randaugment \
      --config.input.augment=randaugment --config.input.randaug_magnitude=28
"""

from efficientnet_jax.config import defaults


def get_config():
  config = defaults.get_config()
  config.model.variant = "b7"
  config.input.augment = "autoaugment"  # Table 2's accuracies were trained with it
  return config
