"""Keras-applications weights → ours: logit parity with Keras itself, and strictness.

Parity: each Keras EfficientNetB{k}(weights=None) is seeded, given non-trivial BatchNorm
values (random gamma/beta, moving statistics of a real batch), SE/classifier biases and
input Normalization values, saved, converted without naming the variant (so inference
must tell b1 from b2: same stem width and block count, different head width) and run on
2 raw random images: Keras's logits (its own preprocessing layers included) against ours
on `normalize(images)`, within 1e-4 absolute, float32, eval mode.
Resolutions: b0–b3 at their native (even) size and at 225×257; b4–b7, to keep CI fast,
at 65×96 only (odd height, even width: both padding cases in one run). Depthwise: "auto"
for b0–b3 (shift-add on CPU), "xla" for b4–b7, so both paths are checked against Keras.
Every resolution matches exactly: Keras's correct_pad + 'valid' is TF 'same' for a model
with a static input size (test_correct_pad_is_same). At 225×257 every strided layer sees
an odd size, where 'same' and 'symmetric' coincide; the even sizes tell them apart.

EfficientNetV2 (Keras's EfficientNetV2B0 … L, weights=None, randomised the same way, the
variant and the family inferred): B0, B1, B2, B3, S and M at their native sizes (224,
240, 260, 300, 384, 480) and at an odd one (65×97 or 97×65: every strided layer sees an
odd size), and v2_l, to keep CI time modest, at the reduced 65×96 only (odd height, even
width). Layouts: weights.h5 for b0, b3, m, l; legacy .h5 for b1, s; .keras for b2 (and
all four for b0). Depthwise "auto" for B0–B3, "xla" for S/M/L. Keras's V2 inputs
(ImageNet mean/std for B0–B3, (x - 128) / 128 for S/M/L) are checked as recorded.
"""

import re
import shutil

import h5py
import jax
import keras
import numpy as np
import pytest

from efficientnet_jax.data import preprocessing
from efficientnet_jax.models import layers
from efficientnet_jax.weights import converters
from efficientnet_jax.weights import keras as convert_keras
from efficientnet_jax.weights import strict


RESOLUTIONS = {
    "b0": [(224, 224), (225, 257)], "b1": [(240, 240), (225, 257)],
    "b2": [(260, 260), (225, 257)], "b3": [(300, 300), (225, 257)],
    "b4": [(65, 96)], "b5": [(65, 96)], "b6": [(65, 96)], "b7": [(65, 96)],
}
ATOL = 1e-4
pytestmark = pytest.mark.filterwarnings(  # Keras's own numpy 2 deprecation, once per call
    "ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning")


def normalize(info, images):
  """Raw 0–255 images → our model's input, as the package normalises (Keras's layers)."""
  return preprocessing.normalize(images, info.mean_rgb, info.stddev_rgb)


def keras_model(variant, size):
  constructor = getattr(keras.applications, f"EfficientNet{variant.upper()}")
  return constructor(weights=None, classifier_activation=None, input_shape=(*size, 3))


def randomise(model, rng, images):
  """Non-default values wherever the converter could go wrong, with logits kept O(1).

  Random networks with BatchNorm are chaotic (a 1e-6 change upstream can move the logits
  by 1): residual branches start small and the BN moving statistics are those of a real
  batch (`images`), so float32 rounding differences stay far below the tolerance.
  """
  norm = next((l for l in model.layers if isinstance(l, keras.layers.Normalization)), None)
  if norm is not None and norm.weights:  # V1's adapted one; V2's holds constants
    norm.set_weights([rng.uniform(0.4, 0.5, 3), rng.uniform(0.04, 0.08, 3), np.array(0)])
    norm.finalize_state()  # Normalization snapshots its variables
  for l in model.layers:
    if isinstance(l, (keras.layers.Conv2D, keras.layers.Dense)) and l.use_bias:
      kernel, bias = l.get_weights()
      l.set_weights([kernel, rng.normal(0, 0.2, bias.shape)])
  bns = [l for l in model.layers if isinstance(l, keras.layers.BatchNormalization)]
  momentum = bns[0].momentum  # V1 0.99, V2 0.9
  for l in bns:
    c = l.gamma.shape
    gamma = rng.uniform(0.5, 1.5, c) * (0.1 if re.fullmatch(r"block\d[b-z]_project_bn", l.name)
                                        else 1.0)
    l.set_weights([gamma, rng.normal(0, 0.2, c), np.zeros(c), np.ones(c)])
    l.momentum = 0.0  # the training pass below sets moving statistics := batch statistics
  drops = [l for l in model.layers if isinstance(l, keras.layers.Dropout)]
  rates = [l.rate for l in drops]
  for l in drops:
    l.rate = 0.0  # stochastic depth would skew the statistics
  model(images, training=True)
  for l, rate in zip(drops, rates):
    l.rate = rate
  for l in bns:
    l.momentum = momentum


