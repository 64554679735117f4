"""EfficientNet-B6 on ImageNet, the paper's recipe; expected top-1 84.0% (paper, Table 2).

  python -m efficientnet_jax.main --config=configs/b6.py --workdir=runs/b6
"""

from efficientnet_jax.config import defaults


def get_config():
  config = defaults.get_config()
  config.model.variant = "b6"
  return config
