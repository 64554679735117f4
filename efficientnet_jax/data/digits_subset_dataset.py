"""An offline transfer-learning target: the even digits 0, 2, 4, 6, 8 relabelled 0…4.

Registers the tfds builder "digits_even" (import this module first). Same images and
same train/test split as "digits" (digits_dataset), restricted to the even classes, so a
model pretrained on "digits" can be fine-tuned onto a 5-class problem without a download.
"""

from __future__ import annotations

from typing import Iterator

import numpy as np
import tensorflow_datasets as tfds
from etils import epath

from efficientnet_jax.data import digits_dataset

KEPT_DIGITS = (0, 2, 4, 6, 8)  # label i of "digits_even" is digit KEPT_DIGITS[i]


class DigitsEven(tfds.core.GeneratorBasedBuilder):
  """sklearn digits 0, 2, 4, 6, 8 as classes 0…4, 32×32 RGB, digits' own split."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release."}
  code_path = epath.Path(__file__)  # see digits_dataset.Digits.code_path

  def _info(self) -> tfds.core.DatasetInfo:
    size = digits_dataset.IMAGE_SIZE
    return self.dataset_info_from_configs(
        description="The even classes of scikit-learn's digits, relabelled 0..4.",
        features=tfds.features.FeaturesDict({
            "image": tfds.features.Image(shape=(size, size, 3)),
            "label": tfds.features.ClassLabel(names=[str(d) for d in KEPT_DIGITS]),
        }),
        supervised_keys=("image", "label"),
        homepage="https://scikit-learn.org/stable/datasets/toy_dataset.html#digits-dataset",
    )

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    del dl_manager  # Everything ships with scikit-learn.
    from sklearn import datasets, model_selection
    digits = datasets.load_digits()
    indices = np.arange(len(digits.target))
    # The parent dataset's split, so a digit never moves between train and test.
    train_idx, test_idx = model_selection.train_test_split(
        indices, test_size=digits_dataset.TEST_FRACTION,
        random_state=digits_dataset.SPLIT_SEED, stratify=digits.target)
    images = digits_dataset.digits_images(digits.images)
    return {"train": self._generate_examples(images, digits.target, train_idx),
            "test": self._generate_examples(images, digits.target, test_idx)}

  def _generate_examples(self, images: np.ndarray, labels: np.ndarray,
                         indices: np.ndarray) -> Iterator[tuple[int, dict]]:
    for i in indices:
      if labels[i] in KEPT_DIGITS:
        yield int(i), {"image": images[i], "label": KEPT_DIGITS.index(int(labels[i]))}