@pytest.fixture(scope="module")
def b0_files(tmp_path_factory):
  """A randomised Keras B0 at 224×224, saved in every layout the converter reads."""
  keras.utils.set_random_seed(0)
  rng = np.random.default_rng(0)
  model = keras_model("b0", (224, 224))
  randomise(model, rng, rng.uniform(0, 255, (4, 224, 224, 3)).astype(np.float32))
  d = tmp_path_factory.mktemp("b0")
  paths = {"weights.h5": d / "b0.weights.h5", "h5": d / "b0.h5", "keras": d / "b0.keras"}
  model.save_weights(paths["weights.h5"])
  model.save(paths["h5"])
  model.save(paths["keras"])
  paths["published"] = d / "published.h5"
  _published_layout(paths["h5"], paths["published"])
  return model, paths


def _published_layout(model_h5, out):
  """tf.keras 2's weights-only layout (the published files): root groups, ':0' names."""
  with h5py.File(model_h5, "r") as src, h5py.File(out, "w") as dst:
    weights = src["model_weights"]
    dst.attrs["layer_names"] = weights.attrs["layer_names"]
    for layer in weights:
      group = dst.create_group(layer)
      names = []
      for name in weights[layer].attrs["weight_names"]:
        name = name.decode() if isinstance(name, bytes) else name
        # tf.keras 2 named DepthwiseConv2D's variable `depthwise_kernel`, Keras 3 `kernel`.
        published = re.sub(r"(_dwconv2?)/kernel$", r"\1/depthwise_kernel", name) + ":0"
        group[published] = weights[layer][name][()]
        names.append(published)
      group.attrs["weight_names"] = names


@pytest.mark.parametrize("variant", list(RESOLUTIONS))
def test_logits_match_keras(variant, b0_files, tmp_path):
  k = int(variant[1])
  keras.utils.set_random_seed(k)
  rng = np.random.default_rng(k)
  sizes = RESOLUTIONS[variant]
  images = [rng.uniform(0, 255, (2, *size, 3)).astype(np.float32) for size in sizes]
  if variant == "b0":
    reference, paths = b0_files
    path = paths["weights.h5"]
  else:
    reference = keras_model(variant, sizes[0])
    batch = 4 if sizes[0][0] > 100 else 8  # enough positions for stable statistics
    randomise(reference, rng, rng.uniform(0, 255, (batch, *sizes[0], 3)).astype(np.float32))
    # Both layouts: Keras 3 weights files for even k, whole-model legacy .h5 for odd k.
    path = tmp_path / (f"{variant}.weights.h5" if k % 2 == 0 else f"{variant}.h5")
    (reference.save_weights if k % 2 == 0 else reference.save)(path)

  variables, info = convert_keras.convert(str(path))  # variant inferred
  assert info.variant == variant
  assert info.num_classes == 1000
  assert (info.padding, info.bn_epsilon, info.source["format"]) == ("same", 1e-3, "keras")
  ours = info.model(depthwise_impl="auto" if k < 4 else "xla")
  apply = jax.jit(lambda v, x: ours.apply(v, x, train=False))
  for i, (size, x) in enumerate(zip(sizes, images)):
    model = reference
    if i:
      model = keras_model(variant, size)
      model.load_weights(path)
    expected = model(x, training=False).numpy()
    got = np.asarray(apply(variables, normalize(info, x)))
    assert 0.1 < np.abs(expected).max() < 100  # the comparison is meaningful
    np.testing.assert_allclose(got, expected, rtol=0, atol=ATOL, err_msg=f"{size}")


