"""EfficientNet-B5 on ImageNet, the paper's recipe with AutoAugment; expected top-1 83.6%
(paper Table 2, which tensorflow/tpu's README lists as its AutoAugment result).

  python -m efficientnet_jax.main --config=configs/b5.py --workdir=runs/b5

RandAugment instead (tensorflow/tpu README: 83.7% with N=2, M=17):

  python -m efficientnet_jax.main --config=configs/b5.py --workdir=runs/b5_randaugment \
      --config.input.augment=randaugment --config.input.randaug_magnitude=17
"""

from efficientnet_jax.config import defaults


def get_config():
  config = defaults.get_config()
  config.model.variant = "b5"
  config.input.augment = "autoaugment"  # Table 2's accuracies were trained with it
  return config
