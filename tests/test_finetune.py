"""Fine-tuning: a digits model (conftest's `trained_digits`, test_inference's too) onto the
even digits, 5 classes, through configs/finetune.py and trainer.py."""

import importlib.util
import json
import pathlib

import flax.traverse_util
import jax
import numpy as np
import optax
import orbax.checkpoint as ocp
import pytest

from efficientnet_jax.training import checkpointing, freezing, trainer
from efficientnet_jax.data import input_pipeline

ROOT = pathlib.Path(__file__).resolve().parents[1]
FROZEN_STEPS = 15
STEPS = 60


def finetune_config(arg):
  spec = importlib.util.spec_from_file_location("finetune_config",
                                                ROOT / "configs" / "finetune.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(arg)


def flat(tree):
  return {k: np.asarray(v) for k, v in flax.traverse_util.flatten_dict(tree, sep="/").items()}


def test_freeze_backbone_for_zeroes_then_thaws():
  params = {"stem_conv": {"conv": {"kernel": np.ones((2, 2))}},
            "classifier": {"kernel": np.ones((2, 3)), "bias": np.ones(3)}}
  grads = jax.tree.map(lambda x: np.full_like(x, 2.0), params)
  tx = freezing.freeze_backbone_for(optax.sgd(0.1, momentum=0.9), steps=2)
  state = tx.init(params)
  for step in range(3):
    updates, state = tx.update(grads, state, params)
    backbone = np.asarray(updates["stem_conv"]["conv"]["kernel"])
    head = np.asarray(updates["classifier"]["kernel"])
    # Head: momentum builds up from step 0. Backbone: zero, then a first step (-lr·g),
    # because its momentum buffer saw no gradient while frozen.
    np.testing.assert_allclose(head, -0.2 * sum(0.9**i for i in range(step + 1)), rtol=1e-6)
    np.testing.assert_array_equal(backbone, 0.0 if step < 2 else np.float32(-0.2))
  assert freezing.freeze_backbone_for(optax.sgd(0.1), 0) is not None
  with pytest.raises(ValueError, match="frozen backbone steps must be >= 0"):
    freezing.freeze_backbone_for(optax.sgd(0.1), -1)


def test_finetune_config_takes_the_weights_settings(trained_digits):
  workdir, _ = trained_digits
  config = finetune_config(f"dataset=digits_even,weights={workdir}")
  assert config.init_from == str(workdir) and config.model.num_classes is None
  assert (config.model.width, config.model.resolution, config.input.crop_fraction) == (
      0.25, 32, 1.0)
  assert (config.train_split, config.eval_split, config.optimizer.name) == (
      "train", "test", "sgd")
  assert finetune_config("dataset=oxford_flowers102").train_split == "train+validation"
  with pytest.raises(ValueError, match="contradicts the weights"):
    finetune_config(f"dataset=digits_even,weights={workdir},variant=b3")
  with pytest.raises(ValueError, match="got 'lr=1'"):
    finetune_config("dataset=cifar10,lr=1")


def test_weights_of_another_family_name_both(trained_digits):
  """Refused by trainer.validate, before any data is read or anything compiles."""
  workdir, _ = trained_digits
  config = finetune_config(f"dataset=digits_even,weights={workdir}")
  config.model.family, config.model.variant = "efficientnet_lite", "lite0"
  with pytest.raises(ValueError, match=r"holds efficientnet weights \(b0\), but "
                     r"config.model.family is 'efficientnet_lite' \(variant 'lite0'\)"):
    trainer.validate(config)


def restore(workdir, step):
  with ocp.CheckpointManager(pathlib.Path(workdir) / "checkpoints") as manager:
    return manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore()))["state"]


def test_finetune_onto_even_digits(tmp_path_factory, trained_digits):
  """trainer.py fine-tunes the digits model onto 5 classes: head first, BN frozen throughout."""
  base = tmp_path_factory.getbasetemp()
  workdir, pretrain = trained_digits
  config = finetune_config(f"dataset=digits_even,weights={workdir}")
  config.data_dir = str(base / "tfds")
  config.batch_size = 32
  config.num_train_steps = STEPS
  config.schedule.warmup_epochs = 0.0
  config.optimizer.base_learning_rate = 0.16  # SGD: 0.02 at batch 32 (0.05 overshoots)
  config.finetune.freeze_bn = True
  examples = input_pipeline.dataset_info(config).num_train_examples
  frozen_epochs = FROZEN_STEPS * config.batch_size / examples
  config.finetune.freeze_backbone_epochs = frozen_epochs
  config.eval_every_epochs = frozen_epochs  # evaluates after the head-only phase too
  config.checkpoint_every_steps = FROZEN_STEPS
  config.keep_checkpoints = STEPS // FROZEN_STEPS
  out = tmp_path_factory.mktemp("finetune")
  results = trainer.train_and_evaluate(config, str(out))

  pretrained = {**flat({"params": checkpointing.load_variables(str(workdir))["params"]}),
                **flat({"batch_stats": checkpointing.load_variables(str(workdir))["batch_stats"]})}
  backbone = [k for k in pretrained if not k.startswith("params/classifier/")]
  assert len(backbone) == len(pretrained) - 2
  frozen, final = restore(out, FROZEN_STEPS), restore(out, STEPS)
  for name, state in (("after the head-only steps", frozen), ("at the end", final)):
    assert np.shape(state["params"]["classifier"]["kernel"]) == (320, 5), name
  # After the frozen steps every loaded variable is still the pretrained one, bit for bit,
  # raw and EMA: they were loaded unchanged and nothing outside the head moved.
  for prefix, collection in (("params/", "params"), ("params/", "ema_params"),
                             ("batch_stats/", "batch_stats"),
                             ("batch_stats/", "ema_batch_stats")):
    values = flat(frozen[collection])
    for k in backbone:
      if k.startswith(prefix):
        np.testing.assert_array_equal(values[k[len(prefix):]], pretrained[k],
                                      err_msg=f"{collection} {k}")
  # Then the backbone thaws; frozen BN statistics stay the loaded ones to the end.
  params, stats = flat(final["params"]), flat(final["batch_stats"])
  backbone_params = [k for k in backbone if k.startswith("params/")]
  moved = [k for k in backbone_params
           if not np.array_equal(params[k[len("params/"):]], pretrained[k])]
  assert len(moved) > 0.9 * len(backbone_params)
  for k in backbone:
    if k.startswith("batch_stats/"):
      np.testing.assert_array_equal(stats[k[len("batch_stats/"):]], pretrained[k], err_msg=k)

  evals = {r["step"]: r for r in map(json.loads, (out / "metrics.jsonl").read_text()
                                     .splitlines()) if "eval_top1" in r}
  head_only = evals[FROZEN_STEPS]["eval_top1"]
  print(f"pretrained digits top-1 {pretrain['eval_top1']:.3f}; even digits top-1 "
        f"{head_only:.3f} after {FROZEN_STEPS} head-only steps, "
        f"{results['eval_top1']:.3f} after {STEPS} steps")
  assert results["eval_num_examples"] == 178  # every even test digit
  assert results["eval_top1"] > 0.6 and head_only > 0.6  # chance is 0.2