def test_include_top_false_gives_features(tmp_path):
  keras.utils.set_random_seed(8)
  rng = np.random.default_rng(8)
  reference = keras.applications.EfficientNetB0(include_top=False, weights=None,
                                                pooling="avg", input_shape=(64, 96, 3))
  randomise(reference, rng, rng.uniform(0, 255, (8, 64, 96, 3)).astype(np.float32))
  reference.save_weights(tmp_path / "notop.weights.h5")
  variables, info = convert_keras.convert(tmp_path / "notop.weights.h5")
  assert (info.variant, info.num_classes) == ("b0", 0)
  x = rng.uniform(0, 255, (2, 64, 96, 3)).astype(np.float32)
  expected = reference(x, training=False).numpy()
  ours = info.model()
  got = jax.jit(lambda v, x: ours.apply(v, x))(variables, normalize(info, x))
  assert got.shape == (2, 1280) and np.abs(expected).max() > 0.1
  np.testing.assert_allclose(got, expected, rtol=0, atol=ATOL)


def test_every_layout_gives_the_same_variables(b0_files):
  model, paths = b0_files
  # Through the format table, as efficientnet-convert does: the same converter.
  results = {name: converters.convert(str(p), "keras") for name, p in paths.items()}
  first_variables, first = results["weights.h5"]
  norm = next(l for l in model.layers if isinstance(l, keras.layers.Normalization))
  mean, variance, _ = norm.get_weights()
  np.testing.assert_allclose(first.mean_rgb, 255 * mean, rtol=1e-6)
  np.testing.assert_allclose(first.stddev_rgb, 255 * np.sqrt(variance), rtol=1e-6)
  kernel = model.get_layer("block2a_dwconv").get_weights()[0]  # (3, 3, 96, 1)
  np.testing.assert_array_equal(
      first_variables["params"]["blocks_1"]["depthwise_conv"]["kernel"][:, :, 0, :],
      kernel[:, :, :, 0])
  stats = first_variables["batch_stats"]["head_bn"]
  np.testing.assert_array_equal(stats["var"], model.get_layer("top_bn").moving_variance)
  for name, (variables, info) in results.items():
    assert info.variant == "b0", name
    assert info.mean_rgb == first.mean_rgb and info.stddev_rgb == first.stddev_rgb
    jax.tree.map(np.testing.assert_array_equal, variables, first_variables)


def _mutated(src, dst, edit):
  shutil.copy(src, dst)
  with h5py.File(dst, "r+") as f:
    edit(f)
  return str(dst)


@pytest.mark.parametrize("edit, message", ids=["missing", "extra", "wrong_shape"], argvalues=[
    (lambda f: f.__delitem__("model_weights/block3b_se_reduce/block3b_se_reduce/bias"),
     "missing source tensor block3b_se_reduce/bias for variable "
     "params/blocks_4/se/reduce/conv/bias (10,)"),
    (lambda f: f.create_dataset("model_weights/extra/extra/kernel", data=np.zeros((3, 5))),
     "unused source tensor extra/kernel (3, 5)"),
    (lambda f: (f.__delitem__("model_weights/top_bn/top_bn/gamma"),
                f.create_dataset("model_weights/top_bn/top_bn/gamma", data=np.ones(1281))),
     "wrong shape: source tensor top_bn/gamma (1281,) for variable "
     "params/head_bn/scale (1280,)"),
])
def test_strict_errors_name_the_tensor(b0_files, tmp_path, edit, message):
  path = _mutated(b0_files[1]["h5"], tmp_path / "bad.h5", edit)
  with pytest.raises(ValueError) as error:
    convert_keras.convert(path)
  assert message in str(error.value)
  assert str(error.value).startswith("1 problem(s)")


