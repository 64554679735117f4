"""Input pipeline throughput on the host CPU: train (plain, RandAugment, AutoAugment), eval.

  efficientnet-benchmark-input                  # 512 generated 500x375 JPEGs, at 224
  efficientnet-benchmark-input --num_images=1000 --resolution=300 --modes=train,eval
  efficientnet-benchmark-input --dataset=imagenet2012 --data_dir=/data/tfds
  efficientnet-benchmark-input --dataset=folder:/data/my_images --split=train
  taskset -c 0 efficientnet-benchmark-input     # tf.data limited to one core

Without --dataset it writes --num_images JPEGs of ImageNet's typical size (500x375,
quality 90, 4:2:0; smooth random content plus noise, ~70 KB each) as a folder dataset
under --image_dir (a temporary directory by default) and reads them through
`input_pipeline`, exactly as training does. For each mode it prints images/s and images
per CPU-second of this process (user + system time of all its threads), which is the
per-core rate and, unlike images/s, does not depend on what else the machine runs; and
the cores needed to feed --accelerator_rate images/s at that per-core rate (a host with
fewer cannot keep that accelerator busy with this pipeline).
"""

from __future__ import annotations

import io
import os
import tempfile
import time
from typing import Iterator

import ml_collections
import numpy as np
from absl import app, flags
from PIL import Image

from efficientnet_jax.config import defaults
from efficientnet_jax.data import image_folder, input_pipeline, tf_devices

_DATASET = flags.DEFINE_string("dataset", None, "config.dataset to read (tfds name or "
                               "folder:<path>); default: generated JPEGs.")
_DATA_DIR = flags.DEFINE_string("data_dir", None, "tfds data dir, for --dataset.")
_SPLIT = flags.DEFINE_string("split", "train", "Split read by every mode.")
_IMAGE_DIR = flags.DEFINE_string("image_dir", None, "Where to write the generated JPEGs "
                                 "(kept, and reused if already there); default: a temporary "
                                 "directory, deleted at the end.")
_NUM_IMAGES = flags.DEFINE_integer("num_images", 512, "Generated JPEGs.")
_IMAGE_SIZE = flags.DEFINE_list("image_size", ["500", "375"], "Width,height of generated JPEGs.")
_RESOLUTION = flags.DEFINE_integer("resolution", 224, "Output resolution.")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 64, "Batch size.")
_NUM_BATCHES = flags.DEFINE_integer("num_batches", 16, "Batches timed per mode (after "
                                    "--warmup_batches).")
_WARMUP = flags.DEFINE_integer("warmup_batches", 4, "Batches read before timing.")
_MODES = flags.DEFINE_list("modes", ["train", "randaugment", "autoaugment", "eval"],
                           "Pipelines to time: train, randaugment, autoaugment, eval.")
_MAGNITUDE = flags.DEFINE_integer("randaug_magnitude", 10, "RandAugment magnitude M.")
_FEED_RATE = flags.DEFINE_float(
    "accelerator_rate", 2489, "Images/s the pipeline must feed: the cores it needs are "
    "printed. Default: B0 training on one A100 (NVIDIA's PyTorch AMP figure); give the "
    "train img/s of efficientnet-accelerator-table for the accelerator at hand.")


