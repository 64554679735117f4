"""The training configs, shipped with the package: each file's docstring gives its command
and the published result it reproduces.

`--config` takes a file path (`configs/b0.py`, `my_config.py:arg`, as ml_collections
does), or a name that works from an installed wheel without the checkout:

* a config here: `--config=demo`, `--config=efficientnetv2:v2_m`;
* a model name: `--config=v2_s` trains its family's config for that variant
  (`efficientnetv2.py:v2_s`), `--config=lite0`, `--config=b3`.
"""

from __future__ import annotations

import os

from efficientnet_jax.models import registry

DIRECTORY = os.path.dirname(os.path.abspath(__file__))
# Each family's config, taking a variant name as its argument.
FAMILY_CONFIGS = {"efficientnet": "efficientnet", "efficientnetv2": "efficientnetv2",
                  "efficientnet_lite": "efficientnet_lite",
                  "efficientnet_edgetpu": "efficientnet_edgetpu"}


def names() -> list[str]:
  """The configs shipped here (file names without .py)."""
  return sorted(name[:-3] for name in os.listdir(DIRECTORY)
                if name.endswith(".py") and not name.startswith("_"))


def resolve(config_arg: str) -> str:
  """`--config`'s value as the `path[:arg]` ml_collections loads.

  An existing path is kept; otherwise the value names a config here or a model.
  """
  path, colon, arg = config_arg.partition(":")
  if os.path.isfile(path):
    return config_arg
  name = os.path.basename(path)
  name = name[:-3] if name.endswith(".py") else name
  if name in names():
    return os.path.join(DIRECTORY, name + ".py") + colon + arg
  if not colon:
    try:
      family, variant = registry.lookup(name)
    except ValueError:
      pass
    else:
      if family.name in FAMILY_CONFIGS:
        return os.path.join(DIRECTORY, FAMILY_CONFIGS[family.name] + ".py") + ":" + variant
  models = [m for m in registry.model_names()
            if registry.lookup(m)[0].name in FAMILY_CONFIGS]
  raise ValueError(f"--config: no config file {path!r}, and {name!r} is not a config name "
                   f"({', '.join(names())}) or a model name ({', '.join(models)})")
