"""The offline demo datasets: scikit-learn's handwritten digits as tfds builders.

* "digits": the 1,797 8×8 images, upsampled to 32×32 RGB, 10 classes, a stratified 80/20
  train/test split with a fixed seed;
* "digits_even": the even digits 0, 2, 4, 6, 8 relabelled 0…4, same images and same split
  (restricted to those classes), an offline transfer-learning target: a model pretrained
  on "digits" fine-tunes onto a 5-class problem without a download.

sklearn ships the images inside the package, so `download_and_prepare` needs no network.
`register()` makes `tfds.builder("digits", data_dir=...)` work like any other tfds
dataset; the input pipeline calls it when a config names one of them.
"""

from __future__ import annotations

from typing import Iterator, Sequence

import numpy as np
import tensorflow_datasets as tfds
from etils import epath

BUILDER_NAMES = ("digits", "digits_even")
IMAGE_SIZE = 32
NUM_CLASSES = 10
TEST_FRACTION = 0.2
SPLIT_SEED = 0
KEPT_EVEN_DIGITS = (0, 2, 4, 6, 8)  # label i of "digits_even" is digit KEPT_EVEN_DIGITS[i]
HOMEPAGE = "https://scikit-learn.org/stable/datasets/toy_dataset.html#digits-dataset"
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


def split_examples(kept_digits: Sequence[int]) -> dict[str, Iterator[tuple[int, dict]]]:
  """{"train", "test"} → (key, example) of the digits in `kept_digits`, labelled by their
  position in it. The split is made over all ten digits first, so a digit never moves
  between train and test from one dataset to the other."""
  # Imported here so that registering the builders does not import sklearn.
  from sklearn import datasets, model_selection
  digits = datasets.load_digits()
  indices = np.arange(len(digits.target))
  train_idx, test_idx = model_selection.train_test_split(
      indices, test_size=TEST_FRACTION, random_state=SPLIT_SEED, stratify=digits.target)
  images = digits_images(digits.images)
  kept = list(kept_digits)

  def examples(split_indices: np.ndarray) -> Iterator[tuple[int, dict]]:
    # The sklearn index is the key, so the stored order is the same on every build.
    for i in split_indices:
      if digits.target[i] in kept:
        yield int(i), {"image": images[i], "label": kept.index(int(digits.target[i]))}

  return {"train": examples(train_idx), "test": examples(test_idx)}


def _features(label: tfds.features.ClassLabel) -> tfds.features.FeaturesDict:
  return tfds.features.FeaturesDict({
      "image": tfds.features.Image(shape=(IMAGE_SIZE, IMAGE_SIZE, 3)), "label": label})


def register() -> None:
  """Registers the tfds builders "digits" and "digits_even"; later calls do nothing."""
  if set(BUILDER_NAMES) <= set(tfds.list_builders(with_community_datasets=False)):
    return

  # tfds registers a builder when its class is defined, under the class name in snake case.
  class Digits(tfds.core.GeneratorBasedBuilder):
    """sklearn digits, 32×32 RGB, stratified 80/20 train/test split with a fixed seed."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Initial release."}
    # tfds 4.9.10 finds a builder's source through the `importlib_resources` backport,
    # which it only requires on Python < 3.9; naming the file directly avoids that import.
    code_path = epath.Path(__file__)

    def _info(self) -> tfds.core.DatasetInfo:
      return self.dataset_info_from_configs(
          description="scikit-learn's 8×8 handwritten digits, upsampled to 32×32 RGB.",
          features=_features(tfds.features.ClassLabel(num_classes=NUM_CLASSES)),
          supervised_keys=("image", "label"), homepage=HOMEPAGE)

    def _split_generators(self, dl_manager: tfds.download.DownloadManager):
      del dl_manager  # Everything ships with scikit-learn.
      return split_examples(range(NUM_CLASSES))

    def _generate_examples(self, examples: Iterator[tuple[int, dict]]):
      return examples

  class DigitsEven(tfds.core.GeneratorBasedBuilder):
    """sklearn digits 0, 2, 4, 6, 8 as classes 0…4, 32×32 RGB, digits' own split."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Initial release."}
    code_path = epath.Path(__file__)  # see Digits.code_path

    def _info(self) -> tfds.core.DatasetInfo:
      return self.dataset_info_from_configs(
          description="The even classes of scikit-learn's digits, relabelled 0..4.",
          features=_features(tfds.features.ClassLabel(
              names=[str(d) for d in KEPT_EVEN_DIGITS])),
          supervised_keys=("image", "label"), homepage=HOMEPAGE)

    def _split_generators(self, dl_manager: tfds.download.DownloadManager):
      del dl_manager  # Everything ships with scikit-learn.
      return split_examples(KEPT_EVEN_DIGITS)

    def _generate_examples(self, examples: Iterator[tuple[int, dict]]):
      return examples
