"""AutoAugment (policy v0), RandAugment, Mixup and CutMix, as the tensorflow/tpu reference.

Image ops take and return one uint8 [H, W, 3] image and run inside tf.data after the crop,
resize and flip. All randomness is stateless and comes from an explicit shape-[2] seed, so
an example's augmentation is a pure function of (image, seed) and a resumed run replays it.

Levels follow the reference: an op at level L in [0, 10] (`MAX_LEVEL`) gets the argument
(L / 10) · its maximum; rotations, shears and translations take a random sign. RandAugment's
magnitude M is such a level and may exceed 10 (EfficientNet-B7 uses 28); arguments then
grow past the policy's maxima and saturate where they must (Posterize keeps at most 8
bits). Pixels that a geometric op uncovers are filled with grey 128, as in the reference.

Mixup and CutMix act on a whole batch (`mix_batch`), after batching.
"""

from __future__ import annotations

import math
from typing import Callable, Sequence, Union

import tensorflow as tf

MAX_LEVEL = 10.0
# config.input.augment: none (None, or "none" as a command-line flag can say it), or one of
# the policies below.
AUGMENTATIONS = (None, "none", "autoaugment", "randaugment")
MAX_RANDAUG_MAGNITUDE = 30  # 3x the policies' top level; EfficientNet-B7 uses 28
FILL_VALUE = 128

Scalar = Union[float, tf.Tensor]  # op arguments: Python numbers, or tensors for random signs

# (op, probability, level) pairs of the 25 sub-policies of AutoAugment's ImageNet policy
# ("v0" in the reference; Cubuk et al. 2019, Table 9).
AUTOAUGMENT_V0 = (
    (("Equalize", 0.8, 1), ("ShearY", 0.8, 4)),
    (("Color", 0.4, 9), ("Equalize", 0.6, 3)),
    (("Color", 0.4, 1), ("Rotate", 0.6, 8)),
    (("Solarize", 0.8, 3), ("Equalize", 0.4, 7)),
    (("Solarize", 0.4, 2), ("Solarize", 0.6, 2)),
    (("Color", 0.2, 0), ("Equalize", 0.8, 8)),
    (("Equalize", 0.4, 8), ("SolarizeAdd", 0.8, 3)),
    (("ShearX", 0.2, 9), ("Rotate", 0.6, 8)),
    (("Color", 0.6, 1), ("Equalize", 1.0, 2)),
    (("Invert", 0.4, 9), ("Rotate", 0.6, 0)),
    (("Equalize", 1.0, 9), ("ShearY", 0.6, 3)),
    (("Color", 0.4, 7), ("Equalize", 0.6, 0)),
    (("Posterize", 0.4, 6), ("AutoContrast", 0.4, 7)),
    (("Solarize", 0.6, 8), ("Color", 0.6, 9)),
    (("Solarize", 0.2, 4), ("Rotate", 0.8, 9)),
    (("Rotate", 1.0, 7), ("TranslateY", 0.8, 9)),
    (("ShearX", 0.0, 0), ("Solarize", 0.8, 4)),
    (("ShearY", 0.8, 0), ("Color", 0.6, 4)),
    (("Color", 1.0, 0), ("Rotate", 0.6, 2)),
    (("Equalize", 0.8, 4), ("Equalize", 0.0, 8)),
    (("Equalize", 1.0, 4), ("AutoContrast", 0.6, 2)),
    (("ShearY", 0.4, 7), ("SolarizeAdd", 0.6, 7)),
    (("Posterize", 0.8, 2), ("Solarize", 0.6, 10)),
    (("Solarize", 0.6, 8), ("Equalize", 0.6, 1)),
    (("Color", 0.8, 6), ("Rotate", 0.4, 5)),
)

