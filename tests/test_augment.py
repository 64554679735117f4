"""AutoAugment/RandAugment ops against hand-computed results and PIL; Mixup/CutMix."""

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image, ImageEnhance, ImageOps

from efficientnet_jax.data import augment

SEED = tf.constant([3, 4], tf.int64)


def _image(height=24, width=32, seed=0):
  return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def _run(fn, *args):
  return fn(*[tf.constant(a) if isinstance(a, np.ndarray) else a for a in args]).numpy()


@pytest.mark.parametrize("name", augment.RANDAUGMENT_OPS)
def test_every_op_at_min_and_max_level_keeps_shape_and_dtype(name):
  image = _image()
  outputs = {}
  # 0 and 10 are the policies' range; 30 is the largest RandAugment magnitude we accept.
  for level in (0, 10, 30):
    out = augment.apply_op(tf.constant(image), name, level, SEED, **augment.RANDAUGMENT_CONSTS)
    assert out.dtype == tf.uint8 and out.shape == image.shape, (name, level)
    outputs[level] = out.numpy()
  # Ops whose strength is the level change the image differently at its two ends.
  if name not in ("AutoContrast", "Equalize", "Invert"):
    assert not np.array_equal(outputs[0], outputs[10]), name


def test_pixel_ops_hand_computed():
  image = np.array([[[0, 1, 127], [128, 200, 255]]], np.uint8)
  np.testing.assert_array_equal(_run(augment.invert, image), [[[255, 254, 128], [127, 55, 0]]])
  np.testing.assert_array_equal(_run(augment.solarize, image, 128),
                                [[[0, 1, 127], [127, 55, 0]]])
  np.testing.assert_array_equal(_run(augment.solarize, image, 256), image)  # level > 10
  np.testing.assert_array_equal(_run(augment.solarize_add, image, 110),
                                [[[110, 111, 237], [128, 200, 255]]])
  # 3 bits kept: values rounded down to multiples of 32.
  np.testing.assert_array_equal(_run(augment.posterize, image, 3),
                                [[[0, 0, 96], [128, 192, 224]]])
  np.testing.assert_array_equal(_run(augment.posterize, image, 0), np.zeros_like(image))
  np.testing.assert_array_equal(_run(augment.posterize, image, 11), image)
  # Brightness 0.5 halves (truncating); 1.9 extrapolates and clips at 255.
  np.testing.assert_array_equal(_run(augment.brightness, image, 0.5),
                                [[[0, 0, 63], [64, 100, 127]]])
  np.testing.assert_array_equal(_run(augment.brightness, image, 1.9),
                                [[[0, 1, 241], [243, 255, 255]]])


def test_level_to_argument_mapping():
  image = _image()
  op = lambda name, level: augment.apply_op(tf.constant(image), name, level, SEED,
                                            **augment.AUTOAUGMENT_CONSTS).numpy()
  np.testing.assert_array_equal(op("Posterize", 6), _run(augment.posterize, image, 2))
  np.testing.assert_array_equal(op("Solarize", 3), _run(augment.solarize, image, 76))
  np.testing.assert_array_equal(op("SolarizeAdd", 7), _run(augment.solarize_add, image, 77))
  np.testing.assert_array_equal(op("Color", 5), _run(augment.color, image, 1.0))  # unchanged
  assert np.array_equal(op("Color", 5), image)
  # TranslateY at level 1: 25 pixels (AutoAugment's 250 max), sign from the seed.
  out = op("TranslateY", 1)
  up, down = _run(augment.translate_y, image, 25.0), _run(augment.translate_y, image, -25.0)
  assert np.array_equal(out, up) or np.array_equal(out, down)
  # Both signs occur over seeds.
  signs = {np.array_equal(augment.apply_op(tf.constant(image), "ShearX", 10,
                                           tf.constant([0, i]), **augment.RANDAUGMENT_CONSTS),
                          _run(augment.shear_x, image, 0.3)) for i in range(12)}
  assert signs == {True, False}


def test_geometric_ops_hand_computed():
  image = _image(6, 8)
  out = _run(augment.translate_x, image, 3.0)  # content moves left by 3
  np.testing.assert_array_equal(out[:, :5], image[:, 3:])
  assert (out[:, 5:] == augment.FILL_VALUE).all()
  out = _run(augment.translate_y, image, -2.0)  # content moves down by 2
  np.testing.assert_array_equal(out[2:], image[:4])
  assert (out[:2] == augment.FILL_VALUE).all()
  # Shear: row y is shifted by shear * y.
  out = _run(augment.shear_x, image, 1.0)
  for y in range(6):
    np.testing.assert_array_equal(out[y, :8 - y], image[y, y:])
    assert (out[y, 8 - y:] == augment.FILL_VALUE).all()
  square = _image(7, 7)
  np.testing.assert_array_equal(_run(augment.rotate, square, 90.0), np.rot90(square, 1))
  np.testing.assert_array_equal(_run(augment.rotate, square, -90.0), np.rot90(square, -1))
  np.testing.assert_array_equal(_run(augment.rotate, square, 0.0), square)


