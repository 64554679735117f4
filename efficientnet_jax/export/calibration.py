"""The representative dataset of int8 quantization: a tfds split or a folder of images.

`--calibration=digits:train` (any tfds `name:split`, slices too: "imagenet2012:train[:1%]")
or `--calibration=path/to/images` (image files found recursively). Each image is
center-cropped and resized as the weights' evaluation preprocessing says, then normalised
the same way (or left uint8 for an artifact with `include_preprocessing`), so the
converter measures the activation ranges the served model will see.

`check` reads metadata only (the tfds feature spec, the image file headers) so that a
mismatch is reported before any weights are read or anything converted.
"""

from __future__ import annotations

import dataclasses
import os
import numpy as np

from efficientnet_jax.weights import weights_directory

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".gif", ".bmp", ".webp")
RGB_MODES = ("RGB", "P", "YCbCr", "CMYK")  # PIL modes that decode to 3 channels here


@dataclasses.dataclass(frozen=True)
class Source:
  spec: str                   # as given
  folder: str | None = None   # an image folder, or
  name: str | None = None     # a tfds builder name and
  split: str | None = None    # split


def parse(spec: str) -> Source:
  """An existing directory is an image folder; otherwise `name:split` of tfds."""
  if not spec:
    raise ValueError("calibration: give a tfds 'name:split' (e.g. digits:train) or an "
                     "image folder")
  if os.path.isdir(spec):
    return Source(spec, folder=os.path.abspath(spec))
  name, sep, split = spec.rpartition(":")
  if not sep or not name or not split:
    raise ValueError(f"calibration={spec!r} is neither an existing image folder nor a tfds "
                     "'name:split' (e.g. digits:train, imagenet2012:train[:1%])")
  return Source(spec, name=name, split=split)


def image_files(folder: str) -> list[str]:
  files = sorted(os.path.join(d, f) for d, dirs, names in os.walk(folder)
                 for f in names if f.lower().endswith(IMAGE_EXTENSIONS)
                 and not f.startswith("."))
  if not files:
    raise ValueError(f"calibration folder {folder} holds no image files "
                     f"({', '.join(IMAGE_EXTENSIONS)})")
  return files


def _builder(source: Source, data_dir: str | None):
  import tensorflow_datasets as tfds
  from efficientnet_jax.data import digits
  base = source.name.split("/")[0]
  if base in digits.BUILDER_NAMES:
    digits.register()
  if base not in tfds.list_builders(with_community_datasets=False):
    raise ValueError(f"calibration={source.spec!r}: {source.name!r} is not a tfds dataset "
                     "(nor an existing image folder)")
  return tfds.builder(source.name, data_dir=data_dir)


def _image_key(builder) -> str:
  import tensorflow_datasets as tfds
  keys = builder.info.supervised_keys
  if keys and isinstance(keys[0], str) and isinstance(builder.info.features[keys[0]],
                                                      tfds.features.Image):
    return keys[0]
  images = [k for k, f in builder.info.features.items() if isinstance(f, tfds.features.Image)]
  if not images:
    raise ValueError(f"calibration dataset {builder.name!r} has no image feature")
  return images[0]


def check(source: Source, info: weights_directory.WeightsInfo, count: int,
          data_dir: str | None = None) -> None:
  """ValueError naming the problem if the images cannot be what these weights take:
  not 3 channels, a fixed size other than the weights' resolution, or (folders) smaller
  than the resolution."""
  resolution = info.resolution
  if source.folder is not None:
    from PIL import Image
    for path in image_files(source.folder)[:count]:
      try:
        with Image.open(path) as image:  # reads the header only
          mode, size = image.mode, image.size
      except OSError as e:
        raise ValueError(f"calibration image {path} cannot be read: {e}") from e
      if mode not in RGB_MODES:
        raise ValueError(f"calibration image {path} is {mode} (not 3-channel RGB); the "
                         f"weights take RGB images")
      if min(size) < resolution:
        raise ValueError(f"calibration image {path} is {size[0]}x{size[1]}, smaller than "
                         f"the weights' resolution {resolution}")
    return
  builder = _builder(source, data_dir)
  feature = builder.info.features[_image_key(builder)]
  height, width, channels = feature.shape
  if channels is not None and channels != 3:
    raise ValueError(f"calibration={source.spec!r}: images have {channels} channel(s), the "
                     f"weights take 3 (RGB)")
  if height is not None and width is not None and (height, width) != (resolution,) * 2:
    raise ValueError(f"calibration={source.spec!r}: images are {height}x{width}, the "
                     f"weights' resolution is {resolution}x{resolution} (export at "
                     f"--resolution={height} to serve that size)")


def load(source: Source, info: weights_directory.WeightsInfo, count: int,
         include_preprocessing: bool, data_dir: str | None = None) -> list[np.ndarray]:
  """Up to `count` inputs [1, R, R, 3] as the artifact takes them (uint8 with
  `include_preprocessing`, else normalised float32)."""
  images = _folder_images(source, info, count) if source.folder is not None else \
      _tfds_images(source, info, count, data_dir)
  if not len(images):
    raise ValueError(f"calibration={source.spec!r} yielded no images")
  if not include_preprocessing:
    images = ((images.astype(np.float32) - np.asarray(info.mean_rgb, np.float32))
              / np.asarray(info.stddev_rgb, np.float32))
  return [image[None] for image in images]


def _folder_images(source: Source, info: weights_directory.WeightsInfo,
                   count: int) -> np.ndarray:
  from efficientnet_jax import inference
  return inference.preprocess(image_files(source.folder)[:count], info)


def _tfds_images(source: Source, info: weights_directory.WeightsInfo, count: int,
                 data_dir: str | None) -> np.ndarray:
  from efficientnet_jax.data import preprocessing
  builder = _builder(source, data_dir)
  if not builder.is_prepared():
    if builder.MANUAL_DOWNLOAD_INSTRUCTIONS:
      raise ValueError(f"calibration={source.spec!r}: {builder.name} is not prepared in "
                       f"data_dir={data_dir!r} and needs a manual download")
    builder.download_and_prepare()
  key = _image_key(builder)
  try:
    dataset = builder.as_dataset(split=source.split, shuffle_files=False)
  except (ValueError, KeyError) as e:
    raise ValueError(f"calibration={source.spec!r}: {e}") from e
  dataset = dataset.take(count).map(lambda example: preprocessing.eval_image(
      preprocessing.to_rgb(example[key]), info.resolution, crop_padding=info.crop_padding,
      crop_fraction=info.crop_fraction))
  images = list(dataset.as_numpy_iterator())
  return np.stack(images) if images else np.zeros((0,), np.uint8)