RANDAUGMENT_OPS = (
    "AutoContrast", "Equalize", "Invert", "Rotate", "Posterize", "Solarize", "Color",
    "Contrast", "Brightness", "Sharpness", "ShearX", "ShearY", "TranslateX", "TranslateY",
    "Cutout", "SolarizeAdd")

# The reference's per-method maxima (pixels) for translations and cutout's half-size.
AUTOAUGMENT_CONSTS = {"translate_const": 250.0, "cutout_const": 100.0}
RANDAUGMENT_CONSTS = {"translate_const": 100.0, "cutout_const": 40.0}


# ----------------------------------------------------------------------------------------
# The operations, on one uint8 [H, W, 3] image.
# ----------------------------------------------------------------------------------------


def _blend(degenerate: tf.Tensor, image: tf.Tensor, factor: Scalar) -> tf.Tensor:
  """degenerate + factor · (image - degenerate): 0 gives `degenerate`, 1 the image, > 1
  extrapolates; clipped and truncated to uint8 like the reference (and PIL)."""
  degenerate = tf.cast(degenerate, tf.float32)
  mixed = degenerate + factor * (tf.cast(image, tf.float32) - degenerate)
  return tf.cast(tf.clip_by_value(mixed, 0.0, 255.0), tf.uint8)


def _grey(image: tf.Tensor) -> tf.Tensor:
  return tf.image.rgb_to_grayscale(image)  # uint8 [H, W, 1], ITU-R 601 weights like PIL


def autocontrast(image: tf.Tensor) -> tf.Tensor:
  """Stretches each channel so its darkest pixel becomes 0 and its brightest 255."""
  pixels = tf.cast(image, tf.float32)
  low = tf.reduce_min(pixels, axis=[0, 1])
  high = tf.reduce_max(pixels, axis=[0, 1])
  # A flat channel (high == low) is left as it is.
  scale = tf.where(high > low, 255.0 / tf.maximum(high - low, 1.0), 1.0)
  offset = tf.where(high > low, low, 0.0)
  return tf.cast(tf.clip_by_value((pixels - offset) * scale, 0.0, 255.0), tf.uint8)


