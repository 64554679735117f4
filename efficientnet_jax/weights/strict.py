"""Strict assignment of foreign tensors to our variables: all or nothing, one error.

A converter describes where each source tensor goes (`Rule`) and which source tensors
it deliberately drops, with a reason. `assign` then fills every variable, uses every
source tensor and checks every shape; anything else is one `ValueError` that lists all
problems at once, so a wrong file or a wrong mapping is diagnosed in a single run.
Paths are '/'-joined, e.g. "params/stem_conv/conv/kernel".
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

Shape = tuple[int, ...]
Transform = Callable[[np.ndarray], np.ndarray]


@dataclasses.dataclass(frozen=True)
class Rule:
  """Source tensor → our variable at `target`, through `transform` (e.g. a transpose)."""

  target: str
  transform: Transform | None = None


def variable_shapes(module: nn.Module, image_size: int = 32) -> dict[str, Shape]:
  """Flattened path → shape of every variable of `module`, without allocating them."""
  abstract = jax.eval_shape(module.init, jax.random.key(0),
                            jnp.zeros((1, image_size, image_size, 3), jnp.float32))
  return {path: tuple(leaf.shape) for path, leaf in
          traverse_util.flatten_dict(abstract, sep="/").items()}


def assign(expected: Mapping[str, Shape],
           source: Mapping[str, np.ndarray],
           rules: Mapping[str, Rule],
           ignored: Mapping[str, str] | None = None) -> dict[str, np.ndarray]:
  """Flat {target path: float32 array} covering exactly `expected`.

  Args:
    expected: every target path that must be filled, with its shape.
    source: the foreign tensors by name.
    rules: source name → Rule. A rule whose source is absent is a missing tensor.
    ignored: source name → reason it is deliberately unused; may be absent from `source`.

  Raises:
    ValueError listing every missing, unused, unknown, doubly filled or mis-shaped name.
  """
  ignored = ignored or {}
  problems, out = [], {}
  accounted = set()  # targets already filled or already reported
  for name, array in source.items():
    if name in ignored:
      continue
    rule = rules.get(name)
    if rule is None:
      problems.append(f"unused source tensor {name} {_shape(array)}")
      continue
    if rule.target not in expected:
      problems.append(f"source tensor {name} {_shape(array)} maps to unknown variable "
                      f"{rule.target}")
      continue
    if rule.target in accounted:
      problems.append(f"variable {rule.target} filled twice (again by {name})")
      continue
    accounted.add(rule.target)
    value = np.asarray(array)
    value = rule.transform(value) if rule.transform else value
    if value.shape != tuple(expected[rule.target]):
      became = f", transformed {value.shape}," if value.shape != _shape(array) else ""
      problems.append(f"wrong shape: source tensor {name} {_shape(array)}{became} for "
                      f"variable {rule.target} {tuple(expected[rule.target])}")
      continue
    out[rule.target] = value.astype(np.float32)
  for name, rule in rules.items():
    if name not in source and rule.target in expected and rule.target not in accounted:
      accounted.add(rule.target)
      problems.append(f"missing source tensor {name} for variable {rule.target} "
                      f"{tuple(expected[rule.target])}")
  for target, shape in expected.items():
    if target not in accounted:
      problems.append(f"variable {target} {tuple(shape)} has no source tensor")
  if problems:
    raise ValueError(f"{len(problems)} problem(s) converting weights:\n  " +
                     "\n  ".join(problems))
  return out


def unflatten(flat: Mapping[str, Any]) -> dict[str, Any]:
  """{'params/a/b': x} → {'params': {'a': {'b': x}}}."""
  return traverse_util.unflatten_dict(dict(flat), sep="/")


def _shape(array: Any) -> Shape:
  return tuple(np.shape(array))
