"""A folder of images as a classification dataset: `<root>/<split>/<class>/<image>`.

The layout of `tfds.ImageFolder` (and torchvision's ImageFolder under each split):

  root/train/cat/0001.jpg        root/val/cat/0100.jpg
  root/train/dog/0002.png        root/val/dog/0200.jpg

* Splits are the sub-folders of the root; a split string may slice one as tfds does
  ("train[:90%]", "train[-500:]", "train+val"), so a single folder can be split too.
* Classes are the sub-folders of the splits, sorted by name (over all splits) → labels
  0..C-1. Files may sit in nested folders below their class folder; hidden files and
  folders (".DS_Store", ".ipynb_checkpoints") are ignored, every other file must be an image
  (JPEG, PNG, GIF, BMP or WebP, whatever its extension).
* Order: each split's files sorted by a hash of their path below the split folder: a fixed
  pseudo-random order, the same on every machine and file system, so contiguous slices
  (a held-out "train[90%:]", each process's shard) mix all classes.
* Bad files: `load` decodes every file once (in parallel, through tf.data) before training
  starts. A file that cannot be read or decoded raises a ValueError naming it, or with
  `skip_bad_images=True` is dropped and counted (`ImageFolder.skipped`). A truncated or
  foreign file therefore never stops a run half-way. Cost: one full decode per image and
  process, ~2 ms of CPU per 500×375 JPEG (efficientnet-benchmark-input prints the rate); the
  result is cached for the life of the process.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import os

import tensorflow as tf
import tensorflow_datasets as tfds
from absl import logging

from efficientnet_jax.data import preprocessing

_MAX_NAMED = 10  # bad files listed in an error message


@dataclasses.dataclass(frozen=True)
class ImageFolder:
  root: str
  class_names: tuple[str, ...]
  # Split folder → ((path, label), ...) in stored order (sorted by path hash).
  splits: dict[str, tuple[tuple[str, int], ...]]
  skipped: tuple[str, ...] = ()  # undecodable files left out (skip_bad_images=True)

  @property
  def num_classes(self) -> int:
    return len(self.class_names)

  def examples(self, split: str) -> tuple[list[str], list[int]]:
    """(paths, labels) of a split string such as "train", "val[:50%]" or "train+val"."""
    infos = {name: tfds.core.SplitInfo(name=name, shard_lengths=[len(files)], num_bytes=0)
             for name, files in self.splits.items()}
    try:
      instructions = tfds.core.ReadInstruction.from_spec(split).to_absolute(infos)
    except (ValueError, AssertionError) as e:
      raise ValueError(f"split {split!r} of image folder {self.root}: {e} "
                       f"(its splits are the sub-folders {sorted(self.splits)})") from e
    paths, labels = [], []
    for instruction in instructions:
      for path, label in self.splits[instruction.splitname][instruction.from_:instruction.to]:
        paths.append(path)
        labels.append(label)
    return paths, labels

  def num_examples(self, split: str) -> int:
    return len(self.examples(split)[0])


def _visible(names: list[str]) -> list[str]:
  return sorted(n.rstrip("/") for n in names if not n.startswith("."))


def _subfolders(path: str) -> list[str]:
  return [n for n in _visible(tf.io.gfile.listdir(path))
          if tf.io.gfile.isdir(os.path.join(path, n))]


def _files_below(folder: str) -> list[str]:
  files = []
  for directory, subdirs, names in tf.io.gfile.walk(folder):
    subdirs[:] = _visible(subdirs)  # prunes hidden folders from the walk
    files += [os.path.join(directory, n) for n in _visible(names)]
  return files


def undecodable(paths: list[str]) -> list[str]:
  """The paths among `paths` that cannot be read and decoded as an image, in order.

  Every file is decoded once with the decoder training uses, in parallel; tf.data's
  ignore_errors drops the failures and the set difference names them.
  """
  if not paths:
    return []
  ds = tf.data.Dataset.from_tensor_slices(paths)
  ds = ds.map(lambda p: (p, tf.shape(preprocessing.decode_image(tf.io.read_file(p)))[0]),
              num_parallel_calls=tf.data.AUTOTUNE, deterministic=False)
  good = {p.decode() for p, _ in ds.ignore_errors().as_numpy_iterator()}
  return [p for p in paths if p not in good]


@functools.lru_cache(maxsize=8)
def load(root: str, skip_bad_images: bool = False) -> ImageFolder:
  """Lists and checks the image folder at `root` (cached: each process scans it once)."""
  if not tf.io.gfile.isdir(root):
    raise ValueError(f"image folder {root} does not exist or is not a directory.")
  split_names = _subfolders(root)
  layout = "expected <root>/<split>/<class>/<image>, e.g. root/train/cat/1.jpg"
  if not split_names:
    raise ValueError(f"image folder {root} has no split sub-folders; {layout}.")
  listed: dict[str, list[tuple[str, str]]] = {}
  for split in split_names:
    classes = _subfolders(os.path.join(root, split))
    if not classes:
      raise ValueError(f"image folder {root}: split folder {split!r} has no class "
                       f"sub-folders; {layout}.")
    listed[split] = [(path, name) for name in classes
                     for path in _files_below(os.path.join(root, split, name))]
  class_names = tuple(sorted({name for files in listed.values() for _, name in files}))
  paths = [path for files in listed.values() for path, _ in files]
  bad = undecodable(paths)
  if bad and not skip_bad_images:
    named = "\n  ".join(bad[:_MAX_NAMED])
    more = f"\n  ... and {len(bad) - _MAX_NAMED} more" if len(bad) > _MAX_NAMED else ""
    raise ValueError(
        f"image folder {root}: {len(bad)} of {len(paths)} files are not readable images:\n"
        f"  {named}{more}\nRemove them, or skip them with skip_bad_images=True "
        f"(config.input.skip_bad_images=True).")
  if bad:
    logging.warning("Image folder %s: skipping %d of %d files that are not readable "
                    "images: %s", root, len(bad), len(paths), ", ".join(bad[:_MAX_NAMED]))
  bad_set = set(bad)
  label = {name: i for i, name in enumerate(class_names)}
  splits = {}
  for split, files in listed.items():
    split_dir = os.path.join(root, split)
    kept = [(path, label[name]) for path, name in files if path not in bad_set]
    # Relative POSIX paths, so the order is the same wherever the folder is mounted.
    key = lambda item: hashlib.sha1(
        os.path.relpath(item[0], split_dir).replace(os.sep, "/").encode()).hexdigest()
    splits[split] = tuple(sorted(kept, key=key))
  return ImageFolder(root=root, class_names=class_names, splits=splits, skipped=tuple(bad))


def dataset(paths: list[str], labels: list[int]) -> tf.data.Dataset:
  """{'path', 'label'} records; `read` turns one into (encoded image, int32 label)."""
  return tf.data.Dataset.from_tensor_slices(
      {"path": tf.constant(paths, tf.string), "label": tf.constant(labels, tf.int32)})


def read(record: dict) -> tuple[tf.Tensor, tf.Tensor]:
  return tf.io.read_file(record["path"]), record["label"]
