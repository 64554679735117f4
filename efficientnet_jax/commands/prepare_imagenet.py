"""One-time preparation of ImageNet (ILSVRC 2012) as the tfds dataset `imagenet2012`.

Download ILSVRC2012_img_train.tar (138 GB) and ILSVRC2012_img_val.tar (6.3 GB) from
https://image-net.org/download-images (registration needed) into
<data_dir>/downloads/manual/, then:

  efficientnet-prepare-imagenet --data_dir=/data/tfds

It writes <data_dir>/imagenet2012/5.1.0/ (~150 GB of TFRecords: 1,281,167 train and 50,000
validation images, JPEG bytes as in the archives); this takes a few hours on one machine
and is done once. Train with --config.data_dir=/data/tfds. --manual_dir names another
folder holding the tar files.
"""

from __future__ import annotations

import os

from absl import app, flags

import tensorflow as tf
import tensorflow_datasets as tfds

from efficientnet_jax.data import input_pipeline, tf_devices

_DATA_DIR = flags.DEFINE_string("data_dir", None, "tfds data directory to prepare into.",
                                required=True)
_MANUAL_DIR = flags.DEFINE_string(
    "manual_dir", None, "Folder with the two tar files (default <data_dir>/downloads/manual).")

ARCHIVES = ("ILSVRC2012_img_train.tar", "ILSVRC2012_img_val.tar")


def main(argv):
  del argv
  tf_devices.hide_accelerators_from_tf()  # preparing needs the CPU only
  manual_dir = _MANUAL_DIR.value or os.path.join(_DATA_DIR.value, "downloads", "manual")
  missing = [name for name in ARCHIVES
             if not tf.io.gfile.exists(os.path.join(manual_dir, name))]
  if missing:
    raise app.UsageError(
        f"{', '.join(missing)} not found in {manual_dir}. Download the archives from "
        "https://image-net.org/download-images and put them there (or pass --manual_dir).")
  builder = tfds.builder("imagenet2012", data_dir=_DATA_DIR.value)
  if builder.is_prepared():
    print(f"imagenet2012 is already prepared in {builder.data_dir}.")
  else:
    builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(manual_dir=manual_dir))
  splits = builder.info.splits
  print(f"imagenet2012 in {builder.data_dir}: "
        + ", ".join(f"{name} {split.num_examples:,}" for name, split in splits.items()))
  print(f"Train with --config.data_dir={_DATA_DIR.value}; for early stopping on the "
        f"minival add --config.train_split='{input_pipeline.MINIVAL_TRAIN_SPLIT}' "
        f"--config.eval_split='{input_pipeline.MINIVAL_SPLIT}'.")


if __name__ == "__main__":
  app.run(main)
