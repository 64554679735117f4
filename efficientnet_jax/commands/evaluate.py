"""Top-1/top-5 of converted weights or a training workdir over a whole tfds split.

  efficientnet-evaluate --weights=weights/b0 --data_dir=/data/tfds
  efficientnet-evaluate --weights=runs/demo --dataset=digits --split=test

Uses the resolution, crop and normalisation recorded with the weights, and the training
code's evaluation (`training.evaluator`: every example, padding masked out). imagenet2012
must be prepared in --data_dir (tfds needs the manual download).
"""

from __future__ import annotations

import json

from absl import app, flags

from efficientnet_jax import compilation_cache, terminal

_WEIGHTS = flags.DEFINE_string("weights", None,
                               "Converted-weights directory or training workdir.")
_DATASET = flags.DEFINE_string("dataset", "imagenet2012", "tfds dataset name.")
_SPLIT = flags.DEFINE_string("split", "validation", "Split to evaluate on.")
_DATA_DIR = flags.DEFINE_string("data_dir", None, "tfds data directory.")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 250, "Global eval batch size.")
_VERBOSE = flags.DEFINE_bool("verbose", False, terminal.VERBOSE_HELP)
flags.mark_flag_as_required("weights")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  if not _VERBOSE.value:
    terminal.quiet_output()
  with terminal.native_stderr_into_log():
    from efficientnet_jax import inference
    from efficientnet_jax.data import tf_devices
    tf_devices.hide_accelerators_from_tf()
  compilation_cache.enable()
  results = inference.evaluate(_WEIGHTS.value, _DATASET.value, _SPLIT.value, _DATA_DIR.value,
                               _BATCH_SIZE.value)
  from efficientnet_jax.training import evaluator
  terminal.say(f"{_WEIGHTS.value} on {_DATASET.value} {_SPLIT.value}: "
               + evaluator.describe(results, prefix=""))
  print(json.dumps({"weights": _WEIGHTS.value, "dataset": _DATASET.value,
                    "split": _SPLIT.value, **results}, sort_keys=True))


if __name__ == "__main__":
  app.run(main)
