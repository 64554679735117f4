"""The offline demo dataset: scikit-learn's handwritten digits as a tfds builder "digits".

sklearn ships the 1,797 8×8 images inside the package, so `download_and_prepare` needs no
network. Importing this module registers the builder, after which
`tfds.builder("digits", data_dir=...)` works like any other tfds dataset.
"""

from __future__ import annotations

from typing import Iterator

import numpy as np
import tensorflow_datasets as tfds
from etils import epath

IMAGE_SIZE = 32
NUM_CLASSES = 10
TEST_FRACTION = 0.2
SPLIT_SEED = 0
_UPSAMPLE = IMAGE_SIZE // 8
_MAX_VALUE = 16  # sklearn's digits are ink counts 0..16 per 4×4 block of the scan


def digits_images(values: np.ndarray) -> np.ndarray:
  """Maps [N, 8, 8] values 0..16 to uint8 RGB images [N, 32, 32, 3].

  Nearest-neighbour upsampling: the factor is an exact integer, so every source pixel
  keeps its value (bicubic would overshoot and add ringing that has to be clipped), and the
  result does not depend on any library's resize kernel.
  """
  scaled = np.round(values.astype(np.float64) * (255 / _MAX_VALUE)).astype(np.uint8)
  upsampled = scaled.repeat(_UPSAMPLE, axis=1).repeat(_UPSAMPLE, axis=2)
  return np.repeat(upsampled[..., None], 3, axis=-1)


class Digits(tfds.core.GeneratorBasedBuilder):
  """sklearn digits, 32×32 RGB, stratified 80/20 train/test split with a fixed seed."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release."}
  # tfds 4.9.10 finds a builder's source through the `importlib_resources` backport, which
  # it only requires on Python < 3.9; naming the file directly avoids that import.
  code_path = epath.Path(__file__)

  def _info(self) -> tfds.core.DatasetInfo:
    return self.dataset_info_from_configs(
        description="scikit-learn's 8×8 handwritten digits, upsampled to 32×32 RGB.",
        features=tfds.features.FeaturesDict({
            "image": tfds.features.Image(shape=(IMAGE_SIZE, IMAGE_SIZE, 3)),
            "label": tfds.features.ClassLabel(num_classes=NUM_CLASSES),
        }),
        supervised_keys=("image", "label"),
        homepage="https://scikit-learn.org/stable/datasets/toy_dataset.html#digits-dataset",
    )

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    del dl_manager  # Everything ships with scikit-learn.
    # Imported here so that merely registering the builder does not import sklearn.
    from sklearn import datasets, model_selection
    digits = datasets.load_digits()
    indices = np.arange(len(digits.target))
    train_idx, test_idx = model_selection.train_test_split(
        indices, test_size=TEST_FRACTION, random_state=SPLIT_SEED, stratify=digits.target)
    images = digits_images(digits.images)
    return {
        "train": self._generate_examples(images, digits.target, train_idx),
        "test": self._generate_examples(images, digits.target, test_idx),
    }

  def _generate_examples(self, images: np.ndarray, labels: np.ndarray,
                         indices: np.ndarray) -> Iterator[tuple[int, dict]]:
    # The sklearn index is the key, so the stored order is the same on every build.
    for i in indices:
      yield int(i), {"image": images[i], "label": int(labels[i])}
