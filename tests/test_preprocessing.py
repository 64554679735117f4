"""Crop windows, decoding, resize and normalisation against hand-computed values."""

import io

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from efficientnet_jax.data import preprocessing


def _pattern(height: int, width: int) -> np.ndarray:
  """Gradients plus a hard 0/255 step, so bicubic overshoots and misplaced crops show."""
  y, x = np.mgrid[:height, :width]
  image = np.stack([(y * 255) // (height - 1), (x * 255) // (width - 1), (x + y) % 256], -1)
  image[:, width // 2:, 2] = np.where((y[:, width // 2:] // 7) % 2, 255, 0)
  return image.astype(np.uint8)


def _reference_resize(crop: np.ndarray, resolution: int) -> tuple[np.ndarray, np.ndarray]:
  resized = tf.image.resize(crop, [resolution, resolution], method="bicubic").numpy()
  return resized, np.clip(np.round(resized), 0, 255).astype(np.uint8)


def _windows(shape, seeds, fn):
  """fn(shape, seed) for many seeds at once (tf.data traces once; eager would be slow)."""
  ds = tf.data.Dataset.from_tensor_slices(np.asarray(seeds, np.int64))
  ds = ds.map(lambda seed: fn(tf.constant(shape), seed)).batch(len(seeds))
  offset, size = next(iter(ds))
  return offset.numpy(), size.numpy()


def test_center_crop_window_padding_and_fraction():
  offset, size = preprocessing.center_crop_window(tf.constant([300, 400, 3]), 224)
  # int(224 / (224 + 32) * 300) = int(262.5) = 262, centred as ((h - 262) + 1) // 2.
  np.testing.assert_array_equal(size, [262, 262])
  np.testing.assert_array_equal(offset, [19, 69])
  offset, size = preprocessing.center_crop_window(tf.constant([300, 400, 3]), 224,
                                                  crop_fraction=0.5)
  np.testing.assert_array_equal(size, [150, 150])
  np.testing.assert_array_equal(offset, [75, 125])
  # Odd margins round the offset up, as the reference's ((h - side) + 1) // 2.
  offset, _ = preprocessing.center_crop_window(tf.constant([301, 403, 3]), 224,
                                               crop_fraction=0.5)
  np.testing.assert_array_equal(offset, [76, 127])


def test_eval_image_is_center_crop_then_bicubic():
  image = _pattern(300, 400)
  assert preprocessing.CROP_PADDING == 32  # the released checkpoints' eval crop
  out = preprocessing.eval_image(tf.constant(image), 224,
                                 crop_padding=preprocessing.CROP_PADDING)
  resized, expected = _reference_resize(image[19:19 + 262, 69:69 + 262], 224)
  assert resized.max() > 255.5 and resized.min() < -0.5  # the clip is really exercised
  assert out.dtype == tf.uint8 and out.shape == (224, 224, 3)
  np.testing.assert_array_equal(out.numpy(), expected)

  out = preprocessing.eval_image(tf.constant(image), 64, crop_fraction=0.5)
  np.testing.assert_array_equal(out.numpy(),
                                _reference_resize(image[75:225, 125:275], 64)[1])


def test_distorted_crop_windows_respect_bounds():
  height, width = 300, 400
  seeds = [[7, i] for i in range(400)]
  offset, size = _windows([height, width, 3], seeds, preprocessing.distorted_crop_window)
  assert (offset >= 0).all() and (size > 0).all()
  assert (offset[:, 0] + size[:, 0] <= height).all()
  assert (offset[:, 1] + size[:, 1] <= width).all()
  area = size[:, 0] * size[:, 1] / (height * width)
  # The whole-image box with min_object_covered=0.1 lifts area_range's 0.08 to 0.1.
  assert area.min() >= 0.1 and area.max() <= 1.0
  # Widths are rounded from height * aspect, so allow half a pixel.
  aspect = size[:, 1] / size[:, 0]
  slack = 0.5 / size[:, 0] + 1e-6
  assert (aspect >= 3 / 4 - slack).all() and (aspect <= 4 / 3 + slack).all()
  # The ranges are actually explored, not a fixed crop.
  assert area.min() < 0.2 and area.max() > 0.7
  assert aspect.min() < 0.85 and aspect.max() > 1.2
  # Stateless: the same seed gives the same window.
  offset2, size2 = _windows([height, width, 3], seeds[:20], preprocessing.distorted_crop_window)
  np.testing.assert_array_equal(offset2, offset[:20])
  np.testing.assert_array_equal(size2, size[:20])


def test_train_window_falls_back_to_center_crop_when_sampling_fails():
  # 10×200: any crop with aspect in [3/4, 4/3] covers < 1% of the image, so every attempt
  # fails and the sampler returns the whole image.
  seeds = [[0, i] for i in range(20)]
  _, sampled = _windows([10, 200, 3], seeds, preprocessing.distorted_crop_window)
  np.testing.assert_array_equal(sampled, np.tile([10, 200], (20, 1)))
  offset, size = _windows([10, 200, 3], seeds,
                          lambda shape, seed: preprocessing.train_crop_window(shape, 224, seed))
  # int(224 / 256 * 10) = 8, offsets ((10 - 8) + 1) // 2 = 1 and ((200 - 8) + 1) // 2 = 96.
  np.testing.assert_array_equal(size, np.tile([8, 8], (20, 1)))
  np.testing.assert_array_equal(offset, np.tile([1, 96], (20, 1)))


def test_train_window_fallback_with_whole_image_sample(monkeypatch):
  whole = lambda shape, seed, area_range: (tf.constant([0, 0]), tf.cast(shape[:2], tf.int32))
  monkeypatch.setattr(preprocessing, "distorted_crop_window", whole)
  offset, size = preprocessing.train_crop_window(tf.constant([300, 400, 3]), 224,
                                                 tf.constant([1, 2]), crop_fraction=0.5)
  np.testing.assert_array_equal(size, [150, 150])
  np.testing.assert_array_equal(offset, [75, 125])


def test_train_window_keeps_a_successful_sample():
  seeds = [[3, i] for i in range(50)]
  sampled = _windows([300, 400, 3], seeds, preprocessing.distorted_crop_window)
  kept = _windows([300, 400, 3], seeds,
                  lambda shape, seed: preprocessing.train_crop_window(shape, 224, seed))
  whole = (sampled[1] == [300, 400]).all(axis=1)
  np.testing.assert_array_equal(kept[0][~whole], sampled[0][~whole])
  np.testing.assert_array_equal(kept[1][~whole], sampled[1][~whole])
  assert (~whole).sum() > 40


def test_train_image_is_crop_resize_and_flip():
  image = _pattern(300, 400)
  flips = []
  for i in range(8):
    seed = tf.constant([5, i], tf.int64)
    out = preprocessing.train_image(tf.constant(image), 96, seed)
    assert out.dtype == tf.uint8 and out.shape == (96, 96, 3)
    np.testing.assert_array_equal(out, preprocessing.train_image(tf.constant(image), 96, seed))
    crop_seed = tf.random.experimental.stateless_split(seed, 2)[0]
    (y, x), (h, w) = (t.numpy() for t in preprocessing.train_crop_window(
        tf.constant(image.shape), 96, crop_seed))
    expected = _reference_resize(image[y:y + h, x:x + w], 96)[1]
    if np.array_equal(out, expected):
      flips.append(False)
    else:
      np.testing.assert_array_equal(out, expected[:, ::-1])
      flips.append(True)
  assert any(flips) and not all(flips)
  assert preprocessing.train_image(tf.constant(image), 32).shape == (32, 32, 3)  # seed=None


def _encode(image: np.ndarray, fmt: str, **kwargs) -> bytes:
  buffer = io.BytesIO()
  Image.fromarray(image).save(buffer, fmt, **kwargs)
  return buffer.getvalue()


def test_jpeg_decodes_only_the_crop_and_matches_decode_then_crop(monkeypatch):
  image = _pattern(300, 400)
  # 4:4:4 (no chroma subsampling): the partial decode is then bit-exact.
  data = _encode(image, "JPEG", quality=90, subsampling=0)
  full = tf.io.decode_jpeg(data, channels=3).numpy()
  windows = []
  real = tf.image.decode_and_crop_jpeg
  monkeypatch.setattr(tf.image, "decode_and_crop_jpeg",
                      lambda contents, window, **kw: windows.append(window.numpy()) or
                      real(contents, window, **kw))
  for offset, size in [((0, 0), (300, 400)), ((17, 33), (200, 151)), ((299, 1), (1, 9))]:
    crop = preprocessing.decode_crop(tf.constant(data),
                                     lambda shape: (tf.constant(offset), tf.constant(size)))
    np.testing.assert_array_equal(crop, full[offset[0]:offset[0] + size[0],
                                             offset[1]:offset[1] + size[1]])
  # The window came from the header's shape and went to the partial decoder.
  assert [list(w) for w in windows] == [[0, 0, 300, 400], [17, 33, 200, 151], [299, 1, 1, 9]]
  # Whole pipelines: bytes in gives the same as the decoded image in.
  seed = tf.constant([1, 2], tf.int64)
  np.testing.assert_array_equal(preprocessing.train_image(tf.constant(data), 64, seed),
                                preprocessing.train_image(tf.constant(full), 64, seed))
  np.testing.assert_array_equal(preprocessing.eval_image(tf.constant(data), 64),
                                preprocessing.eval_image(tf.constant(full), 64))
  # With 4:2:0 subsampling pixels of the crop's first and last columns may differ
  # (horizontal chroma upsampling lacks its neighbour there); all others are exact.
  data = _encode(image, "JPEG", quality=90, subsampling=2)
  full = tf.io.decode_jpeg(data, channels=3).numpy()
  crop = preprocessing.decode_crop(tf.constant(data),
                                   lambda shape: (tf.constant([17, 33]), tf.constant([200, 151])))
  np.testing.assert_array_equal(crop[:, 1:-1], full[17:217, 34:183])


def test_non_jpeg_bytes_fall_back_to_full_decode(monkeypatch):
  monkeypatch.setattr(tf.image, "decode_and_crop_jpeg", None)  # must not be reached
  grey = _pattern(40, 60)[..., 0]
  rgba = np.concatenate([_pattern(40, 60), np.full((40, 60, 1), 7, np.uint8)], -1)
  seed = tf.constant([5, 6], tf.int64)
  for image, rgb in [(grey, np.repeat(grey[..., None], 3, -1)), (rgba, rgba[..., :3])]:
    data = tf.constant(_encode(image, "PNG"))
    np.testing.assert_array_equal(preprocessing.decode_image(data), rgb)
    np.testing.assert_array_equal(preprocessing.train_image(data, 32, seed),
                                  preprocessing.train_image(tf.constant(rgb), 32, seed))
    np.testing.assert_array_equal(preprocessing.eval_image(data, 32, crop_fraction=0.5),
                                  _reference_resize(rgb[10:30, 20:40], 32)[1])


def test_tiny_image_still_crops():
  out = preprocessing.eval_image(tf.constant(np.full((1, 3, 3), 9, np.uint8)), 8)
  np.testing.assert_array_equal(out, np.full((8, 8, 3), 9, np.uint8))


def test_to_rgb():
  grey = tf.constant(np.arange(6, dtype=np.uint8).reshape(2, 3, 1))
  np.testing.assert_array_equal(preprocessing.to_rgb(grey), np.repeat(grey.numpy(), 3, -1))
  rgba = tf.constant(np.arange(24, dtype=np.uint8).reshape(2, 3, 4))
  np.testing.assert_array_equal(preprocessing.to_rgb(rgba), rgba.numpy()[..., :3])
  with pytest.raises(ValueError, match="1, 3 or 4 channels"):
    preprocessing.to_rgb(tf.zeros([2, 3, 2], tf.uint8))


def test_normalize():
  images = np.array([[[[0, 128, 255]]]], np.uint8)
  out = preprocessing.normalize(images, (10.0, 128.0, 127.5), (2.0, 4.0, 0.5))
  assert out.dtype == np.float32
  np.testing.assert_allclose(np.asarray(out), [[[[-5.0, 0.0, 255.0]]]])
