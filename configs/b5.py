"""EfficientNet-B5 on ImageNet, the paper's recipe; expected top-1 83.6% (paper, Table 2).

  python -m efficientnet_jax.main --config=configs/b5.py --workdir=runs/b5
"""

from efficientnet_jax.config import defaults


def get_config():
  config = defaults.get_config()
  config.model.variant = "b5"
  return config
