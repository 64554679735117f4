"""The digits builder, the train/eval pipelines (sharding, exact eval, resume, augmentation),
ImageNet through efficientnet-prepare-imagenet, and validate()."""

import collections
import hashlib
import io
import os
import subprocess
import sys
import tarfile

import flax.linen
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds
from PIL import Image
from sklearn import datasets

from efficientnet_jax.config import defaults, validation
from efficientnet_jax.data import digits, input_pipeline
from efficientnet_jax.training import evaluator, sharding

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def digits_dir(tmp_path_factory):
  digits.register()  # tfds.builder("digits") below, as the pipeline would
  data_dir = str(tmp_path_factory.mktemp("tfds"))
  tfds.builder("digits", data_dir=data_dir).download_and_prepare()
  return data_dir


def _config(data_dir, **overrides):
  config = defaults.get_config()
  config.dataset = "digits"
  config.data_dir = data_dir
  config.train_split = "train"
  config.eval_split = "test"
  config.batch_size = 32
  config.input.crop_fraction = 1.0  # 32×32 images at resolution 32: no center-crop loss
  config.input.shuffle_buffer = 64
  for key, value in overrides.items():
    config[key] = value
  return config


def _examples(data_dir, split):
  ds = tfds.builder("digits", data_dir=data_dir).as_dataset(split=split)
  return [(ex["image"].numpy(), int(ex["label"])) for ex in ds]


def _key(image, label):
  return (label, hashlib.sha1(np.ascontiguousarray(image).tobytes()).hexdigest())


def test_digits_builds_offline_with_a_fixed_stratified_split(digits_dir, tmp_path):
  train, test = _examples(digits_dir, "train"), _examples(digits_dir, "test")
  assert (len(train), len(test)) == (1437, 360)
  images = np.stack([image for image, _ in train + test])
  labels = np.array([label for _, label in train + test])
  assert images.dtype == np.uint8 and images.shape == (1797, 32, 32, 3)
  assert set(labels) == set(range(10))
  # Stratified: each class keeps its 20% share of the test split (± rounding).
  test_counts = np.bincount([label for _, label in test], minlength=10)
  all_counts = np.bincount(labels, minlength=10)
  assert (np.abs(test_counts - 0.2 * all_counts) <= 1).all()
  # Each example is an sklearn digit: 4×4 blocks of round(v * 255 / 16), equal channels.
  digits = datasets.load_digits()
  expected = np.round(digits.images * 255 / 16).astype(np.uint8)
  expected = np.repeat(np.kron(expected, np.ones((4, 4), np.uint8))[..., None], 3, axis=-1)
  assert ({_key(image, label) for image, label in train + test}
          == {_key(image, label) for image, label in zip(expected, digits.target)})
  np.testing.assert_array_equal(images[..., 0], images[..., 2])
  # A second build gives the same examples in the same order.
  tfds.builder("digits", data_dir=str(tmp_path)).download_and_prepare()
  again = _examples(str(tmp_path), "test")
  assert [_key(*ex) for ex in again] == [_key(*ex) for ex in test]


def test_importing_the_pipeline_registers_and_hides_nothing():
  """The digits builders exist once `digits.register()` ran (twice is fine), and TF keeps
  every device it has until `tf_devices.hide_accelerators_from_tf()` is called."""
  code = """
import tensorflow as tf, tensorflow_datasets as tfds
from efficientnet_jax.data import digits, input_pipeline
names = lambda: set(tfds.list_builders(with_community_datasets=False))
print(sorted(set(digits.BUILDER_NAMES) & names()))
digits.register(); digits.register()
print(sorted(set(digits.BUILDER_NAMES) & names()))
print(tf.config.get_visible_devices() == tf.config.list_physical_devices())
"""
  done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True,
                        text=True, env={**os.environ, "PYTHONPATH": REPO})
  assert done.returncode == 0, done.stderr[-3000:]
  assert done.stdout.split("\n")[-4:] == ["[]", "['digits', 'digits_even']", "True", ""]


