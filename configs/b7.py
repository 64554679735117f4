"""EfficientNet-B7 on ImageNet, the paper's recipe; expected top-1 84.3% (paper, Table 2).

  python -m efficientnet_jax.main --config=configs/b7.py --workdir=runs/b7
"""

from efficientnet_jax.config import defaults


def get_config():
  config = defaults.get_config()
  config.model.variant = "b7"
  return config
