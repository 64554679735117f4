"""The few lines a finished training run ends with: its result, its time, where its files
are, and the commands to try next on it."""

from __future__ import annotations

import os
import shlex

import ml_collections
import numpy as np

from efficientnet_jax.training import evaluator

SAMPLES_DIR = "samples"


def final_summary(config: ml_collections.ConfigDict, workdir: str, results: dict[str, float],
                  seconds: float, log_file: str | None) -> str:
  """A short report of a finished run, for the terminal."""
  workdir_arg = shlex.quote(workdir)
  data_args = f"--dataset={config.dataset} --split={config.eval_split}"
  if config.data_dir:
    data_args += f" --data_dir={shlex.quote(config.data_dir)}"
  minutes, secs = divmod(round(seconds), 60)
  lines = [
      f"Done in {minutes}m{secs:02d}s: {config.model.variant} on {config.dataset}, "
      f"{config.eval_split} split (EMA weights) {evaluator.describe(results)}.",
      f"  weights:     {os.path.join(workdir, 'checkpoints')} (latest), "
      f"{os.path.join(workdir, 'best')} (best top-1)",
      f"  metrics:     {os.path.join(workdir, 'metrics.jsonl')}, TensorBoard events in "
      f"{workdir}",
  ]
  if log_file:
    lines.append(f"  full log:    {log_file}")
  images = sample_images(config, workdir)
  lines += [
      "Next:",
      f"  efficientnet-predict --weights={workdir_arg} "
      + (" ".join(shlex.quote(p) for p in images) if images else "IMAGE [IMAGE ...]"),
      f"  efficientnet-evaluate --weights={workdir_arg} {data_args}",
      f"  efficientnet-plot {workdir_arg}",
      f"  tensorboard --logdir={workdir_arg}",
  ]
  return "\n".join(lines)


def sample_images(config: ml_collections.ConfigDict, workdir: str, count: int = 2
                  ) -> list[str]:
  """PNG files of the first `count` eval images of the offline demo datasets, written into
  <workdir>/samples, so that the suggested predict command runs as written ([] for other
  datasets: their images are the user's)."""
  from efficientnet_jax.data import digits
  if config.dataset not in digits.BUILDER_NAMES:
    return []
  from PIL import Image
  directory = os.path.join(workdir, SAMPLES_DIR)
  os.makedirs(directory, exist_ok=True)
  paths = []
  for i, (_, example) in zip(range(count), digits.split_examples(
      digits.KEPT_EVEN_DIGITS if config.dataset == "digits_even" else range(10))["test"]):
    path = os.path.join(directory, f"test_{i}_label_{example['label']}.png")
    Image.fromarray(np.asarray(example["image"])).save(path)
    paths.append(path)
  return paths