def test_dataset_info(digits_dir):
  info = input_pipeline.dataset_info(_config(digits_dir))
  assert info == input_pipeline.DatasetInfo(num_classes=10, num_train_examples=1437,
                                            num_eval_examples=360)


def test_train_batches_are_deterministic_per_seed(digits_dir):
  config = _config(digits_dir)
  first = lambda c: next(iter(input_pipeline.create_train_dataset(
      c, 24, process_index=0, process_count=2)))
  batch = first(config)
  assert batch["image"].dtype == np.uint8 and batch["image"].shape == (16, 24, 24, 3)
  assert batch["label"].dtype == np.int32 and batch["label"].shape == (16,)
  assert 0 <= batch["label"].numpy().min() and batch["label"].numpy().max() <= 9
  np.testing.assert_array_equal(first(config)["image"], batch["image"])
  # TF's global seed (Keras's set_random_seed sets it) leaves the stream as it was.
  tf.random.set_seed(1234)
  try:
    np.testing.assert_array_equal(first(config)["image"], batch["image"])
  finally:
    tf.random.set_seed(None)
  config.seed = 1
  assert not np.array_equal(first(config)["image"], batch["image"])


def _identity(config):
  """Train preprocessing that returns the 32x32 image as stored: the whole-image "crop"
  fails over to the center crop of fraction 1, resized 32 -> 32, not flipped."""
  config.input.crop_area_range = (1.0, 1.0)
  config.input.random_flip = False
  return config


def test_train_shards_of_two_processes_are_disjoint_and_complete(digits_dir):
  config = _identity(_config(digits_dir, batch_size=2, train_split="train[:301]"))
  seen = []
  for process_index, size in ((0, 151), (1, 150)):
    ds = input_pipeline.create_train_dataset(config, 32, process_index=process_index,
                                             process_count=2)
    # Two epochs: each is exactly the part's `size` examples, in a different order.
    batches = list(ds.take(2 * size).as_numpy_iterator())
    keys = [_key(b["image"][0], int(b["label"][0])) for b in batches]
    assert len(set(keys[:size])) == size and set(keys[size:]) == set(keys[:size])
    assert keys[size:] != keys[:size]
    seen.append(set(keys[:size]))
  assert not seen[0] & seen[1]
  assert seen[0] | seen[1] == {_key(*ex) for ex in _examples(digits_dir, "train[:301]")}


def test_resume_replays_the_uninterrupted_batches_bitwise(digits_dir):
  # 100 examples per process, 8 per batch: the first epoch ends within step 12.
  config = _config(digits_dir, batch_size=16, train_split="train[:200]")
  config.input.augment = "randaugment"
  config.input.randaug_magnitude = 15
  config.input.mixup_alpha, config.input.cutmix_alpha = 0.2, 1.0
  run = lambda start, n: list(input_pipeline.create_train_dataset(
      config, 24, process_index=1, process_count=2, start_step=start).take(
          n).as_numpy_iterator())
  uninterrupted = run(0, 15)
  resumed = run(11, 4)  # steps 11..14 straddle the end of the first epoch
  for a, b in zip(uninterrupted[11:], resumed):
    assert a.keys() == b.keys() == {"image", "label", "label_mix", "mix_weight"}
    for key in a:
      np.testing.assert_array_equal(a[key], b[key])
  assert not np.array_equal(uninterrupted[11]["image"], uninterrupted[12]["image"])
  # The augmentation and mixing really act: without them the same examples differ.
  config.input.augment = None
  config.input.mixup_alpha = config.input.cutmix_alpha = 0.0
  plain = run(11, 1)[0]
  assert plain.keys() == {"image", "label"}
  np.testing.assert_array_equal(plain["label"], resumed[0]["label"])
  assert not np.array_equal(plain["image"], resumed[0]["image"])


