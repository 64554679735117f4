"""EfficientNet-B4 on ImageNet, the paper's recipe; expected top-1 82.9% (paper, Table 2).

  python -m efficientnet_jax.main --config=configs/b4.py --workdir=runs/b4
"""

from efficientnet_jax.config import defaults


def get_config():
  config = defaults.get_config()
  config.model.variant = "b4"
  return config
