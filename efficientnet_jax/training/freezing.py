"""Transfer learning: train only the new classifier for the first steps of a fine-tune.

`freeze_backbone_for(tx, steps)` wraps the run's optimizer so that every variable outside
the classifier gets an update of exactly zero for the first `steps` optimizer steps, while
the classifier trains from step 0. The backbone's optimizer state (momentum, RMSProp
moments and the schedule's step count) stays untouched while frozen, so when it thaws
it starts its own schedule from step 0: with a warmup, the backbone warms up after the
head has settled, which is what this is for. Use `steps` ≥ the run's length to keep the
backbone frozen throughout (a linear probe on the pretrained features).

Freezing BatchNorm *statistics* (normalise with the pretrained running averages and never
update them, while dropout and drop-path stay on) is a model setting, not an optimizer
one: the model's BatchNorms are built with `use_running_average=not train or frozen`, and
`train_step.create_model` sets that flag when `config.finetune.freeze_bn` is on.
"""

from __future__ import annotations

from typing import Any

import jax
import optax

CLASSIFIER = "classifier"  # the module name of EfficientNet's final Dense layer


def backbone_mask(params: Any) -> Any:
  """A pytree like `params`: True for every backbone leaf, False for the classifier's."""
  return jax.tree_util.tree_map_with_path(
      lambda path, _: str(getattr(path[0], "key", path[0])) != CLASSIFIER, params)


def freeze_backbone_for(tx: optax.GradientTransformation,
                        steps: int) -> optax.GradientTransformation:
  """`tx` for the classifier from the start and for the backbone only after `steps` steps.

  Raises:
    ValueError: `steps` is negative.
  """
  if steps < 0:
    raise ValueError(f"frozen backbone steps must be >= 0, got {steps}")
  if steps == 0:
    return tx
  labels = lambda params: jax.tree.map(lambda backbone: "backbone" if backbone else "head",
                                       backbone_mask(params))
  # conditionally_mask returns zero updates and keeps the inner state while count < steps.
  frozen_then_tx = optax.transforms.conditionally_mask(tx, lambda count: count >= steps)
  return optax.multi_transform({"head": tx, "backbone": frozen_then_tx}, labels)
