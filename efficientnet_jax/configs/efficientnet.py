"""Any EfficientNet on ImageNet with the paper's recipe (350 epochs, batch 4096, RMSProp).

  python -m efficientnet_jax.main --config=configs/efficientnet.py:b3 --workdir=runs/b3
  python -m efficientnet_jax.main --config=configs/efficientnet.py:phi=2.5 --workdir=runs/phi2.5
  python -m efficientnet_jax.main \
      --config=configs/efficientnet.py:phi=1,alpha=1.1,beta=1.2,gamma=1.1 --workdir=runs/grid

The argument is a published variant (b0 … b8, l2) or the compound formula
`phi=F[,alpha=A,beta=B,gamma=G,resolution_multiple=M]`. Trains with AutoAugment, as the
paper's Table 2 did; expected ImageNet top-1 (paper Table 2, EMA weights): b0 77.1,
b1 79.1, b2 80.1, b3 81.6, b4 82.9, b5 83.6, b6 84.0, b7 84.3. B8 and L2 were published
with other methods (AdvProp, Noisy Student), not with this recipe.
"""

from __future__ import annotations

import ml_collections

from efficientnet_jax.config import defaults

_PHI_KEYS = {"phi": float, "alpha": float, "beta": float, "gamma": float,
             "resolution_multiple": int}


def get_config(arg: str = "b0") -> ml_collections.ConfigDict:
  config = defaults.get_config()
  config.input.augment = "autoaugment"
  arg = (arg or "b0").strip().lower()
  if arg.startswith("phi="):
    config.model.variant = "phi"
    for item in arg.split(","):
      key, _, value = item.partition("=")
      if key not in _PHI_KEYS or not value:
        raise ValueError(f"config argument {arg!r}: expected phi=F[,alpha=A,beta=B,gamma=G,"
                         f"resolution_multiple=M], got {item!r}")
      config.model[key] = _PHI_KEYS[key](value)
  else:
    config.model.variant = arg
  return config
