"""The one-line model API: `create_model` and `list_models`, as timm and Keras users know.

  import efficientnet_jax
  model, variables, info = efficientnet_jax.create_model("v2_s")            # random init
  model, variables, info = efficientnet_jax.create_model("b0", weights="weights/b0")
  logits = model.apply(variables, images)           # images normalised as `info` says
  efficientnet_jax.list_models("lite*")             # ['lite0', 'lite1', ..., 'lite4']

`weights` is a converted-weights directory (`efficientnet-convert`) or a training workdir
(its latest checkpoint's EMA weights). `info` is the `WeightsInfo` that travels with the
weights: resolution, normalisation (`mean_rgb`, `stddev_rgb`), crop and class count.
"""

from __future__ import annotations

import dataclasses
import difflib
import fnmatch
import json
import os
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from efficientnet_jax.config import defaults
from efficientnet_jax.models import convnet, registry
from efficientnet_jax.weights import weights_directory


class Model(NamedTuple):
  module: convnet.ConvNet
  variables: dict[str, Any]   # {"params", "batch_stats"}
  info: weights_directory.WeightsInfo


def list_models(pattern: str = "*") -> list[str]:
  """Every model name `create_model` takes, in the registry's order; `pattern` is a
  shell-style wildcard ("lite*", "v2_?", "edgetpu_*")."""
  return [name for name in registry.model_names() if fnmatch.fnmatchcase(name, pattern)]


def create_model(name: str | None = None, weights: str | os.PathLike[str] | None = None,
                 num_classes: int | None = None, features: bool = False, seed: int = 0,
                 **module_overrides: Any) -> Model:
  """The Flax module of a model, its variables and the settings that travel with them.

  Args:
    name: a model name (`list_models()`); may be left out when `weights` is given, and
      must then match what the weights are.
    weights: a converted-weights directory or a training workdir; None initialises the
      variables randomly from `seed`.
    num_classes: the classifier size (default: the weights', or 1000). Weights with
      another class count get a new, randomly initialised classifier (fine-tuning).
    features: a backbone: the module returns the multi-scale feature maps by name
      (`architecture.feature_info`) and has no classifier.
    seed: the random initialisation's seed (of the whole model or the new classifier).
    **module_overrides: other `ConvNet` attributes (dtype, depthwise_impl, remat, ...).
  """
  if name is None and weights is None:
    raise ValueError("create_model: give a model name, weights, or both; names: "
                     + ", ".join(list_models()))
  if name is not None and name not in registry.model_names():
    close = difflib.get_close_matches(name, registry.model_names(), n=5, cutoff=0.5)
    raise ValueError(f"unknown model {name!r}" + (f"; did you mean {', '.join(close)}?"
                                                  if close else "")
                     + f" (list_models() has {len(registry.model_names())} names)")
  if num_classes is not None and (not isinstance(num_classes, int) or num_classes < 0):
    raise ValueError(f"num_classes must be an integer >= 0, got {num_classes!r}")
  key = jax.random.key(seed)
  if weights is None:
    family, variant = registry.lookup(name)
    config = defaults.get_config_for(family.name, variant)
    info = weights_directory.WeightsInfo.from_config(
        config, 0 if features else 1000 if num_classes is None else num_classes,
        source={"format": "random", "seed": str(seed)})
    module = _module(info, features, module_overrides)
    return Model(module, _init(module, key), info)

  info = read_info(weights)
  if name is not None:
    family, variant = registry.lookup(name)
    if (family.name, variant) != (info.family, info.variant):
      raise ValueError(f"weights {os.fspath(weights)} are {info.family} {info.variant}, "
                       f"not {name} ({family.name} {variant})")
  variables = load_variables(weights)
  classes = 0 if features else info.num_classes if num_classes is None else num_classes
  if classes != info.num_classes:
    variables = dict(variables, params=dict(variables["params"]))
    variables["params"].pop("classifier", None)
    info = dataclasses.replace(info, num_classes=classes)
  module = _module(info, features, module_overrides)
  if classes and "classifier" not in variables["params"]:
    variables["params"]["classifier"] = _init(module, key)["params"]["classifier"]
  return Model(module, variables, info)


def _module(info: weights_directory.WeightsInfo, features: bool,
            overrides: dict[str, Any]) -> convnet.ConvNet:
  if features:
    overrides = dict(overrides, features_only=True)
  return info.model(**overrides)


def _init(module: convnet.ConvNet, key: jax.Array) -> dict[str, Any]:
  """Random variables, initialised at the smallest input the network takes (the
  variables do not depend on the resolution) so that compiling is quick."""
  size = module.network.total_stride
  variables = jax.jit(module.init)(key, jnp.zeros((1, size, size, 3), module.dtype))
  return {"params": variables["params"], "batch_stats": variables.get("batch_stats", {})}


# --- Weights directories and training workdirs. ---

def is_workdir(path: str | os.PathLike[str]) -> bool:
  return os.path.isdir(os.path.join(os.fspath(path), "checkpoints"))


def read_info(path: str | os.PathLike[str]) -> weights_directory.WeightsInfo:
  """The settings of a weights directory or a training workdir, without reading weights."""
  import orbax.checkpoint as ocp  # only for workdirs
  path = os.path.abspath(os.fspath(path))  # Orbax reads no metadata from relative paths
  if not is_workdir(path):
    return weights_directory.read_info(path)
  config_path = os.path.join(path, "config.json")
  if not os.path.isfile(config_path):
    raise ValueError(f"workdir {path} has no config.json")
  with open(config_path) as f:
    try:
      config = ml_collections.ConfigDict(json.load(f))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:  # cut short (a full disk)
      raise ValueError(f"{config_path} is not valid JSON (truncated or damaged?): {e}"
                       ) from None
  # The class count from the checkpoint's metadata: config.model.num_classes may be None.
  with ocp.CheckpointManager(os.path.join(path, "checkpoints"), item_names=("state",),
                             item_handlers={"state": ocp.StandardCheckpointHandler()}
                             ) as manager:
    step = manager.latest_step()
    if step is None:
      raise ValueError(f"workdir {path} has no checkpoint yet")
    state = manager.item_metadata(step)["state"]
  classifier = state["ema_params"].get("classifier")
  num_classes = int(classifier["bias"].shape[0]) if classifier else 0
  return weights_directory.WeightsInfo.from_config(
      config, num_classes, source={"format": "workdir", "file": os.path.abspath(path),
                                   "step": str(step)})


def load_variables(path: str | os.PathLike[str]) -> dict[str, Any]:
  """{'params', 'batch_stats'} of a weights directory or a workdir's latest EMA weights."""
  if is_workdir(path):
    from efficientnet_jax.training import checkpointing
    return jax.tree.map(np.asarray, checkpointing.load_variables(os.fspath(path)))
  variables, _ = weights_directory.load_weights(path)
  return variables

