"""Image preprocessing of the tensorflow/tpu EfficientNet reference.

Host side (TF ops, run inside tf.data on the CPU): decode, crop, bicubic resize and flip one
image at a time; images leave the host as uint8. The crop *windows* are computed from the
image shape alone, so encoded JPEGs get their shape from the header
(`tf.image.extract_jpeg_shape`) and only the crop is decoded (`tf.image.decode_and_crop_jpeg`);
other formats, and already-decoded images, are decoded whole and then cropped.

Device side (jax.numpy): `normalize`, applied to the uint8 batch after it reached the device.
"""

from __future__ import annotations

from typing import Callable, Optional, Sequence

import jax.numpy as jnp
import tensorflow as tf

from efficientnet_jax.models import registry

# tensorflow/tpu `_decode_and_random_crop`.
MIN_OBJECT_COVERED = 0.1
ASPECT_RATIO_RANGE = (3 / 4, 4 / 3)
AREA_RANGE = (0.08, 1.0)
MAX_ATTEMPTS = 10
CROP_PADDING = registry.CROP_PADDING  # the eval crop: res/(res+32) of the short side

Window = tuple[tf.Tensor, tf.Tensor]  # (offset [y, x], size [h, w]), int32


# ----------------------------------------------------------------------------------------
# Host side: tf.data.
# ----------------------------------------------------------------------------------------


def to_rgb(image: tf.Tensor) -> tf.Tensor:
  """Grey [H, W, 1] → RGB by replication; RGBA → RGB by dropping alpha; RGB unchanged."""
  channels = image.shape[-1]
  if channels == 1:
    return tf.image.grayscale_to_rgb(image)
  if channels == 4:
    return image[..., :3]
  if channels == 3:
    return image
  raise ValueError(f"Expected an image with 1, 3 or 4 channels, got shape {image.shape}.")