# 1001 examples over 4 processes: parts of 251, 250, 250, 250. With a local batch of 10
# the first part needs one batch more than the others, which must pad up to it.
@pytest.mark.parametrize("eval_batch_size,expected_batches", [(64, 16), (40, 26)])
def test_exact_eval_over_four_processes(digits_dir, eval_batch_size, expected_batches):
  config = _config(digits_dir, eval_split="train[:1001]", eval_batch_size=eval_batch_size)
  local_batch = eval_batch_size // 4
  keys, num_real = [], 0
  for process_index in range(4):
    ds, num_batches = input_pipeline.create_eval_dataset(
        config, 32, process_index=process_index, process_count=4)
    batches = list(ds.as_numpy_iterator())
    # ceil(251 / local_batch), on every process.
    assert num_batches == expected_batches and len(batches) == expected_batches
    for batch in batches:
      assert batch["image"].shape == (local_batch, 32, 32, 3) and batch["mask"].dtype == bool
      assert (batch["image"][~batch["mask"]] == 0).all()
      num_real += batch["mask"].sum()
      keys += [_key(image, int(label)) for image, label in
               zip(batch["image"][batch["mask"]], batch["label"][batch["mask"]])]
  assert num_real == 1001
  # At resolution 32 with crop_fraction 1 the eval transform is the identity, so the real
  # examples are exactly the split's 1001, each once.
  assert collections.Counter(keys) == collections.Counter(
      _key(*ex) for ex in _examples(digits_dir, "train[:1001]"))


def test_cached_eval_dataset_is_reused(digits_dir):
  config = _config(digits_dir, eval_batch_size=100)
  config.input.cache_eval = True
  stand_in = flax.linen.Dense(10)  # never run: only the eval data is under test
  evaluation = evaluator.Evaluator(stand_in, config, sharding.make_mesh(), 32)
  ds, num_batches = evaluation.dataset()
  first = list(ds.as_numpy_iterator())
  again, _ = evaluation.dataset()
  assert again is ds and num_batches == 4
  for a, b in zip(first, again.as_numpy_iterator()):
    np.testing.assert_array_equal(a["image"], b["image"])


def _jpeg(rng, height, width):
  buffer = io.BytesIO()
  Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)).save(buffer, "JPEG")
  return buffer.getvalue()


def _add(tar, name, data):
  info = tarfile.TarInfo(name)
  info.size = len(data)
  tar.addfile(info, io.BytesIO(data))


def test_imagenet_prepared_by_the_script_and_read_as_jpeg(tmp_path):
  """A miniature ILSVRC2012 in the real archive layout, prepared by
  efficientnet-prepare-imagenet (the tfds imagenet2012 builder), then read with the
  decode-the-crop path and the minival-style held-out slice of train."""
  data_dir, manual = tmp_path / "tfds", tmp_path / "tfds" / "downloads" / "manual"
  script = [os.path.join(os.path.dirname(sys.executable), "efficientnet-prepare-imagenet"),
            f"--data_dir={data_dir}"]
  rng = np.random.default_rng(0)
  os.makedirs(manual)
  # Train: one tar per synset (the first two classes of tfds's labels.txt), 5 JPEGs each.
  with tarfile.open(manual / "ILSVRC2012_img_train.tar", "w") as train:
    for synset in ("n01440764", "n01443537"):
      inner = io.BytesIO()
      with tarfile.open(fileobj=inner, mode="w") as images:
        for i in range(5):
          _add(images, f"{synset}_{i}.JPEG", _jpeg(rng, 60, 80))
      _add(train, f"{synset}.tar", inner.getvalue())
  # Validation: tfds labels ILSVRC2012_val_0000000{1,2,3} with its validation_labels.txt.
  with tarfile.open(manual / "ILSVRC2012_img_val.tar", "w") as val:
    for i in (1, 2, 3):
      _add(val, f"ILSVRC2012_val_{i:08d}.JPEG", _jpeg(rng, 50, 40))
  result = subprocess.run(script, capture_output=True, text=True)
  assert result.returncode == 0, result.stderr[-2000:]
  assert "train 10, validation 3" in result.stdout

  config = defaults.get_config()
  config.data_dir, config.batch_size, config.input.shuffle_buffer = str(data_dir), 4, 8
  config.train_split, config.eval_split = "train[:-3]", "train[-3:]"
  input_pipeline.validate(config)
  assert input_pipeline.dataset_info(config) == input_pipeline.DatasetInfo(
      num_classes=1000, num_train_examples=7, num_eval_examples=3)
  batch = next(input_pipeline.create_train_dataset(
      config, 24, process_index=0, process_count=1).as_numpy_iterator())
  assert batch["image"].shape == (4, 24, 24, 3) and batch["image"].dtype == np.uint8
  assert set(batch["label"]) <= {0, 1} and batch["image"].std() > 20
  config.eval_split = "validation"
  ds, num_batches = input_pipeline.create_eval_dataset(config, 24, process_index=0,
                                                       process_count=1)
  (batch,) = list(ds.as_numpy_iterator())
  names = tfds.builder("imagenet2012", data_dir=str(data_dir)).info.features["label"].names
  # The first three entries of tfds's validation_labels.txt (stored in tfds's order).
  assert sorted(names[i] for i in batch["label"][:3]) == ["n01751748", "n02105855",
                                                           "n09193705"]
  assert batch["mask"].tolist() == [True, True, True, False]