def test_one_error_lists_every_problem(b0_files, tmp_path):
  def edit(f):
    del f["layers/conv2d_1/vars/1"]                        # block1a_se_reduce bias
    f["layers/dense/vars/2"] = np.zeros(7)                 # Dense has no third variable
    del f["layers/depthwise_conv2d_3/vars/0"]              # block3a_dwconv kernel
    f["layers/depthwise_conv2d_3/vars/0"] = np.zeros((5, 5, 144, 2))
  path = _mutated(b0_files[1]["weights.h5"], tmp_path / "bad.weights.h5", edit)
  with pytest.raises(ValueError) as error:
    convert_keras.convert(path)
  text = str(error.value)
  assert text.startswith("3 problem(s)")
  assert "missing source tensor block1a_se_reduce/bias" in text
  assert "unused source tensor layers/dense/vars/2 (7,)" in text
  assert ("wrong shape: source tensor block3a_dwconv/kernel (5, 5, 144, 2), transformed "
          "(5, 5, 2, 144), for variable params/blocks_3/depthwise_conv/kernel (5, 5, 1, 144)"
          ) in text


def test_wrong_variant_is_refused(b0_files):
  with pytest.raises(ValueError, match="missing source tensor block1b_dwconv/kernel"):
    convert_keras.convert(str(b0_files[1]["h5"]), variant="b1")


def test_published_variance_quirk():
  """Published files store the std as variance; Keras then divides by std, not sqrt(std)."""
  np.testing.assert_allclose(convert_keras.keras_stddev(np.array([0.229, 0.224, 0.225])),
                             [0.229 * 255, 0.224 * 255, 0.225 * 255], rtol=1e-6)
  np.testing.assert_allclose(convert_keras.keras_stddev(np.array([0.04, 0.09, 1.0])),
                             [0.2 * 255, 0.3 * 255, 255], rtol=1e-6)


