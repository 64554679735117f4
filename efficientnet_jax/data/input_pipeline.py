"""tfds / image-folder + tf.data input pipelines: per-process training stream, exact eval.

Everything here runs on the host CPU; batches leave as uint8 images and int32 labels, and
`preprocessing.normalize` runs on the device. Data sources (`config.dataset`):

* any tfds image classification dataset by name, e.g. "imagenet2012" (prepared once with
  efficientnet-prepare-imagenet), or the offline demo dataset "digits" (see `digits`:
  registered when a config names it, prepared into `config.data_dir` on first use;
  "digits_even", its even classes, for fine-tuning tests). Images are
  read as their stored encoded bytes (tfds `SkipDecoding`), so JPEGs decode only the crop;
* "folder:<root>", a folder of images `<root>/<split>/<class>/<image>` (see
  `image_folder`).

Split strings are tfds's for both, e.g. the ImageNet minival: train on
"train[:-25022]" and evaluate on "train[-25022:]" (`MINIVAL_TRAIN_SPLIT`, `MINIVAL_SPLIT`).

In a process that runs JAX on a GPU or TPU, call `tf_devices.hide_accelerators_from_tf()`
first (efficientnet_jax.main and the commands do), so that TF stays off the accelerators.

Determinism: the training stream is a pure function of (config, process), and each
example's crop/flip/augmentation seed is derived from its position in the stream, so a run
resumed at step k yields exactly the batches k, k+1, ... of an uninterrupted one.

Corrupt TFRecord shards (cut short when copied, bits flipped on disk): by default reading
stops at the bad record with TF's DataLossError, and `explain_data_loss` names the shard
file and the record (efficientnet_jax.main reports that). With
`config.input.skip_bad_records=True` the split's shards are checked once when the pipeline
is made (one sequential read of the split), each bad shard is logged with its file and
record, and its records from the bad one on are left out (TF's reader cannot find the next
record boundary after a bad one) and counted: `DatasetInfo.num_skipped_records`. The
stream is then a pure function of (config, process, the shards' contents), so a resumed run
still replays the uninterrupted batches.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import os
import re
from typing import Union

from absl import logging
import jax
import ml_collections
import tensorflow as tf
import tensorflow_datasets as tfds

from efficientnet_jax.data import augment
from efficientnet_jax.data import digits
from efficientnet_jax.data import image_folder
from efficientnet_jax.data import preprocessing

FOLDER_PREFIX = "folder:"
# The reference's ImageNet minival: 25,022 images held out of train for early stopping.
# tfds stores imagenet2012's train split in an order fixed by a hash of each file name, so
# its last 25,022 images are a fixed, class-mixed sample, the same on every machine, and a
# split slice reads only those records (no filtering pass over the whole train set).
MINIVAL_SIZE = 25_022
MINIVAL_TRAIN_SPLIT = f"train[:-{MINIVAL_SIZE}]"
MINIVAL_SPLIT = f"train[-{MINIVAL_SIZE}:]"


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
  num_classes: int
  num_train_examples: int
  num_eval_examples: int
  num_skipped_images: int = 0  # undecodable files left out of a folder dataset
  num_skipped_records: int = 0  # corrupt tfds records left out (skip_bad_records=True)


@dataclasses.dataclass(frozen=True)
class BadShard:
  """A TFRecord shard that cannot be read to its end."""
  path: str
  record: int  # index in the shard of the first unreadable record (0-based)
  num_records: int  # records the shard should hold (tfds's shard length)
  offset: int | None  # byte offset of that record, as TF's reader reports it
  problem: str  # TF's words: "truncated record at …" / "corrupted record at …"

  def describe(self) -> str:
    at = f" at byte {self.offset}" if self.offset is not None else ""
    return (f"{self.path}: record {self.record} of {self.num_records}{at} is unreadable "
            f"({self.problem})")


# ----------------------------------------------------------------------------------------
# Checks and dataset metadata.
# ----------------------------------------------------------------------------------------


def validate(config: ml_collections.ConfigDict) -> None:
  """Raises ValueError for a data config that cannot work, before anything is compiled.

  What needs the data itself: the batch split over processes, the dataset and its splits
  (the config's values alone are checked by `config.validation`). Auto-preparable datasets
  that are missing (e.g. "digits") are prepared here, because their split names are only
  known afterwards; a folder dataset is scanned (and its bad files reported) here.
  """
  process_count = jax.process_count()
  _local_batch_size(config.batch_size, "config.batch_size", process_count)
  _local_batch_size(*_eval_batch_size(config), process_count)
  source = _source(config)
  for key in ("train_split", "eval_split"):
    if source.num_examples(config[key], key) == 0:
      raise ValueError(f"config.{key}={config[key]!r} of config.dataset="
                       f"{config.dataset!r} has no examples")


def dataset_info(config: ml_collections.ConfigDict) -> DatasetInfo:
  """Class count and split sizes (prepares "digits", scans a folder, if needed)."""
  source = _source(config)
  return DatasetInfo(
      num_classes=source.num_classes,
      num_train_examples=source.num_examples(config.train_split, "train_split"),
      num_eval_examples=source.num_examples(config.eval_split, "eval_split"),
      num_skipped_images=source.num_skipped,
      # Each split once: an eval on the train split reads the same records.
      num_skipped_records=sum(source.num_skipped_records(split)
                              for split in {config.train_split, config.eval_split}))


def explain_data_loss(config: ml_collections.ConfigDict, error: Exception) -> str:
  """What a tf.errors.DataLossError met while reading config's splits means: the corrupt
  shard files and records (found by reading the splits' shards once), and the fixes."""
  source = _source(config)
  bad = []
  if isinstance(source, _TfdsSource):
    for key in ("train_split", "eval_split"):
      bad += [b for b in source.bad_shards(config[key]) if b not in bad]
  first_line = str(error).strip().split("\n")[0]
  if not bad:
    return (f"reading config.dataset={config.dataset!r} failed with a data loss error, but "
            f"no shard of its splits is corrupt now: {first_line}")
  return (f"config.dataset={config.dataset!r} has {len(bad)} corrupt TFRecord shard"
          f"{'s' if len(bad) > 1 else ''}:\n  " + "\n  ".join(b.describe() for b in bad)
          + "\nPrepare the dataset again (or copy the shard again), or train on the readable "
          "records with --config.input.skip_bad_records=True (the bad record and the rest "
          "of its shard are left out, counted).")


def _alpha(config: ml_collections.ConfigDict, key: str) -> float:
  """config.input.mixup_alpha / cutmix_alpha; absent or None means off."""
  return float(config.input.get(key, None) or 0.0)


def _eval_batch_size(config: ml_collections.ConfigDict) -> tuple[int, str]:
  """The global eval batch size and the config key it came from."""
  if config.eval_batch_size:
    return config.eval_batch_size, "config.eval_batch_size"
  return config.batch_size, "config.batch_size"


def _local_batch_size(global_batch_size: int, key: str, process_count: int) -> int:
  if global_batch_size < 1 or global_batch_size % process_count:
    raise ValueError(f"{key}={global_batch_size} must be a positive multiple of the "
                     f"process count {process_count}.")
  return global_batch_size // process_count


# ----------------------------------------------------------------------------------------
# Sources: a tfds builder or an image folder behind one small interface. `records` are
# cheap to read, shuffle and skip (tfds: serialized examples; folder: file paths); `load`
# turns one into (encoded image bytes, int32 label) after the shuffle.
# ----------------------------------------------------------------------------------------


class _TfdsSource:

  def __init__(self, config: ml_collections.ConfigDict):
    self.config = config
    self.builder = _prepared_builder(config)
    self.image_key, self.label_key = _feature_keys(self.builder, config)
    self.num_classes = self.builder.info.features[self.label_key].num_classes
    self.num_skipped = 0

  def num_examples(self, split, key: str = "split") -> int:
    try:
      return self.builder.info.splits[split].num_examples
    except (KeyError, ValueError, AssertionError) as e:
      raise ValueError(f"config.{key}={split!r} is not a split of "
                       f"config.dataset={self.config.dataset!r}: {e}") from e

  def part_sizes(self, split: str, process_count: int) -> list[int]:
    parts = [tfds.split_for_jax_process(split, process_index=i, process_count=process_count)
             for i in range(process_count)]
    return [self.num_examples(part) - self.num_skipped_records(part) for part in parts]

  def bad_shards(self, split) -> list[BadShard]:
    """The corrupt shards among those `split` reads (each read once per process)."""
    files = self.builder.info.splits[split].file_instructions
    bad = [_check_shard(f.filename, f.examples_in_shard) for f in files]
    return [b for b in bad if b is not None]

  def num_skipped_records(self, split) -> int:
    """Records of `split` left out as unreadable: 0 unless config.input.skip_bad_records."""
    if not self.config.input.get("skip_bad_records", False):
      return 0
    skipped = 0
    for f in self.builder.info.splits[split].file_instructions:
      bad = _check_shard(f.filename, f.examples_in_shard)
      if bad is not None:  # this part reads records [skip, skip + take) of the shard
        skipped += f.take - min(max(bad.record - f.skip, 0), f.take)
    return skipped

  def records(self, split: str, process_index: int, process_count: int) -> tf.data.Dataset:
    part = tfds.split_for_jax_process(split, process_index=process_index,
                                      process_count=process_count)
    # Stored order (tfds shuffled the examples when it prepared the split); the image stays
    # encoded so that JPEGs decode only their crop.
    skip_bad = bool(self.config.input.get("skip_bad_records", False))
    ds = self.builder.as_dataset(
        split=part, shuffle_files=False,
        decoders={self.image_key: tfds.decode.SkipDecoding()},
        # tfds's check that every record was read would fail, again at every retry of
        # `ignore_errors`, on a shard whose end is skipped.
        read_config=tfds.ReadConfig(options=_options(), assert_cardinality=not skip_bad))
    if not skip_bad:
      return ds  # a corrupt record stops the stream (see `explain_data_loss`)
    for bad in self.bad_shards(part):
      logging.warning("config.input.skip_bad_records: skipping %s and the %d records after "
                      "it", bad.describe(), bad.num_records - bad.record - 1)
    # Passes every readable record through in order: on clean data, the same stream.
    return ds.ignore_errors()

  def load(self, record: dict) -> tuple[tf.Tensor, tf.Tensor]:
    return record[self.image_key], tf.cast(record[self.label_key], tf.int32)


class _FolderSource:

  def __init__(self, config: ml_collections.ConfigDict):
    root = config.dataset[len(FOLDER_PREFIX):]
    try:
      self.folder = image_folder.load(root, bool(config.input.get("skip_bad_images", False)))
    except ValueError as e:
      raise ValueError(f"config.dataset={config.dataset!r}: {e}") from e
    self.num_classes = self.folder.num_classes
    self.num_skipped = len(self.folder.skipped)

  def num_skipped_records(self, split: str) -> int:
    del split  # image files, not records: bad ones are `num_skipped`
    return 0

  def _examples(self, split: str, key: str) -> tuple[list[str], list[int]]:
    try:
      return self.folder.examples(split)
    except ValueError as e:
      raise ValueError(f"config.{key}={split!r}: {e}") from e

  def num_examples(self, split: str, key: str = "split") -> int:
    return len(self._examples(split, key)[0])

  def part_sizes(self, split: str, process_count: int) -> list[int]:
    return [len(part) for part in _parts(self._examples(split, "split")[0], process_count)]

  def records(self, split: str, process_index: int, process_count: int) -> tf.data.Dataset:
    paths, labels = self._examples(split, "split")
    return image_folder.dataset(_parts(paths, process_count)[process_index],
                                _parts(labels, process_count)[process_index])

  def load(self, record: dict) -> tuple[tf.Tensor, tf.Tensor]:
    return image_folder.read(record)


_Source = Union[_TfdsSource, _FolderSource]


def _check_shard(path: str, num_records: int) -> BadShard | None:
  """None if the TFRecord file `path` reads to its end with every CRC right, else where and
  why it stops. Cached by (path, size, mtime): the pipeline asks several times."""
  stat = os.stat(path)
  return _check_shard_cached(path, num_records, stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=None)
def _check_shard_cached(path: str, num_records: int, size: int,
                        mtime_ns: int) -> BadShard | None:
  del size, mtime_ns  # cache keys: a rewritten file is checked again
  read, problem = 0, None
  # Batches of records; after a failing batch, its records one by one to find the index.
  batches = iter(tf.data.TFRecordDataset(path, buffer_size=1 << 20).batch(1024))
  try:
    for batch in batches:
      read += int(batch.shape[0])
  except tf.errors.DataLossError:
    try:
      for _ in tf.data.TFRecordDataset(path).skip(read):
        read += 1
    except tf.errors.DataLossError as e:
      # TF's words without the op name it prefixes in braces and the [Op:…] it appends.
      problem = re.sub(r"\{\{[^}]*\}\}\s*|\s*\[Op:.*$", "",
                       str(e).strip().split("\n")[0]).replace("' failed with ", ": ")
  if read == num_records and problem is None:
    return None
  problem = (problem or f"{num_records - read} records missing").strip("' ")
  match = re.search(r"record at (\d+)", problem)
  return BadShard(path=path, record=read, num_records=num_records,
                  offset=int(match.group(1)) if match else None, problem=problem)


def _parts(items: list, count: int) -> list[list]:
  """`count` contiguous parts, sizes differing by at most one (as tfds.even_splits)."""
  size, extra = divmod(len(items), count)
  bounds = [i * size + min(i, extra) for i in range(count + 1)]
  return [items[bounds[i]:bounds[i + 1]] for i in range(count)]


def _source(config: ml_collections.ConfigDict) -> _Source:
  if config.dataset.startswith(FOLDER_PREFIX):
    return _FolderSource(config)
  return _TfdsSource(config)


def _builder(config: ml_collections.ConfigDict) -> tfds.core.DatasetBuilder:
  """The tfds builder for config.dataset, or a ValueError that suggests close names."""
  # "name/config:version" are valid tfds names; only the base name is registered.
  name = config.dataset.split(":")[0].split("/")[0]
  if name in digits.BUILDER_NAMES:
    digits.register()
  known = tfds.list_builders(with_community_datasets=False)
  if name not in known:
    close = difflib.get_close_matches(name, known, n=3)
    hint = f" Did you mean {' or '.join(map(repr, close))}?" if close else ""
    raise ValueError(f"config.dataset={config.dataset!r} is not a tfds dataset (nor "
                     f"'{FOLDER_PREFIX}<path>' for a folder of images).{hint}")
  try:
    return tfds.builder(config.dataset, data_dir=config.data_dir)
  except ValueError as e:  # unknown builder config or version
    raise ValueError(f"config.dataset={config.dataset!r}: {e}") from e


def _prepared_builder(config: ml_collections.ConfigDict) -> tfds.core.DatasetBuilder:
  """The builder with its data on disk: prepared now unless it needs a manual download."""
  builder = _builder(config)
  _feature_keys(builder, config)
  if not builder.is_prepared():
    if builder.MANUAL_DOWNLOAD_INSTRUCTIONS:
      raise ValueError(_manual_download_message(builder, config))
    builder.download_and_prepare()
  return builder


def _manual_download_message(builder: tfds.core.DatasetBuilder,
                             config: ml_collections.ConfigDict) -> str:
  if config.data_dir is None:
    where = (f"config.data_dir is not set, and tfds's default data dir "
             f"({builder.data_dir_root}) does not hold it")
  else:
    where = f"it is not prepared in config.data_dir={config.data_dir!r}"
  if builder.name == "imagenet2012":
    steps = ("  1. put ILSVRC2012_img_train.tar and ILSVRC2012_img_val.tar (from\n"
             "     https://image-net.org/download-images) in <data_dir>/downloads/manual/;\n"
             "  2. run: efficientnet-prepare-imagenet --data_dir=<data_dir>\n")
  else:
    steps = ("  1. put the files the dataset needs in <data_dir>/downloads/manual/;\n"
             f"  2. run: tfds build {builder.name} --data_dir=<data_dir>\n")
  return (f"config.dataset={config.dataset!r} needs a manual download and {where}.\n"
          f"Prepare it once (imagenet2012: a few hours):\n{steps}"
          f"  3. train with --config.data_dir=<data_dir>.\n"
          f"tfds's instructions for {builder.name}:\n{builder.MANUAL_DOWNLOAD_INSTRUCTIONS}")


def _feature_keys(builder: tfds.core.DatasetBuilder,
                  config: ml_collections.ConfigDict) -> tuple[str, str]:
  """(image, label) feature names; the dataset must be supervised image classification."""
  keys = builder.info.supervised_keys
  features = builder.info.features
  if (not keys or len(keys) < 2 or not isinstance(keys[0], str)
      or not isinstance(features[keys[0]], tfds.features.Image)
      or not isinstance(features[keys[1]], tfds.features.ClassLabel)):
    raise ValueError(f"config.dataset={config.dataset!r} is not an image classification dataset "
                     f"(supervised keys {keys!r}: need an Image and a ClassLabel).")
  return keys[0], keys[1]


def _options() -> tf.data.Options:
  options = tf.data.Options()
  options.deterministic = True  # the order, and so each example's seed, is reproducible
  options.autotune.enabled = True
  # A private pool keeps tf.data off TF's shared inter-op pool; one thread per op, since
  # the parallelism comes from mapping many images at once.
  options.threading.private_threadpool_size = len(os.sched_getaffinity(0))
  options.threading.max_intra_op_parallelism = 1
  return options


# ----------------------------------------------------------------------------------------
# Pipelines.
# ----------------------------------------------------------------------------------------


def _augment(image: tf.Tensor, seed: tf.Tensor, config: ml_collections.ConfigDict) -> tf.Tensor:
  if config.input.augment == "autoaugment":
    return augment.autoaugment(image, seed)
  if config.input.augment == "randaugment":
    return augment.randaugment(image, seed, config.input.randaug_layers,
                               config.input.randaug_magnitude)
  return image


def _block_shuffle(records: tf.data.Dataset, block_size: int,
                   seed: tf.Tensor) -> tf.data.Dataset:
  """`records` with each run of `block_size` consecutive records randomly permuted.

  Stateless: the order depends on `seed` (shape [2]) alone. `Dataset.shuffle` would also
  mix in TF's global seed, so a `tf.random.set_seed` anywhere in the process (Keras's
  `set_random_seed` calls it) would change which examples a step trains on.
  """
  def permute(block_index, block):
    block_seed = tf.random.experimental.stateless_fold_in(seed, block_index)
    size = tf.shape(tf.nest.flatten(block)[0])[0]
    order = tf.argsort(tf.random.stateless_uniform([size], block_seed))
    return tf.nest.map_structure(lambda x: tf.gather(x, order), block)

  return records.batch(block_size).enumerate().map(permute).unbatch()


def create_train_dataset(config: ml_collections.ConfigDict, resolution: int, *,
                         process_index: int, process_count: int,
                         start_step: int = 0) -> tf.data.Dataset:
  """An infinite stream of this process's batches {'image': uint8 [B, R, R, 3], 'label': int32 [B]}.

  B = config.batch_size // process_count; each process reads a disjoint part of the split.
  With config.input.mixup_alpha or cutmix_alpha > 0 batches also hold 'label_mix' (int32)
  and 'mix_weight' (float32), see `augment.mix_batch`.

  The stream is a pure function of (config, process): epoch e is this process's part
  shuffled in blocks of config.input.shuffle_buffer records with a seed made from
  (config.seed, e), whatever TF's global seed; each example's crop/flip/augmentation
  seed comes from its position in the stream and each batch's mixing seed from its step.
  So `start_step=k` yields exactly batches k, k+1, ... of an uninterrupted run, reading
  (not decoding) at most one epoch to get there.
  """
  local_batch = _local_batch_size(config.batch_size, "config.batch_size", process_count)
  source = _source(config)
  examples_per_epoch = source.part_sizes(config.train_split, process_count)[process_index]
  if examples_per_epoch == 0:
    raise ValueError(f"config.train_split={config.train_split!r} has no examples for "
                     f"process {process_index} of {process_count}.")
  start = start_step * local_batch
  first_epoch, skip = divmod(start, examples_per_epoch)
  records = source.records(config.train_split, process_index, process_count)

  def epoch(e):
    return _block_shuffle(records, config.input.shuffle_buffer,
                          tf.stack([tf.cast(config.seed, tf.int64), e]))

  ds = tf.data.Dataset.range(first_epoch, tf.int64.max).flat_map(epoch).skip(skip)
  example_seed, batch_seed = tf.unstack(tf.random.experimental.stateless_split(
      tf.constant([config.seed, process_index], tf.int64), 2))

  # Plain TF ops without Python control flow on tensors: autograph would only add tracing
  # time (seconds, for the augmentation graphs).
  @tf.autograph.experimental.do_not_convert
  def preprocess(position, record):
    image, label = source.load(record)
    crop_seed, augment_seed = tf.unstack(tf.random.experimental.stateless_split(
        tf.random.experimental.stateless_fold_in(example_seed, position), 2))
    image = preprocessing.train_image(
        image, resolution, crop_seed, crop_padding=config.input.crop_padding,
        crop_fraction=config.input.crop_fraction, area_range=config.input.crop_area_range,
        flip=config.input.random_flip)
    return {"image": _augment(image, augment_seed, config), "label": label}

  ds = ds.enumerate(start=start).map(preprocess, num_parallel_calls=tf.data.AUTOTUNE)
  ds = ds.batch(local_batch, drop_remainder=True)
  mixup_alpha, cutmix_alpha = _alpha(config, "mixup_alpha"), _alpha(config, "cutmix_alpha")
  if mixup_alpha > 0 or cutmix_alpha > 0:
    mix = lambda step, batch: augment.mix_batch(
        batch, tf.random.experimental.stateless_fold_in(batch_seed, step), mixup_alpha,
        cutmix_alpha)
    ds = ds.enumerate(start=start_step).map(tf.autograph.experimental.do_not_convert(mix),
                                            num_parallel_calls=tf.data.AUTOTUNE)
  return ds.prefetch(tf.data.AUTOTUNE).with_options(_options())


def create_eval_dataset(config: ml_collections.ConfigDict, resolution: int, *,
                        process_index: int,
                        process_count: int) -> tuple[tf.data.Dataset, int]:
  """One pass over this process's part of the eval split, padded, and its batch count.

  Batches are {'image': uint8 [B, R, R, 3], 'label': int32 [B], 'mask': bool [B]} with
  B = (config.eval_batch_size or config.batch_size) // process_count; padding examples have
  mask False. Every process yields the same number of batches (enough for the largest part),
  so collectives line up and each real example is counted exactly once.

  With config.input.cache_eval the preprocessed images are kept in memory after the first
  pass over the returned dataset (resolution² · 3 bytes each: 7.5 GB for ImageNet's 50,000
  at 224): passes over the same dataset skip the decoding (`evaluator.Evaluator` keeps it).
  """
  local_batch = _local_batch_size(*_eval_batch_size(config), process_count)
  source = _source(config)
  sizes = source.part_sizes(config.eval_split, process_count)
  num_batches = -(-max(sizes) // local_batch)

  @tf.autograph.experimental.do_not_convert
  def preprocess(record):
    image, label = source.load(record)
    image = preprocessing.eval_image(image, resolution, crop_padding=config.input.crop_padding,
                                     crop_fraction=config.input.crop_fraction)
    return {"image": image, "label": label, "mask": tf.constant(True)}

  ds = source.records(config.eval_split, process_index, process_count)
  ds = ds.map(preprocess, num_parallel_calls=tf.data.AUTOTUNE)
  if config.input.cache_eval:
    ds = ds.cache()
  padding = {"image": tf.zeros([resolution, resolution, 3], tf.uint8),
             "label": tf.constant(0, tf.int32), "mask": tf.constant(False)}
  num_padding = num_batches * local_batch - sizes[process_index]
  ds = ds.concatenate(tf.data.Dataset.from_tensors(padding).repeat(num_padding))
  ds = ds.batch(local_batch, drop_remainder=True)
  return ds.prefetch(tf.data.AUTOTUNE).with_options(_options()), num_batches