def test_cutout_fills_a_square_of_the_given_size():
  image = np.zeros((100, 100, 3), np.uint8) + 7
  sizes = []
  for i in range(10):
    out = augment.cutout(tf.constant(image), 10, tf.constant([0, i])).numpy()
    filled = (out == augment.FILL_VALUE).all(-1)
    rows, cols = np.where(filled.any(1))[0], np.where(filled.any(0))[0]
    # A solid rectangle of at most 20 x 20, clipped at the border.
    assert filled.sum() == len(rows) * len(cols) and len(rows) <= 20 and len(cols) <= 20
    assert (out[~filled] == 7).all()
    sizes.append(filled.sum())
  assert max(sizes) == 400 and len(set(sizes)) > 1  # full squares and clipped ones
  np.testing.assert_array_equal(
      augment.cutout(tf.constant(image), 10, tf.constant([0, 3])),
      augment.cutout(tf.constant(image), 10, tf.constant([0, 3])))


def _pil(fn, image, *args):
  return np.asarray(fn(Image.fromarray(image), *args))


def test_histogram_ops_match_pil():
  for seed in range(3):
    # Skewed values, so equalisation and contrast stretching really move them.
    image = (_image(40, 50, seed).astype(np.float64) ** 2 / 400).astype(np.uint8) + 20
    np.testing.assert_array_equal(_run(augment.equalize, image), _pil(ImageOps.equalize, image))
    np.testing.assert_array_equal(_run(augment.autocontrast, image),
                                  _pil(ImageOps.autocontrast, image))
  flat = np.full((4, 4, 3), 9, np.uint8)
  np.testing.assert_array_equal(_run(augment.autocontrast, flat), flat)
  np.testing.assert_array_equal(_run(augment.equalize, flat), flat)


@pytest.mark.parametrize("op,enhancer", [(augment.color, ImageEnhance.Color),
                                         (augment.contrast, ImageEnhance.Contrast),
                                         (augment.brightness, ImageEnhance.Brightness),
                                         (augment.sharpness, ImageEnhance.Sharpness)])
def test_enhance_ops_match_pil(op, enhancer):
  image = _image(30, 40)
  for factor in (0.1, 0.6, 1.9):
    ours = _run(op, image, factor).astype(int)
    theirs = np.asarray(enhancer(Image.fromarray(image)).enhance(factor)).astype(int)
    # PIL rounds where the reference truncates, and its grey weights are integers.
    assert np.abs(ours - theirs).max() <= 2, (op.__name__, factor)
  np.testing.assert_array_equal(_run(op, image, 1.0), image)


def test_policy_table_and_determinism():
  assert len(augment.AUTOAUGMENT_V0) == 25
  assert all(len(sub) == 2 for sub in augment.AUTOAUGMENT_V0)
  assert {name for sub in augment.AUTOAUGMENT_V0 for name, _, _ in sub} <= set(
      augment.RANDAUGMENT_OPS)
  image = tf.constant(_image(32, 32))
  # Eager: a switch runs only the chosen branch, so nothing is traced (fast).
  auto = lambda seed: augment.autoaugment(image, seed)
  rand = lambda seed: augment.randaugment(image, seed, 2, 15)
  for fn in (auto, rand):
    outs = [fn(tf.constant([1, i], tf.int64)).numpy() for i in range(8)]
    np.testing.assert_array_equal(fn(tf.constant([1, 0], tf.int64)), outs[0])
    assert len({o.tobytes() for o in outs}) >= 5  # different seeds, different images
    assert all(o.dtype == np.uint8 and o.shape == (32, 32, 3) for o in outs)
  np.testing.assert_array_equal(augment.randaugment(image, SEED, 0, 10), image)


def test_mixup_blends_with_the_reversed_batch():
  images = np.stack([_image(8, 8, s) for s in range(4)])
  out, weight = augment.mixup(tf.constant(images), SEED, 0.4)
  weight = weight.numpy()
  assert ((weight >= 0.5) & (weight <= 1)).all()
  expected = weight[:, None, None, None] * images + (1 - weight[:, None, None, None]) * images[::-1]
  assert np.abs(out.numpy().astype(float) - expected).max() <= 0.5 + 1e-4


def test_cutmix_pastes_a_box_and_weights_by_area():
  images = np.stack([np.full((16, 20, 3), 10 * (s + 1), np.uint8) for s in range(4)])
  out, weight = augment.cutmix(tf.constant(images), SEED, 1.0)
  out, weight = out.numpy(), weight.numpy()
  for i in range(4):
    from_partner = (out[i] == images[3 - i]).all(-1)
    np.testing.assert_allclose(weight[i], 1 - from_partner.mean(), atol=1e-6)
    assert ((out[i] == images[i]).all(-1) | from_partner).all()
  assert (weight < 1).any()


def test_mix_batch_adds_partner_labels_deterministically():
  batch = {"image": tf.constant(np.stack([_image(8, 8, s) for s in range(4)])),
           "label": tf.constant([0, 1, 2, 3], tf.int32)}
  assert augment.mix_batch(batch, SEED, 0.0, 0.0) is batch
  out = augment.mix_batch(batch, SEED, 0.2, 1.0)
  np.testing.assert_array_equal(out["label_mix"], [3, 2, 1, 0])
  assert out["mix_weight"].dtype == tf.float32 and out["image"].dtype == tf.uint8
  again = augment.mix_batch(batch, SEED, 0.2, 1.0)
  np.testing.assert_array_equal(out["image"], again["image"])