def write_jpegs(directory: str, count: int, width: int, height: int, seed: int = 0) -> int:
  """`count` JPEGs in <directory>/train/<class>/; returns their mean size in bytes."""
  rng = np.random.default_rng(seed)
  sizes = []
  for i in range(count):
    path = os.path.join(directory, "train", f"class_{i % 10}", f"{i:06d}.jpg")
    if not os.path.exists(path):
      os.makedirs(os.path.dirname(path), exist_ok=True)
      # Smooth colour fields plus grain: JPEG sizes near real photos' (pure noise would
      # be ~3x larger and slower to decode than ImageNet).
      low = Image.fromarray(rng.integers(0, 256, (height // 32, width // 32, 3), np.uint8))
      image = np.asarray(low.resize((width, height), Image.BICUBIC), np.int16)
      image = np.clip(image + rng.integers(-20, 21, image.shape), 0, 255).astype(np.uint8)
      buffer = io.BytesIO()
      Image.fromarray(image).save(buffer, "JPEG", quality=90)
      with open(path, "wb") as f:
        f.write(buffer.getvalue())
    sizes.append(os.path.getsize(path))
  return int(np.mean(sizes))


def _cpu_seconds() -> float:
  times = os.times()
  return times.user + times.system


def _time(iterator: Iterator[dict], batch_size: int, num_batches: int,
          warmup: int) -> tuple[float, float]:
  """(images/s, images per CPU-second) over `num_batches` after `warmup` batches."""
  for _ in range(warmup):
    next(iterator)
  wall, cpu = time.perf_counter(), _cpu_seconds()
  for _ in range(num_batches):
    next(iterator)
  wall, cpu = time.perf_counter() - wall, _cpu_seconds() - cpu
  images = num_batches * batch_size
  return images / wall, images / cpu


def main(argv: list[str]) -> None:
  del argv
  tf_devices.hide_accelerators_from_tf()
  with tempfile.TemporaryDirectory(prefix="benchmark_input_") as scratch:
    config = defaults.get_config()
    config.train_split = config.eval_split = _SPLIT.value
    config.batch_size = _BATCH_SIZE.value
    config.input.shuffle_buffer = 1024
    if _DATASET.value:
      config.dataset, config.data_dir = _DATASET.value, _DATA_DIR.value
    else:
      directory = _IMAGE_DIR.value or scratch
      width, height = map(int, _IMAGE_SIZE.value)
      mean_bytes = write_jpegs(directory, _NUM_IMAGES.value, width, height)
      print(f"{_NUM_IMAGES.value} JPEGs {width}x{height}, mean {mean_bytes / 1000:.0f} kB, "
            f"in {directory}")
      config.dataset = f"{input_pipeline.FOLDER_PREFIX}{directory}"
      wall, cpu = time.perf_counter(), _cpu_seconds()
      image_folder.load(directory)
      wall, cpu = time.perf_counter() - wall, _cpu_seconds() - cpu
      print(f"folder scan (decode every file once): {_NUM_IMAGES.value / wall:.0f} images/s, "
            f"{_NUM_IMAGES.value / cpu:.0f} images per CPU-s")
    input_pipeline.validate(config)
    cores = len(os.sched_getaffinity(0))
    print(f"resolution {_RESOLUTION.value}, batch {_BATCH_SIZE.value}, cores available to "
          f"tf.data: {cores}, load average {os.getloadavg()[0]:.1f}")
    print(f"{'mode':<12} {'images/s':>9} {'images/s/core':>14} {'images per CPU-s':>17} "
          f"{f'cores for {_FEED_RATE.value:,.0f}/s':>16}")
    for mode in _MODES.value:
      if mode not in ("train", "randaugment", "autoaugment", "eval"):
        raise app.UsageError(f"--modes: unknown mode {mode!r}")
      config.input.augment = mode if mode in ("randaugment", "autoaugment") else None
      config.input.randaug_magnitude = _MAGNITUDE.value
      if mode == "eval":
        iterator = _eval_batches(config)
      else:
        iterator = input_pipeline.create_train_dataset(
            config, _RESOLUTION.value, process_index=0, process_count=1).as_numpy_iterator()
      rate, per_cpu = _time(iterator, _BATCH_SIZE.value, _NUM_BATCHES.value, _WARMUP.value)
      print(f"{mode:<12} {rate:9.0f} {rate / cores:14.0f} {per_cpu:17.0f} "
            f"{_FEED_RATE.value / per_cpu:16.1f}")


def _eval_batches(config: ml_collections.ConfigDict) -> Iterator[dict]:
  """Eval batches without end: an eval pass is finite, so passes are chained."""
  while True:
    ds, _ = input_pipeline.create_eval_dataset(config, _RESOLUTION.value, process_index=0,
                                               process_count=1)
    yield from ds.as_numpy_iterator()


if __name__ == "__main__":
  app.run(main)