def center_crop_window(shape: tf.Tensor, resolution: int, crop_padding: int = CROP_PADDING,
                       crop_fraction: Optional[float] = None) -> Window:
  """The eval crop of an image of `shape` [H, W, ...]: (offset [y, x], size [h, w]) int32.

  Square of side `resolution / (resolution + crop_padding) * min(H, W)`, or
  `crop_fraction * min(H, W)` when given, truncated to int, centred as the reference does.
  """
  shape = tf.cast(shape, tf.int32)
  height, width = shape[0], shape[1]
  fraction = (crop_fraction if crop_fraction is not None
              else resolution / (resolution + crop_padding))
  # float32 and truncation, as the reference computes it.
  side = tf.cast(fraction * tf.cast(tf.minimum(height, width), tf.float32), tf.int32)
  side = tf.maximum(side, 1)  # images under ~8 px would otherwise crop to nothing
  offset = tf.stack([(height - side + 1) // 2, (width - side + 1) // 2])
  return offset, tf.stack([side, side])


def distorted_crop_window(shape: tf.Tensor, seed: tf.Tensor,
                          area_range: Sequence[float] = AREA_RANGE
                          ) -> Window:
  """One Inception-style random crop of an image of `shape` [H, W, C]: (offset, size).

  A pure function of (shape, seed). The whole-image box with min_object_covered=0.1 makes the
  effective minimum area 10% of the image (not AREA_RANGE's 8%). When no crop is found in
  MAX_ATTEMPTS tries the sampler returns the whole image.
  """
  shape = tf.cast(shape, tf.int32)
  whole_image = tf.constant([0.0, 0.0, 1.0, 1.0], tf.float32, shape=[1, 1, 4])
  begin, size, _ = tf.image.stateless_sample_distorted_bounding_box(
      shape,
      bounding_boxes=whole_image,
      seed=seed,
      min_object_covered=MIN_OBJECT_COVERED,
      aspect_ratio_range=ASPECT_RATIO_RANGE,
      area_range=tuple(area_range),
      max_attempts=MAX_ATTEMPTS,
      use_image_if_no_bounding_boxes=True)
  return begin[:2], size[:2]


def train_crop_window(shape: tf.Tensor, resolution: int, seed: tf.Tensor,
                      crop_padding: int = CROP_PADDING,
                      crop_fraction: Optional[float] = None,
                      area_range: Sequence[float] = AREA_RANGE) -> Window:
  """`distorted_crop_window`, or the eval center crop when it returned the whole image.

  The reference (`_at_least_x_are_equal(original_shape, cropped_shape, 3)`) treats a crop
  equal to the image as a failed sample and falls back to the center crop.
  """
  offset, size = distorted_crop_window(shape, seed, area_range)
  center_offset, center_size = center_crop_window(shape, resolution, crop_padding,
                                                  crop_fraction)
  failed = tf.reduce_all(tf.equal(size, tf.cast(shape[:2], tf.int32)))
  return (tf.where(failed, center_offset, offset), tf.where(failed, center_size, size))


def resize(image: tf.Tensor, resolution: int) -> tf.Tensor:
  """Bicubic resize to [resolution, resolution], rounded and clipped back to uint8."""
  image = tf.image.resize(image, [resolution, resolution], method=tf.image.ResizeMethod.BICUBIC)
  # Bicubic overshoots near edges; clip before the cast or 256 would wrap to 0.
  return tf.cast(tf.clip_by_value(tf.round(image), 0, 255), tf.uint8)


def _slice(image: tf.Tensor, window: Window) -> tf.Tensor:
  offset, size = window
  return tf.slice(image, tf.concat([offset, [0]], 0), tf.concat([size, [-1]], 0))


def decode_image(contents: tf.Tensor) -> tf.Tensor:
  """Encoded JPEG/PNG/GIF/BMP/WebP bytes → uint8 [H, W, 3] (grey and alpha made RGB)."""
  image = tf.io.decode_image(contents, channels=3, expand_animations=False)
  image.set_shape([None, None, 3])
  return image


def decode_crop(contents: tf.Tensor, window_fn: Callable[[tf.Tensor], Window]) -> tf.Tensor:
  """The crop `window_fn(shape)` of an encoded image, uint8 [h, w, 3].

  A JPEG is never decoded whole: its shape comes from the header and libjpeg decodes only
  the rows and iMCU columns the crop touches (the reference's speed trick). Other formats
  are decoded, then cropped. The result equals decode-then-crop, except that with chroma
  subsampling (4:2:0, most JPEGs) the crop's first and last columns can differ (the
  chroma upsampling has no neighbour there), as in the reference.
  """
  def jpeg():
    offset, size = window_fn(tf.image.extract_jpeg_shape(contents))
    return tf.image.decode_and_crop_jpeg(contents, tf.concat([offset, size], 0), channels=3)

  def other():
    image = decode_image(contents)
    return _slice(image, window_fn(tf.shape(image)))

  crop = tf.cond(tf.io.is_jpeg(contents), jpeg, other)
  crop.set_shape([None, None, 3])
  return crop


def _crop(image: tf.Tensor, window_fn: Callable[[tf.Tensor], Window]) -> tf.Tensor:
  """Crop of a decoded uint8 [H, W, C] image, or of encoded bytes (scalar tf.string)."""
  if image.dtype == tf.string:
    return decode_crop(image, window_fn)
  image = to_rgb(image)
  return _slice(image, window_fn(tf.shape(image)))


def train_image(image: tf.Tensor, resolution: int, seed: Optional[tf.Tensor] = None, *,
                crop_padding: int = CROP_PADDING,
                crop_fraction: Optional[float] = None,
                area_range: Sequence[float] = AREA_RANGE,
                flip: bool = True) -> tf.Tensor:
  """Random crop, bicubic resize, random horizontal flip → uint8 [resolution, resolution, 3].

  `image` is a decoded uint8 [H, W, 1|3|4] image or its encoded bytes (a scalar tf.string;
  JPEGs then decode only the crop, see `decode_crop`). `seed` is a shape-[2] integer
  tensor: with it the result is a pure function of (image, seed) (`stateless_split(seed,
  2)` gives the crop seed, then the flip seed); None draws one from TF's global generator.
  `crop_padding`/`crop_fraction` choose the center crop used when sampling fails.
  `area_range` bounds the crop's share of the image; `flip=False` turns the flip off (for
  data that is not mirror-symmetric, like digits).
  """
  if seed is None:
    seed = tf.random.uniform([2], maxval=tf.int32.max, dtype=tf.int32)
  crop_seed, flip_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
  crop = _crop(image, lambda shape: train_crop_window(
      shape, resolution, crop_seed, crop_padding, crop_fraction, area_range))
  image = resize(crop, resolution)
  return tf.image.stateless_random_flip_left_right(image, flip_seed) if flip else image


def eval_image(image: tf.Tensor, resolution: int, crop_padding: int = CROP_PADDING,
               crop_fraction: Optional[float] = None) -> tf.Tensor:
  """Center crop (see `center_crop_window`) and bicubic resize → uint8 [res, res, 3].

  `image` is decoded or encoded, as for `train_image`.
  """
  crop = _crop(image, lambda shape: center_crop_window(shape, resolution, crop_padding,
                                                       crop_fraction))
  return resize(crop, resolution)


# ----------------------------------------------------------------------------------------
# Device side: jax.numpy, on the batch that crossed to the accelerator as uint8.
# ----------------------------------------------------------------------------------------


def normalize(images: jnp.ndarray, mean_rgb: Sequence[float],
              stddev_rgb: Sequence[float]) -> jnp.ndarray:
  """(images - mean) / stddev per channel, float32. Runs on device, inside the jitted step."""
  mean = jnp.asarray(mean_rgb, jnp.float32)
  stddev = jnp.asarray(stddev_rgb, jnp.float32)
  return (images.astype(jnp.float32) - mean) / stddev