@pytest.mark.parametrize("kernel", [3, 5])
def test_correct_pad_is_same(kernel):
  """Keras's stride-2 padding equals TF 'same' at every static size, not 'symmetric'."""
  from keras.src.applications import imagenet_utils
  for size in range(32, 80):
    pads = imagenet_utils.correct_pad(np.zeros((1, size, size, 8)), kernel)
    assert pads[0] == layers.explicit_padding(size, kernel, 2, "same")
    assert (pads[0] == layers.explicit_padding(size, kernel, 2, "symmetric")) == (size % 2 == 1)
  # Unknown size: Keras pads as if even, so odd sizes match neither of our rules.
  unknown = imagenet_utils.correct_pad(keras.KerasTensor((1, None, None, 8)), kernel)
  assert unknown[0] == (kernel // 2 - 1, kernel // 2)


def test_strict_assign_reports_every_kind_of_problem():
  expected = {"params/a": (2, 3), "params/b": (3,), "params/c": (1,)}
  source = {"x": np.ones((3, 2)), "y": np.ones((2, 3)), "z": np.ones(4), "n": np.ones(1),
            "skip": np.ones(9)}
  rules = {"x": strict.Rule("params/a", np.transpose), "y": strict.Rule("params/a"),
           "z": strict.Rule("params/zz"), "w": strict.Rule("params/b")}
  with pytest.raises(ValueError) as error:
    strict.assign(expected, source, rules, ignored={"skip": "not needed"})
  assert str(error.value).splitlines()[1:] == [
      "  variable params/a filled twice (again by y)",
      "  source tensor z (4,) maps to unknown variable params/zz",
      "  unused source tensor n (1,)",
      "  missing source tensor w for variable params/b (3,)",
      "  variable params/c (1,) has no source tensor",
  ]
  flat = strict.assign({"params/a": (2, 3)}, {"x": np.ones((3, 2), np.float64)},
                       {"x": strict.Rule("params/a", np.transpose)})
  assert flat["params/a"].shape == (2, 3) and flat["params/a"].dtype == np.float32


# --- EfficientNetV2 (keras.applications.EfficientNetV2B0 … L). ---------------------------

V2_RESOLUTIONS = {  # the first size is the one the reference is randomised at
    "v2_b0": [(224, 224), (65, 97)], "v2_b1": [(240, 240), (97, 65)],
    "v2_b2": [(260, 260), (65, 97)], "v2_b3": [(300, 300), (97, 65)],
    "v2_s": [(384, 384), (65, 97)], "v2_m": [(480, 480), (65, 97)], "v2_l": [(65, 96)],
}
V2_LAYOUTS = {"v2_b1": "h5", "v2_b2": "keras", "v2_b3": "weights.h5", "v2_s": "h5",
              "v2_m": "weights.h5", "v2_l": "weights.h5"}  # v2_b0: its fixture's weights.h5


def keras_v2_model(variant, size, **kwargs):
  constructor = getattr(keras.applications, f"EfficientNetV2{variant[3:].upper()}")
  return constructor(weights=None, classifier_activation=None, input_shape=(*size, 3),
                     **kwargs)


def randomised_v2(variant, size, seed):
  keras.utils.set_random_seed(seed)
  rng = np.random.default_rng(seed)
  model = keras_v2_model(variant, size)
  batch = 2 if size[0] > 200 else 8  # enough positions for stable statistics
  randomise(model, rng, rng.uniform(0, 255, (batch, *size, 3)).astype(np.float32))
  return model


@pytest.fixture(scope="module")
def v2_b0_files(tmp_path_factory):
  """A randomised Keras EfficientNetV2B0 at 224×224, saved in every layout read."""
  model = randomised_v2("v2_b0", (224, 224), 20)
  d = tmp_path_factory.mktemp("v2_b0")
  paths = {"weights.h5": d / "v2_b0.weights.h5", "h5": d / "v2_b0.h5",
           "keras": d / "v2_b0.keras", "published": d / "published.h5"}
  model.save_weights(paths["weights.h5"])
  model.save(paths["h5"])
  model.save(paths["keras"])
  _published_layout(paths["h5"], paths["published"])
  return model, paths


@pytest.mark.parametrize("variant", list(V2_RESOLUTIONS))
def test_v2_logits_match_keras(variant, v2_b0_files, tmp_path):
  seed = 20 + list(V2_RESOLUTIONS).index(variant)
  sizes = V2_RESOLUTIONS[variant]
  rng = np.random.default_rng(100 + seed)
  images = [rng.uniform(0, 255, (2, *size, 3)).astype(np.float32) for size in sizes]
  if variant == "v2_b0":
    reference, paths = v2_b0_files
    path = paths["weights.h5"]
  else:
    reference = randomised_v2(variant, sizes[0], seed)
    layout = V2_LAYOUTS[variant]
    path = tmp_path / f"{variant}.{layout}"
    (reference.save_weights if layout == "weights.h5" else reference.save)(path)

  variables, info = convert_keras.convert(str(path))  # variant (and family) inferred
  assert (info.variant, info.family, info.num_classes) == (variant, "efficientnetv2", 1000)
  assert (info.padding, info.bn_epsilon, info.source["format"]) == ("same", 1e-3, "keras")
  # Keras's input layers: ImageNet mean/std for B0–B3, (x - 128) / 128 for S/M/L.
  big = variant in ("v2_s", "v2_m", "v2_l")
  expected_mean = (128.0,) * 3 if big else tuple(255 * m for m in (0.485, 0.456, 0.406))
  expected_std = (128.0,) * 3 if big else tuple(255 * s for s in (0.229, 0.224, 0.225))
  np.testing.assert_allclose(info.mean_rgb, expected_mean, rtol=1e-12)
  np.testing.assert_allclose(info.stddev_rgb, expected_std, rtol=1e-12)
  assert info.crop_fraction == (1.0 if big else None)  # automl's: no crop at >= 320 pixels
  ours = info.model(depthwise_impl="xla" if big else "auto")
  apply = jax.jit(lambda v, x: ours.apply(v, x, train=False))
  for i, (size, x) in enumerate(zip(sizes, images)):
    model = reference
    if i:
      model = keras_v2_model(variant, size)
      model.load_weights(path)
    expected = model(x, training=False).numpy()
    got = np.asarray(apply(variables, normalize(info, x)))
    assert 0.1 < np.abs(expected).max() < 100  # the comparison is meaningful
    print(f"{variant} {size}: max |logit diff| {np.abs(got - expected).max():.2e}")
    np.testing.assert_allclose(got, expected, rtol=0, atol=ATOL, err_msg=f"{size}")


def test_v2_every_layout_gives_the_same_variables(v2_b0_files):
  model, paths = v2_b0_files
  results = {name: converters.convert(str(p), "keras") for name, p in paths.items()}
  first_variables, first = results["weights.h5"]
  # A Fused-MBConv expansion (3×3, strided) and an MBConv depthwise kernel.
  np.testing.assert_array_equal(
      first_variables["params"]["blocks_1"]["expand_conv"]["conv"]["kernel"],
      model.get_layer("block2a_expand_conv").get_weights()[0])
  kernel = model.get_layer("block4a_dwconv2").get_weights()[0]  # (3, 3, 192, 1)
  np.testing.assert_array_equal(
      first_variables["params"]["blocks_5"]["depthwise_conv"]["kernel"][:, :, 0, :],
      kernel[:, :, :, 0])
  for name, (variables, info) in results.items():
    assert (info.variant, info.family) == ("v2_b0", "efficientnetv2"), name
    assert info.mean_rgb == first.mean_rgb and info.stddev_rgb == first.stddev_rgb
    jax.tree.map(np.testing.assert_array_equal, variables, first_variables)


@pytest.mark.parametrize("edit, message", ids=["missing", "extra", "wrong_shape"], argvalues=[
    (lambda f: f.__delitem__("model_weights/block2a_expand_conv/block2a_expand_conv/kernel"),
     "missing source tensor block2a_expand_conv/kernel for variable "
     "params/blocks_1/expand_conv/conv/kernel (3, 3, 16, 64)"),
    (lambda f: f.create_dataset("model_weights/block1a_dwconv2/block1a_dwconv2/kernel",
                                data=np.zeros((3, 3, 32, 1))),
     "unused source tensor block1a_dwconv2/kernel (3, 3, 32, 1)"),  # fused: no depthwise
    (lambda f: (f.__delitem__("model_weights/block4a_dwconv2/block4a_dwconv2/kernel"),
                f.create_dataset("model_weights/block4a_dwconv2/block4a_dwconv2/kernel",
                                 data=np.zeros((5, 5, 192, 1)))),
     "wrong shape: source tensor block4a_dwconv2/kernel (5, 5, 192, 1), transformed "
     "(5, 5, 1, 192), for variable params/blocks_5/depthwise_conv/kernel (3, 3, 1, 192)"),
])
def test_v2_strict_errors_name_the_tensor(v2_b0_files, tmp_path, edit, message):
  path = _mutated(v2_b0_files[1]["h5"], tmp_path / "bad.h5", edit)
  with pytest.raises(ValueError) as error:
    convert_keras.convert(path)
  assert message in str(error.value)
  assert str(error.value).startswith("1 problem(s)")


@pytest.mark.parametrize("layout", ["h5", "weights.h5"])
def test_wrong_family_is_refused(b0_files, v2_b0_files, layout):
  """A V1 file named as V2 (and the reverse): the error names both variants, both families."""
  with pytest.raises(ValueError) as error:
    convert_keras.convert(str(b0_files[1][layout]), variant="v2_s")
  assert str(error.value).startswith(
      "variant='v2_s' (efficientnetv2) does not fit this file: its stem width, head width and "
      "block count are those of 'b0' (efficientnet).\n")
  assert "problem(s) converting weights" in str(error.value)
  with pytest.raises(ValueError) as error:
    convert_keras.convert(str(v2_b0_files[1][layout]), variant="b0")
  assert str(error.value).startswith(
      "variant='b0' (efficientnet) does not fit this file: its stem width, head width and "
      "block count are those of 'v2_b0' (efficientnetv2).\n")
  with pytest.raises(ValueError, match="'lite0' is an efficientnet_lite variant; Keras files"):
    convert_keras.convert(str(v2_b0_files[1][layout]), variant="lite0")