def equalize(image: tf.Tensor) -> tf.Tensor:
  """PIL's histogram equalisation, per channel (one histogram and one lookup for all three
  channels: value v of channel c is bin 256·c + v)."""
  pixels = tf.cast(image, tf.int32) + tf.range(3) * 256
  histogram = tf.reshape(tf.math.bincount(tf.reshape(pixels, [-1]), minlength=768,
                                          maxlength=768), [3, 256])
  # PIL leaves out the pixels of the brightest value present when it sizes the bins.
  brightest = 255 - tf.argmax(tf.reverse(tf.cast(histogram > 0, tf.int32), [1]), axis=1,
                              output_type=tf.int32)
  step = (tf.reduce_sum(histogram, 1) - tf.gather(histogram, brightest, batch_dims=1)) // 255
  safe_step = tf.maximum(step, 1)[:, None]
  # lut[v] = (step // 2 + number of pixels below v) // step; a channel with step 0 (one
  # value, or nearly) is left as it is.
  lut = tf.clip_by_value((tf.cumsum(histogram, 1, exclusive=True) + safe_step // 2)
                         // safe_step, 0, 255)
  lut = tf.where(step[:, None] > 0, lut, tf.range(256)[None])
  return tf.cast(tf.gather(tf.reshape(lut, [-1]), pixels), tf.uint8)


def invert(image: tf.Tensor) -> tf.Tensor:
  return 255 - image


def posterize(image: tf.Tensor, bits: int) -> tf.Tensor:
  """Keeps the `bits` high bits of each value (0 bits: black, >= 8: unchanged)."""
  bits = min(max(int(bits), 0), 8)
  mask = (0xFF << (8 - bits)) & 0xFF
  return tf.bitwise.bitwise_and(image, tf.constant(mask, tf.uint8))


def solarize(image: tf.Tensor, threshold: int) -> tf.Tensor:
  """Inverts the values >= threshold (a threshold above 255 changes nothing)."""
  if threshold > 255:
    return image
  if threshold <= 0:
    return 255 - image
  return tf.where(image < tf.constant(threshold, tf.uint8), image, 255 - image)


def solarize_add(image: tf.Tensor, addition: int, threshold: int = 128) -> tf.Tensor:
  """Adds `addition` (saturating at 0 and 255) to the values below the threshold."""
  # Saturating uint8 arithmetic: no widening of the image.
  amount = min(abs(int(addition)), 255)
  if addition >= 0:
    added = tf.minimum(image, tf.constant(255 - amount, tf.uint8)) + amount
  else:
    added = tf.maximum(image, tf.constant(amount, tf.uint8)) - amount
  return tf.where(tf.cast(image, tf.int32) < threshold, added, image)


def color(image: tf.Tensor, factor: Scalar) -> tf.Tensor:
  """Saturation: blends with the grey version (0: grey, 1: unchanged)."""
  return _blend(tf.image.grayscale_to_rgb(_grey(image)), image, factor)


def contrast(image: tf.Tensor, factor: Scalar) -> tf.Tensor:
  """Blends with a flat image of the mean grey level, as PIL's ImageEnhance.Contrast.

  The reference divides the grey *pixel count* by 256 instead of taking the mean (its
  degenerate image then depends on the image size, not its content); this is the PIL
  operation the AutoAugment policies were searched with.
  """
  mean = tf.round(tf.reduce_mean(tf.cast(_grey(image), tf.float32)))
  return _blend(tf.fill(tf.shape(image), mean), image, factor)


def brightness(image: tf.Tensor, factor: Scalar) -> tf.Tensor:
  """Blends with black."""
  return _blend(tf.zeros_like(image), image, factor)


def sharpness(image: tf.Tensor, factor: Scalar) -> tf.Tensor:
  """Blends with PIL's SMOOTH-filtered image (factor < 1 blurs, > 1 sharpens).

  SMOOTH is the 3x3 kernel [[1, 1, 1], [1, 5, 1], [1, 1, 1]] / 13, rounded; as in PIL the
  one-pixel border keeps its original values.
  """
  x = tf.cast(image, tf.int32)
  # Box sum of each 3x3 neighbourhood from shifted slices (faster than a depthwise conv
  # on CPU), plus 4x the centre; (s + 6) // 13 rounds s / 13 (13 is odd: no ties).
  rows = x[:-2] + x[1:-1] + x[2:]
  box = rows[:, :-2] + rows[:, 1:-1] + rows[:, 2:]
  smooth = tf.cast((box + 4 * x[1:-1, 1:-1] + 6) // 13, tf.uint8)
  interior = tf.pad(tf.ones_like(smooth, tf.bool), [[1, 1], [1, 1], [0, 0]])
  degenerate = tf.where(interior, tf.pad(smooth, [[1, 1], [1, 1], [0, 0]]), image)
  return _blend(degenerate, image, factor)


def _transform(image: tf.Tensor, transform: list[Scalar]) -> tf.Tensor:
  """Projective transform with nearest sampling; uncovered pixels become FILL_VALUE.

  `transform` = [a0, a1, a2, b0, b1, b2, c0, c1] maps each *output* pixel (x, y) to the
  input point ((a0 x + a1 y + a2) / k, (b0 x + b1 y + b2) / k), k = c0 x + c1 y + 1.
  """
  transform = tf.cast(tf.reshape(tf.stack(transform), [1, 8]), tf.float32)
  out = tf.raw_ops.ImageProjectiveTransformV3(
      images=image[None], transforms=transform, output_shape=tf.shape(image)[:2],
      fill_value=float(FILL_VALUE), interpolation="NEAREST", fill_mode="CONSTANT")[0]
  out.set_shape(image.shape)
  return out


def rotate(image: tf.Tensor, degrees: Scalar) -> tf.Tensor:
  """Rotation about the image centre, counter-clockwise on screen for degrees > 0."""
  radians = tf.cast(degrees, tf.float32) * (math.pi / 180.0)
  cos, sin = tf.cos(radians), tf.sin(radians)
  height = tf.cast(tf.shape(image)[0] - 1, tf.float32)
  width = tf.cast(tf.shape(image)[1] - 1, tf.float32)
  # input = R · (output - centre) + centre, centre = ((W - 1) / 2, (H - 1) / 2).
  x_offset = (width - cos * width + sin * height) / 2
  y_offset = (height - sin * width - cos * height) / 2
  return _transform(image, [cos, -sin, x_offset, sin, cos, y_offset, 0.0, 0.0])


def shear_x(image: tf.Tensor, shear: Scalar) -> tf.Tensor:
  """output(x, y) = input(x + shear · y, y)."""
  return _transform(image, [1.0, shear, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0])


def shear_y(image: tf.Tensor, shear: Scalar) -> tf.Tensor:
  """output(x, y) = input(x, y + shear · x)."""
  return _transform(image, [1.0, 0.0, 0.0, shear, 1.0, 0.0, 0.0, 0.0])


def translate_x(image: tf.Tensor, pixels: Scalar) -> tf.Tensor:
  """output(x, y) = input(x + pixels, y): the content moves left for pixels > 0."""
  return _transform(image, [1.0, 0.0, pixels, 0.0, 1.0, 0.0, 0.0, 0.0])


def translate_y(image: tf.Tensor, pixels: Scalar) -> tf.Tensor:
  """output(x, y) = input(x, y + pixels): the content moves up for pixels > 0."""
  return _transform(image, [1.0, 0.0, 0.0, 0.0, 1.0, pixels, 0.0, 0.0])


def cutout(image: tf.Tensor, half_size: int, seed: tf.Tensor) -> tf.Tensor:
  """Fills a (2·half_size)² square (clipped at the borders) with FILL_VALUE.

  Its centre is uniform over the image, drawn from `seed`.
  """
  height, width = tf.shape(image)[0], tf.shape(image)[1]
  y_seed, x_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
  cy = tf.random.stateless_uniform([], y_seed, maxval=height, dtype=tf.int32)
  cx = tf.random.stateless_uniform([], x_seed, maxval=width, dtype=tf.int32)
  rows, cols = tf.range(height), tf.range(width)
  # Rows [cy - half, cy + half) and the same columns, as in the reference.
  inside_rows = (rows >= cy - half_size) & (rows < cy + half_size)
  inside_cols = (cols >= cx - half_size) & (cols < cx + half_size)
  inside = inside_rows[:, None, None] & inside_cols[None, :, None]
  return tf.where(inside, tf.constant(FILL_VALUE, tf.uint8), image)


# ----------------------------------------------------------------------------------------
# Levels → arguments, policies.
# ----------------------------------------------------------------------------------------


def _random_sign(value: float, seed: tf.Tensor) -> tf.Tensor:
  return tf.where(tf.random.stateless_uniform([], seed) < 0.5, -value, value)


def _enhance_factor(level: float) -> float:
  return level / MAX_LEVEL * 1.8 + 0.1


def apply_op(image: tf.Tensor, name: str, level: float, seed: tf.Tensor, *,
             translate_const: float, cutout_const: float) -> tf.Tensor:
  """The reference's op `name` at `level` (a Python number), its randomness from `seed`."""
  scale = level / MAX_LEVEL
  ops: dict[str, Callable[[], tf.Tensor]] = {
      "AutoContrast": lambda: autocontrast(image),
      "Equalize": lambda: equalize(image),
      "Invert": lambda: invert(image),
      "Rotate": lambda: rotate(image, _random_sign(scale * 30.0, seed)),
      "Posterize": lambda: posterize(image, int(scale * 4)),
      "Solarize": lambda: solarize(image, int(scale * 256)),
      "SolarizeAdd": lambda: solarize_add(image, int(scale * 110)),
      "Color": lambda: color(image, _enhance_factor(level)),
      "Contrast": lambda: contrast(image, _enhance_factor(level)),
      "Brightness": lambda: brightness(image, _enhance_factor(level)),
      "Sharpness": lambda: sharpness(image, _enhance_factor(level)),
      "ShearX": lambda: shear_x(image, _random_sign(scale * 0.3, seed)),
      "ShearY": lambda: shear_y(image, _random_sign(scale * 0.3, seed)),
      "TranslateX": lambda: translate_x(image, _random_sign(scale * translate_const, seed)),
      "TranslateY": lambda: translate_y(image, _random_sign(scale * translate_const, seed)),
      "Cutout": lambda: cutout(image, int(scale * cutout_const), seed),
  }
  if name not in ops:
    raise ValueError(f"Unknown augmentation op {name!r}; known: {sorted(ops)}.")
  return ops[name]()


def autoaugment(image: tf.Tensor, seed: tf.Tensor,
                policy: Sequence[Sequence[tuple[str, float, float]]] = AUTOAUGMENT_V0
                ) -> tf.Tensor:
  """One sub-policy of `policy`, chosen uniformly; each of its ops applied with its
  probability."""
  slots = max(map(len, policy))
  seeds = tf.random.experimental.stateless_split(seed, 1 + 2 * slots)
  choice = tf.random.stateless_uniform([], seeds[0], maxval=len(policy), dtype=tf.int32)
  for slot in range(slots):
    apply_seed, op_seed = seeds[1 + 2 * slot], seeds[2 + 2 * slot]
    ops = [sub[slot] if slot < len(sub) else None for sub in policy]
    probability = tf.gather([op[1] if op else 0.0 for op in ops], choice)
    apply = tf.random.stateless_uniform([], apply_seed) < probability
    # One switch per slot over the sub-policies' ops, the last branch doing nothing: a
    # much smaller graph (and faster tracing) than a switch of sub-policies with a cond
    # per op.
    branches = [lambda x=image, op=op: apply_op(x, op[0], op[2], op_seed,
                                                  **AUTOAUGMENT_CONSTS) if op else x
                for op in ops]
    shape = image.shape
    image = tf.switch_case(tf.where(apply, choice, len(policy)),
                           branches + [lambda x=image: x])
    image.set_shape(shape)
  return image


def randaugment(image: tf.Tensor, seed: tf.Tensor, num_layers: int,
                magnitude: float) -> tf.Tensor:
  """`num_layers` ops drawn uniformly (with replacement) from RANDAUGMENT_OPS, all at
  `magnitude`.

  The reference also draws a probability per op but never uses it: every drawn op is
  applied, and so it is here.
  """
  seeds = tf.random.experimental.stateless_split(seed, 2 * max(num_layers, 1))
  for layer in range(num_layers):
    choice = tf.random.stateless_uniform([], seeds[2 * layer], maxval=len(RANDAUGMENT_OPS),
                                         dtype=tf.int32)
    branches = [lambda x=image, name=name, s=seeds[2 * layer + 1]: apply_op(
        x, name, float(magnitude), s, **RANDAUGMENT_CONSTS) for name in RANDAUGMENT_OPS]
    shape = image.shape
    image = tf.switch_case(choice, branches)
    image.set_shape(shape)
  return image


# ----------------------------------------------------------------------------------------
# Mixup and CutMix, on a batch.
# ----------------------------------------------------------------------------------------


def _beta(shape: Sequence, alpha: float, seed: tf.Tensor) -> tf.Tensor:
  """Beta(alpha, alpha) samples from two stateless Gamma draws."""
  seed_a, seed_b = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
  a = tf.random.stateless_gamma(shape, seed_a, alpha)
  b = tf.random.stateless_gamma(shape, seed_b, alpha)
  return a / (a + b)


def mixup(images: tf.Tensor, seed: tf.Tensor, alpha: float) -> tuple[tf.Tensor, tf.Tensor]:
  """Blends example i with example B-1-i (the reversed batch), weights ~ Beta(α, α).

  Returns (uint8 images, weight of each example's own label). As in the reference the
  weight is max(λ, 1 - λ), so an example's own label is the dominant one.
  """
  weight = _beta(tf.shape(images)[:1], alpha, seed)
  weight = tf.maximum(weight, 1.0 - weight)
  w = weight[:, None, None, None]
  mixed = w * tf.cast(images, tf.float32) + (1.0 - w) * tf.cast(images[::-1], tf.float32)
  return tf.cast(tf.clip_by_value(tf.round(mixed), 0.0, 255.0), tf.uint8), weight


def cutmix(images: tf.Tensor, seed: tf.Tensor, alpha: float) -> tuple[tf.Tensor, tf.Tensor]:
  """Pastes a box of example B-1-i into example i (Yun et al. 2019).

  λ ~ Beta(α, α); the box has sides sqrt(1 - λ)·(H, W) and a uniform centre, clipped at
  the border. Returns (images, weight of each example's own label = its uncovered share).
  """
  shape = tf.shape(images)
  batch, height, width = shape[0], shape[1], shape[2]
  beta_seed, y_seed, x_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 3))
  ratio = tf.sqrt(1.0 - _beta([batch], alpha, beta_seed))
  box_h = tf.cast(ratio * tf.cast(height, tf.float32), tf.int32)
  box_w = tf.cast(ratio * tf.cast(width, tf.float32), tf.int32)
  cy = tf.random.stateless_uniform([batch], y_seed, maxval=height, dtype=tf.int32)
  cx = tf.random.stateless_uniform([batch], x_seed, maxval=width, dtype=tf.int32)
  top, bottom = tf.maximum(cy - box_h // 2, 0), tf.minimum(cy + box_h // 2, height)
  left, right = tf.maximum(cx - box_w // 2, 0), tf.minimum(cx + box_w // 2, width)
  ys, xs = tf.range(height)[None, :], tf.range(width)[None, :]
  in_rows = (ys >= top[:, None]) & (ys < bottom[:, None])
  in_cols = (xs >= left[:, None]) & (xs < right[:, None])
  box = in_rows[:, :, None] & in_cols[:, None, :]
  mixed = tf.where(box[..., None], images[::-1], images)
  covered = tf.reduce_sum(tf.cast(box, tf.float32), axis=[1, 2])
  return mixed, 1.0 - covered / tf.cast(height * width, tf.float32)


def mix_batch(batch: dict, seed: tf.Tensor, mixup_alpha: float,
              cutmix_alpha: float) -> dict:
  """Mixup or CutMix (each half of the batches when both are on) of a batch.

  Adds 'label_mix' (the partner's label, int32) and 'mix_weight' (float32, the weight of
  'label'); the loss is weight · CE(label) + (1 - weight) · CE(label_mix).
  """
  if mixup_alpha <= 0 and cutmix_alpha <= 0:
    return batch
  choose_seed, mix_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
  images = batch["image"]
  if mixup_alpha > 0 and cutmix_alpha > 0:
    use_cutmix = tf.random.stateless_uniform([], choose_seed) < 0.5
    images, weight = tf.cond(use_cutmix, lambda: cutmix(images, mix_seed, cutmix_alpha),
                             lambda: mixup(images, mix_seed, mixup_alpha))
  elif mixup_alpha > 0:
    images, weight = mixup(images, mix_seed, mixup_alpha)
  else:
    images, weight = cutmix(images, mix_seed, cutmix_alpha)
  images.set_shape(batch["image"].shape)
  return {**batch, "image": images, "label_mix": batch["label"][::-1], "mix_weight": weight}