def test_validate_accepts_digits_and_rejects_bad_batches(digits_dir):
  input_pipeline.validate(_config(digits_dir))
  with pytest.raises(ValueError, match="config.batch_size"):
    input_pipeline.validate(_config(digits_dir, batch_size=0))
  with pytest.raises(ValueError, match=r"config.batch_size=32 .* process count 3"):
    input_pipeline.create_train_dataset(_config(digits_dir), 32, process_index=0,
                                        process_count=3)
  with pytest.raises(ValueError, match="config.eval_batch_size=6 .* process count 4"):
    input_pipeline.create_eval_dataset(_config(digits_dir, eval_batch_size=6), 32,
                                       process_index=0, process_count=4)


def test_validate_unknown_dataset_suggests_close_names():
  config = defaults.get_config()
  config.dataset = "imagenet2021"
  with pytest.raises(ValueError, match=r"config.dataset='imagenet2021'.*'imagenet2012'"):
    input_pipeline.validate(config)


def test_validate_imagenet_without_data_dir(tmp_path, monkeypatch):
  # An empty default data dir, so a machine that has imagenet prepared still sees none.
  monkeypatch.setattr(tfds.core.constants, "DATA_DIR", str(tmp_path))
  config = defaults.get_config()
  assert config.dataset == "imagenet2012" and config.data_dir is None
  with pytest.raises(ValueError) as error:
    input_pipeline.validate(config)
  message = str(error.value)
  assert "config.data_dir is not set" in message
  assert "ILSVRC2012_img_train.tar" in message and "ILSVRC2012_img_val.tar" in message
  assert "<data_dir>/downloads/manual/" in message
  assert "efficientnet-prepare-imagenet --data_dir=<data_dir>" in message


def test_validate_bad_split(digits_dir):
  with pytest.raises(ValueError, match=r"config.eval_split='validation'.*\['train', 'test'\]"):
    input_pipeline.validate(_config(digits_dir, eval_split="validation"))
  with pytest.raises(ValueError, match="config.train_split='trian'"):
    input_pipeline.validate(_config(digits_dir, train_split="trian"))


@pytest.mark.parametrize("key,value", [("crop_fraction", 1.5), ("crop_padding", -1),
                                       ("augment", "randaug"), ("randaug_magnitude", 31),
                                       ("randaug_layers", -1), ("mixup_alpha", -0.1),
                                       ("shuffle_buffer", 0)])
def test_validate_bad_input_settings(key, value):
  config = defaults.get_config()
  config.input.augment = "randaugment"
  config.input[key] = value
  with pytest.raises(ValueError, match=f"config.input.{key}"):
    validation.check_values(config)
