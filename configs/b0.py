"""EfficientNet-B0 on ImageNet, the paper's recipe; expected top-1 77.1% (paper, Table 2).

  python -m efficientnet_jax.main --config=configs/b0.py --workdir=runs/b0
"""

from efficientnet_jax.config import defaults


def get_config():
  config = defaults.get_config()
  config.model.variant = "b0"
  return config
