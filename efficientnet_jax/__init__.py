"""EfficientNet (Tan & Le, 2019) and its family (V2, Lite, EdgeTPU) in JAX/Flax.

  model, variables, info = efficientnet_jax.create_model("v2_s", weights=None)
  efficientnet_jax.list_models("lite*")
  efficientnet_jax.predict("cat.jpg", "weights/b0")

`create_model`/`list_models` (`efficientnet_jax.model_api`), `load` and `predict`
(`efficientnet_jax.inference`) are imported on first use, so `import efficientnet_jax`
stays cheap.
"""

from __future__ import annotations

import importlib
from typing import Any

_PUBLIC = {"create_model": "model_api", "list_models": "model_api", "load": "inference",
           "predict": "inference"}
__all__ = list(_PUBLIC)


def __getattr__(name: str) -> Any:
  if name in _PUBLIC:
    return getattr(importlib.import_module(f"efficientnet_jax.{_PUBLIC[name]}"), name)
  raise AttributeError(f"module 'efficientnet_jax' has no attribute {name!r}")
