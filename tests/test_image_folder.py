"""Folder-of-images datasets: layout, labels, split slicing, bad files, and the pipelines."""

import collections
import os

import numpy as np
import pytest
from PIL import Image

from efficientnet_jax.config import defaults
from efficientnet_jax.data import image_folder, input_pipeline


def _write(path, value, mode="RGB", fmt=None, size=16):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  channels = {"RGB": 3, "L": 1}[mode]
  pixels = np.full((size, size, channels), value, np.uint8).squeeze(-1 if mode == "L" else None)
  Image.fromarray(pixels, mode).save(path, fmt)


def _make_folder(root):
  """train: cat 5 PNG, dog 4 PNG (one in a nested folder), zebra 3 JPEG; val: cat 2, dog 1.

  Each image is flat with a value unique to its file, so pipelines' outputs can be matched.
  """
  values = {}
  value = 10
  for split, counts in (("train", {"cat": 5, "dog": 4, "zebra": 3}),
                        ("val", {"cat": 2, "dog": 1})):
    for name, count in counts.items():
      for i in range(count):
        sub = "nested/" if (name, i) == ("dog", 0) else ""
        ext = "jpg" if name == "zebra" else "png"
        path = os.path.join(root, split, name, f"{sub}{i}.{ext}")
        _write(path, value, "L" if name == "dog" else "RGB")
        values[path] = value
        value += 15
  # Ignored: hidden files and folders, and files directly in a split folder.
  _write(os.path.join(root, "train", "cat", ".hidden.png"), 0)
  _write(os.path.join(root, "train", ".cache", "x", "1.png"), 0)
  with open(os.path.join(root, "train", "README.txt"), "w") as f:
    f.write("not a class")
  return values


def _config(root, **overrides):
  config = defaults.get_config()
  config.dataset = f"folder:{root}"
  config.train_split, config.eval_split = "train", "val"
  config.batch_size = 2
  config.input.shuffle_buffer = 16
  # Identity preprocessing at resolution 16: whole image kept, no flip.
  config.input.crop_fraction = 1.0
  config.input.crop_area_range = (1.0, 1.0)
  config.input.random_flip = False
  for key, value in overrides.items():
    config[key] = value
  return config


def test_layout_labels_and_split_slicing(tmp_path):
  values = _make_folder(str(tmp_path))
  folder = image_folder.load(str(tmp_path))
  assert folder.class_names == ("cat", "dog", "zebra") and folder.num_classes == 3
  assert folder.skipped == ()
  paths, labels = folder.examples("train")
  assert sorted(paths) == sorted(p for p in values if "/train/" in p)
  for path, label in zip(paths, labels):
    assert folder.class_names[label] == path.split(os.sep)[-2 if "nested" not in path else -3]
  # A fixed pseudo-random order, not grouped by class.
  assert labels != sorted(labels)
  assert image_folder.load.__wrapped__(str(tmp_path)).examples("train") == (paths, labels)
  # tfds split syntax: the two halves partition the split; "+" concatenates.
  first, second = folder.examples("train[:50%]")[0], folder.examples("train[50%:]")[0]
  assert (len(first), len(second)) == (6, 6) and first + second == paths
  assert folder.examples("train[-2:]")[0] == paths[-2:]
  assert folder.num_examples("train+val") == 15
  with pytest.raises(ValueError, match=r"split 'test'.*\['train', 'val'\]"):
    folder.examples("test")


def test_pipelines_read_every_image_with_its_label(tmp_path):
  values = _make_folder(str(tmp_path))
  config = _config(str(tmp_path))
  info = input_pipeline.dataset_info(config)
  assert info == input_pipeline.DatasetInfo(num_classes=3, num_train_examples=12,
                                            num_eval_examples=3)
  expected = collections.Counter()
  for path, value in values.items():
    label = ("cat", "dog", "zebra").index(path.split(os.sep)[-3 if "nested" in path else -2])
    if "/train/" in path:
      expected[(value, label)] += 1
  # Two processes, one epoch each (6 batches of 1): disjoint, together the whole split.
  seen = collections.Counter()
  for process_index in range(2):
    ds = input_pipeline.create_train_dataset(config, 16, process_index=process_index,
                                             process_count=2)
    for batch in ds.take(6).as_numpy_iterator():
      image = batch["image"][0]
      assert image.dtype == np.uint8 and image.shape == (16, 16, 3)
      # Flat images: grey PNGs became RGB; JPEG's flat blocks are exact to ±1.
      assert np.ptp(image) <= 1
      seen[(int(np.median(image)), int(batch["label"][0]))] += 1
  jpeg = lambda key: key[1] == 2
  assert {k: v for k, v in seen.items() if not jpeg(k)} == {
      k: v for k, v in expected.items() if not jpeg(k)}
  assert sorted(v for v, _ in filter(jpeg, seen.elements())) == pytest.approx(
      sorted(v for v, _ in filter(jpeg, expected.elements())), abs=1)
  ds, num_batches = input_pipeline.create_eval_dataset(config, 16, process_index=0,
                                                       process_count=1)
  batches = list(ds.as_numpy_iterator())
  assert num_batches == len(batches) == 2
  masks = np.concatenate([b["mask"] for b in batches])
  labels = np.concatenate([b["label"] for b in batches])[masks]
  assert masks.tolist() == [True, True, True, False] and sorted(labels) == [0, 0, 1]


def test_bad_files_are_named_or_skipped_and_counted(tmp_path):
  root = str(tmp_path)
  _make_folder(root)
  truncated = os.path.join(root, "train", "cat", "truncated.jpg")
  _write(truncated, 100, size=64)
  with open(truncated, "rb") as f:
    data = f.read()
  with open(truncated, "wb") as f:
    f.write(data[:len(data) // 2])
  notes = os.path.join(root, "val", "dog", "notes.txt")
  with open(notes, "w") as f:
    f.write("not an image")
  with pytest.raises(ValueError) as error:
    input_pipeline.validate(_config(root))
  message = str(error.value)
  assert f"config.dataset='folder:{root}'" in message and "2 of 17 files" in message
  assert truncated in message and notes in message
  assert "config.input.skip_bad_images=True" in message

  config = _config(root)
  config.input.skip_bad_images = True
  input_pipeline.validate(config)
  info = input_pipeline.dataset_info(config)
  assert (info.num_train_examples, info.num_eval_examples, info.num_skipped_images) == (12, 3, 2)
  # The kept files all decode: a full pass over both splits runs through.
  ds = input_pipeline.create_train_dataset(config, 16, process_index=0, process_count=1)
  assert len(list(ds.take(6).as_numpy_iterator())) == 6
  ds, _ = input_pipeline.create_eval_dataset(config, 16, process_index=0, process_count=1)
  assert sum(b["mask"].sum() for b in ds.as_numpy_iterator()) == 3


def test_bad_layouts_raise_clear_errors(tmp_path):
  with pytest.raises(ValueError, match="config.dataset='folder:/nonexistent'.*does not exist"):
    input_pipeline.validate(_config("/nonexistent"))
  flat = tmp_path / "flat"
  _write(str(flat / "cat" / "1.png"), 5)
  with pytest.raises(ValueError, match=r"split folder 'cat' has no class sub-folders"):
    input_pipeline.validate(_config(str(flat)))
  _make_folder(str(tmp_path / "ok"))
  with pytest.raises(ValueError, match=r"config.eval_split='validation'.*\['train', 'val'\]"):
    input_pipeline.validate(_config(str(tmp_path / "ok"), eval_split="validation"))
