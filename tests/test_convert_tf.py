"""tensorflow/tpu checkpoints → ours: EMA copies preferred, slots ignored, strict names.

The checkpoints are written by TensorFlow itself (`tf.compat.v1.train.Saver` over
`tf.Variable`s, the reference's saver), from a random B0 of ours: each variable goes to
the name the reference gives it (`reference_name` below spells TF's rule — layers numbered
per class in creation order inside each block's scope, so `conv2d` is the expansion and
`conv2d_1` the projection, or `conv2d` the projection when the block has no expansion),
depthwise kernels in TF's (k, k, C, 1) layout, plus an `/ExponentialMovingAverage` copy
that differs from the raw value, RMSProp slots and global_step. A few names and shapes of
the published efficientnet-b0 checkpoint are also checked verbatim (PUBLISHED_B0).

google/automl EfficientNetV2 (v2_b0 at 97×64, v2_s at 65×97, reduced sizes with odd and
even sides): a Keras EfficientNetV2 (the architecture automl's effnetv2_model.py builds)
is randomised; its weights, through the Keras converter to our paths, are written by the
same Saver under automl's names (`reference_name` with the network: Fused-MBConv blocks
have conv2d [, conv2d_1] and tpu_batch_normalization [, _1], no depthwise conv) as the
`/ExponentialMovingAverage` copies, other random values as the raw ones. The converted
model's logits on normalised images match Keras's own (its preprocessing layers
included) within 1e-4, and the raw weights' logits do not.
"""

import re

import flax.traverse_util as flax_traverse
import jax
import numpy as np
import pytest
import tensorflow as tf

from efficientnet_jax.data import preprocessing
from efficientnet_jax.models import convnet, registry
from efficientnet_jax.weights import converters
from efficientnet_jax.weights import tf_checkpoint
from efficientnet_jax.weights import weights_directory


NETWORK = registry.variant_network("b0")
# From the published efficientnet-b0 checkpoint's variable list.
PUBLISHED_B0 = {
    "efficientnet-b0/stem/conv2d/kernel": (3, 3, 3, 32),
    "efficientnet-b0/blocks_0/depthwise_conv2d/depthwise_kernel": (3, 3, 32, 1),
    "efficientnet-b0/blocks_0/tpu_batch_normalization_1/moving_variance": (16,),
    "efficientnet-b0/blocks_0/se/conv2d/kernel": (1, 1, 32, 8),
    "efficientnet-b0/blocks_0/conv2d/kernel": (1, 1, 32, 16),
    "efficientnet-b0/blocks_1/conv2d/kernel": (1, 1, 16, 96),
    "efficientnet-b0/blocks_1/tpu_batch_normalization_2/gamma": (24,),
    "efficientnet-b0/blocks_15/conv2d_1/kernel": (1, 1, 1152, 320),
    "efficientnet-b0/head/conv2d/kernel": (1, 1, 320, 1280),
    "efficientnet-b0/head/dense/kernel": (1280, 1000),
}
_BN = {"scale": "gamma", "bias": "beta", "mean": "moving_mean", "var": "moving_variance"}


def reference_name(path, scope="efficientnet-b0", network=NETWORK):
  """Our variable path (collection, module, ..., leaf) → the tensorflow/tpu (V1) or
  google/automl (V2) name."""
  path = path[1:]
  module, leaf = path[0], path[-1]
  numbered = lambda base, k: base if k == 0 else f"{base}_{k}"
  fixed = {"stem_conv": "stem/conv2d", "stem_bn": "stem/tpu_batch_normalization",
           "head_conv": "head/conv2d", "head_bn": "head/tpu_batch_normalization",
           "classifier": "head/dense"}
  if module in fixed:
    name = fixed[module]
  else:
    block = network.blocks[int(module.split("_")[1])]
    expands = block.has_expand_conv
    convs = ["expand_conv", "project_conv"] if expands else ["project_conv"]
    bns = ["expand_bn", "depthwise_bn", "project_bn"] if expands else ["depthwise_bn",
                                                                       "project_bn"]
    if block.kind == "fused_mbconv":  # automl's FusedMBConvBlock: no depthwise conv
      bns.remove("depthwise_bn")
    part = path[1]
    if part == "depthwise_conv":
      return f"{scope}/{module}/depthwise_conv2d/depthwise_kernel"
    if part == "se":
      name = f"{module}/se/" + numbered("conv2d", ["reduce", "expand"].index(path[2]))
    elif part in convs:
      name = f"{module}/" + numbered("conv2d", convs.index(part))
    else:
      name = f"{module}/" + numbered("tpu_batch_normalization", bns.index(part))
  is_bn = module.endswith("_bn") or (len(path) > 1 and path[1].endswith("_bn"))
  return f"{scope}/{name}/{_BN[leaf] if is_bn else leaf}"


def to_tf_layout(path, value):
  return np.swapaxes(value, 2, 3) if path[-2] == "depthwise_conv" else value


def random_variables(seed, network=NETWORK):
  """A B0's (or `network`'s) variables with non-trivial BN statistics and biases, as numpy."""
  model = convnet.ConvNet(network, depthwise_impl="xla")
  variables = jax.eval_shape(model.init, jax.random.key(0), np.zeros((1, 32, 32, 3)))
  rng = np.random.default_rng(seed)
  flat = {}
  for path, leaf in flax_traverse.flatten_dict(variables).items():
    if path[-1] in ("var", "scale"):
      value = rng.uniform(0.5, 1.5, leaf.shape)
    elif path[-1] in ("mean", "bias"):
      value = rng.normal(0, 0.2, leaf.shape)
    else:  # kernels, with the reference's scale: N(0, sqrt(2 / fan_out))
      value = rng.normal(0, np.sqrt(2.0 / np.prod(leaf.shape[:2]) / leaf.shape[-1]),
                         leaf.shape)
    flat[path] = value.astype(np.float32)
  return flat


def write_checkpoint(directory, tensors):
  """{name: array} → a TF1 name-based checkpoint, through TF's own Saver."""
  saver = tf.compat.v1.train.Saver(var_list={n: tf.Variable(v) for n, v in tensors.items()})
  return saver.save(None, str(directory / "model.ckpt"), global_step=None)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
  """(raw, ema) variables, flat by our path, and the checkpoint directory holding both."""
  raw, ema = random_variables(0), random_variables(1)
  tensors = {"global_step": np.int64(218_948)}
  for path in raw:
    name = reference_name(path)
    tensors[name] = to_tf_layout(path, raw[path])
    tensors[name + "/ExponentialMovingAverage"] = to_tf_layout(path, ema[path])
    if path[0] == "params":  # RMSProp's two slots per trainable variable
      tensors[name + "/RMSProp"] = np.ones_like(raw[path])
      tensors[name + "/RMSProp_1"] = np.zeros_like(raw[path])
  directory = tmp_path_factory.mktemp("tf")
  write_checkpoint(directory, tensors)
  return raw, ema, directory


def test_published_names_are_mapped():
  rules = tf_checkpoint.rules(NETWORK, 1000, "efficientnet-b0")
  model = convnet.ConvNet(NETWORK, depthwise_impl="xla")
  shapes = {k: v.shape for k, v in flax_traverse.flatten_dict(
      jax.eval_shape(model.init, jax.random.key(0), np.zeros((1, 32, 32, 3))), sep="/").items()}
  assert len(rules) == len(shapes)  # one rule per variable of B0
  for name, shape in PUBLISHED_B0.items():
    rule = rules[name]
    transformed = rule.transform(np.zeros(shape)).shape if rule.transform else shape
    assert transformed == shapes[rule.target], name


def test_ema_copies_are_converted_exactly(checkpoint):
  raw, ema, directory = checkpoint
  variables, info = tf_checkpoint.convert(directory)  # variant from the scope name
  assert (info.variant, info.num_classes, info.padding, info.bn_epsilon) == (
      "b0", 1000, "same", 1e-3)
  assert info.source["weights"] == "ema" and info.resolution == 224
  got = flax_traverse.flatten_dict(variables)
  assert got.keys() == ema.keys()
  for path, value in ema.items():
    np.testing.assert_array_equal(got[path], value, err_msg=str(path))

  model = info.model()
  apply = jax.jit(lambda v, x: model.apply(v, x))
  images = np.random.default_rng(2).normal(size=(2, 64, 64, 3)).astype(np.float32)
  expected = apply(flax_traverse.unflatten_dict(ema), images)
  np.testing.assert_array_equal(apply(variables, images), expected)
  raw_logits = apply(flax_traverse.unflatten_dict(raw), images)
  assert np.abs(np.asarray(raw_logits) - np.asarray(expected)).max() > 1e-2


def test_raw_weights_on_request(checkpoint):
  raw, _, directory = checkpoint
  # Through the format table, as efficientnet-convert --raw_weights --advprop does.
  variables, info = converters.convert(directory, "tf", use_ema=False, advprop=True,
                                       resolution=256, crop_fraction=0.9, padding=None)
  assert info.source["weights"] == "raw" and info.mean_rgb == (127.5, 127.5, 127.5)
  assert (info.resolution, info.crop_fraction, info.padding) == (256, 0.9, "same")
  got = flax_traverse.flatten_dict(variables)
  for path, value in raw.items():
    np.testing.assert_array_equal(got[path], value, err_msg=str(path))


def test_every_format_takes_the_shared_options():
  assert list(converters.FORMATS)[:3] == ["keras", "tf", "timm"]  # then newer formats
  for fmt in converters.FORMATS:
    assert {"variant", "padding", "bn_epsilon", "resolution", "crop_fraction"} <= set(
        converters.options(fmt)), fmt
  with pytest.raises(ValueError, match="the keras converter takes no advprop"):
    converters.convert("absent.h5", "keras", advprop=True)
  with pytest.raises(ValueError, match="unknown weights format 'onnx'"):
    converters.convert("absent", "onnx")


def test_strict_errors_and_variant_inference(tmp_path):
  """Scope without a variant name: inferred from shapes; every problem named at once."""
  raw = random_variables(3)
  tensors = {reference_name(p, scope="model"): to_tf_layout(p, v) for p, v in raw.items()}
  tensors.pop("model/blocks_4/se/conv2d/bias")
  tensors["model/head/extra/kernel"] = np.zeros((3, 5), np.float32)
  tensors["model/blocks_1/depthwise_conv2d/depthwise_kernel"] = np.zeros((3, 3, 1, 96),
                                                                          np.float32)
  write_checkpoint(tmp_path, tensors)
  with pytest.raises(ValueError) as error:
    tf_checkpoint.convert(tmp_path / "model.ckpt")
  text = str(error.value)
  assert text.startswith("3 problem(s)")
  assert ("missing source tensor model/blocks_4/se/conv2d/bias for variable "
          "params/blocks_4/se/reduce/conv/bias (10,)") in text
  assert "unused source tensor model/head/extra/kernel (3, 5)" in text
  assert ("wrong shape: source tensor model/blocks_1/depthwise_conv2d/depthwise_kernel "
          "(3, 3, 1, 96), transformed (3, 3, 96, 1), for variable "
          "params/blocks_1/depthwise_conv/kernel (3, 3, 1, 96)") in text
  with pytest.raises(ValueError, match="variant='b1' contradicts"):
    tf_checkpoint.convert(_named_b0(tmp_path), variant="b1")
  with pytest.raises(ValueError, match="cannot read a TF checkpoint"):
    tf_checkpoint.convert(tmp_path / "absent")


def _named_b0(tmp_path):
  d = tmp_path / "named"
  d.mkdir()
  write_checkpoint(d, {"efficientnet-b0/stem/conv2d/kernel": np.zeros((3, 3, 3, 32),
                                                                     np.float32)})
  return d


# --- google/automl EfficientNetV2 checkpoints. --------------------------------------------

# Names and shapes of efficientnetv2-s as automl's effnetv2_model.py builds it (blocks 0-1:
# Fused-MBConv e=1, 2-9: Fused-MBConv e=4, from 10: MBConv with SE), the layout of the
# released checkpoints.
AUTOML_V2_S = {
    "efficientnetv2-s/stem/conv2d/kernel": (3, 3, 3, 24),
    "efficientnetv2-s/stem/tpu_batch_normalization/moving_mean": (24,),
    "efficientnetv2-s/blocks_0/conv2d/kernel": (3, 3, 24, 24),
    "efficientnetv2-s/blocks_0/tpu_batch_normalization/gamma": (24,),
    "efficientnetv2-s/blocks_2/conv2d/kernel": (3, 3, 24, 96),
    "efficientnetv2-s/blocks_2/tpu_batch_normalization/beta": (96,),
    "efficientnetv2-s/blocks_2/conv2d_1/kernel": (1, 1, 96, 48),
    "efficientnetv2-s/blocks_2/tpu_batch_normalization_1/gamma": (48,),
    "efficientnetv2-s/blocks_10/conv2d/kernel": (1, 1, 64, 256),
    "efficientnetv2-s/blocks_10/depthwise_conv2d/depthwise_kernel": (3, 3, 256, 1),
    "efficientnetv2-s/blocks_10/tpu_batch_normalization_1/moving_variance": (256,),
    "efficientnetv2-s/blocks_10/se/conv2d/kernel": (1, 1, 256, 16),
    "efficientnetv2-s/blocks_10/se/conv2d_1/bias": (256,),
    "efficientnetv2-s/blocks_10/conv2d_1/kernel": (1, 1, 256, 128),
    "efficientnetv2-s/blocks_10/tpu_batch_normalization_2/gamma": (128,),
    "efficientnetv2-s/head/conv2d/kernel": (1, 1, 256, 1280),
    "efficientnetv2-s/head/dense/kernel": (1280, 1000),
}
AUTOML_SIZES = {"v2_b0": (97, 64), "v2_s": (65, 97)}  # reduced: odd and even sizes
keras_numpy2_warning = pytest.mark.filterwarnings(  # Keras's own, once per call
    "ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning")


def randomised_keras_v2(variant, size, seed):
  """Keras's EfficientNetV2 (automl's architecture) with seeded weights, non-trivial BN
  statistics (those of a real batch, so that logits stay O(1)) and biases."""
  import keras
  keras.utils.set_random_seed(seed)
  rng = np.random.default_rng(seed)
  model = getattr(keras.applications, f"EfficientNetV2{variant[3:].upper()}")(
      weights=None, classifier_activation=None, input_shape=(*size, 3))
  for layer in model.layers:
    if isinstance(layer, (keras.layers.Conv2D, keras.layers.Dense)) and layer.use_bias:
      kernel, bias = layer.get_weights()
      layer.set_weights([kernel, rng.normal(0, 0.2, bias.shape)])
  bns = [l for l in model.layers if isinstance(l, keras.layers.BatchNormalization)]
  for layer in bns:
    c = layer.gamma.shape
    small = re.fullmatch(r"block\d[b-z]_project_bn", layer.name)  # residual branches
    layer.set_weights([rng.uniform(0.5, 1.5, c) * (0.1 if small else 1.0),
                       rng.normal(0, 0.2, c), np.zeros(c), np.ones(c)])
    layer.momentum = 0.0  # the training pass sets moving statistics := batch statistics
  drops = [l for l in model.layers if isinstance(l, keras.layers.Dropout)]
  rates = [l.rate for l in drops]
  for layer in drops:
    layer.rate = 0.0
  model(rng.uniform(0, 255, (8, *size, 3)).astype(np.float32), training=True)
  for layer, rate in zip(drops, rates):
    layer.rate = rate
  return model


@pytest.fixture(scope="module", params=list(AUTOML_SIZES))
def automl_checkpoint(request, tmp_path_factory):
  """A randomised Keras V2 and an automl-named checkpoint whose EMA copies are its weights.

  Keras's weights reach our variable paths through the Keras converter (its own parity
  test checks it against Keras), then `reference_name` spells automl's names; the raw
  values are other random ones.
  """
  from efficientnet_jax.weights import keras as convert_keras
  variant = request.param
  network = registry.variant_network(variant)
  seed = 30 + list(AUTOML_SIZES).index(variant)
  model = randomised_keras_v2(variant, AUTOML_SIZES[variant], seed)
  directory = tmp_path_factory.mktemp(variant)
  model.save_weights(directory / "keras.weights.h5")
  ema = flax_traverse.flatten_dict(convert_keras.convert(directory / "keras.weights.h5")[0])
  raw = random_variables(seed, network)
  scope = f"efficientnetv2-{variant[3:]}"
  tensors = {"global_step": np.int64(1000)}
  for path in raw:
    name = reference_name(path, scope, network)
    tensors[name] = to_tf_layout(path, raw[path])
    tensors[name + "/ExponentialMovingAverage"] = to_tf_layout(path, ema[path])
    if path[0] == "params":
      tensors[name + "/RMSProp"] = np.ones_like(raw[path])
  write_checkpoint(directory, tensors)
  return variant, network, model, raw, ema, directory


def test_automl_v2_names_are_mapped():
  network = registry.variant_network("v2_s")
  rules = tf_checkpoint.rules(network, 1000, "efficientnetv2-s")
  shapes = converters.variable_shapes(network, 1000)
  assert len(rules) == len(shapes)  # one rule per variable of V2-S
  assert {rule.target for rule in rules.values()} == set(shapes)
  for name, shape in AUTOML_V2_S.items():
    rule = rules[name]
    transformed = rule.transform(np.zeros(shape)).shape if rule.transform else shape
    assert transformed == shapes[rule.target], name


@keras_numpy2_warning
def test_automl_v2_logits_match_keras(automl_checkpoint):
  variant, network, reference, raw, ema, directory = automl_checkpoint
  variables, info = tf_checkpoint.convert(directory)  # variant from the scope name
  assert (info.variant, info.family, info.num_classes, info.source["weights"]) == (
      variant, "efficientnetv2", 1000, "ema")
  if variant == "v2_s":  # automl: (x - 128) / 128, no eval crop at 384
    assert (info.mean_rgb, info.stddev_rgb, info.crop_fraction) == ((128.0,) * 3,
                                                                    (128.0,) * 3, 1.0)
  else:  # B0–B3: V1's preprocessing
    assert (info.mean_rgb, info.stddev_rgb, info.crop_fraction) == (
        weights_directory.IMAGENET_MEAN_RGB, weights_directory.IMAGENET_STDDEV_RGB, None)
  got = flax_traverse.flatten_dict(variables)
  assert got.keys() == ema.keys()
  for path, value in ema.items():
    np.testing.assert_array_equal(got[path], value, err_msg=str(path))

  x = np.random.default_rng(3).uniform(0, 255, (2, *AUTOML_SIZES[variant], 3))
  x = x.astype(np.float32)
  expected = reference(x, training=False).numpy()  # Keras, its preprocessing included
  model = info.model(depthwise_impl="xla")
  apply = jax.jit(lambda v, x: model.apply(v, x))
  normalized = preprocessing.normalize(x, info.mean_rgb, info.stddev_rgb)
  logits = np.asarray(apply(variables, normalized))
  print(f"{variant} {AUTOML_SIZES[variant]}: max |logit diff| "
        f"{np.abs(logits - expected).max():.2e}")
  assert 0.1 < np.abs(expected).max() < 100  # the comparison is meaningful
  np.testing.assert_allclose(logits, expected, rtol=0, atol=1e-4)
  raw_logits = apply(flax_traverse.unflatten_dict(raw), normalized)
  assert np.abs(np.asarray(raw_logits) - expected).max() > 1e-2


@keras_numpy2_warning
def test_automl_v2_raw_inference_and_strict_errors(automl_checkpoint, tmp_path):
  """No EMA, a scope without the variant: inferred from shapes; a missing tensor named."""
  variant, network, _, raw, _, directory = automl_checkpoint
  variables, info = tf_checkpoint.convert(directory, use_ema=False)
  assert info.source["weights"] == "raw"
  got = flax_traverse.flatten_dict(variables)
  for path, value in raw.items():
    np.testing.assert_array_equal(got[path], value, err_msg=str(path))
  with pytest.raises(ValueError, match="variant='b0' contradicts the checkpoint's scope"):
    tf_checkpoint.convert(directory, variant="b0")
  with pytest.raises(ValueError, match="advprop=True is for V1"):
    tf_checkpoint.convert(directory, advprop=True)

  tensors = {reference_name(p, "model", network): to_tf_layout(p, v) for p, v in raw.items()}
  write_checkpoint(tmp_path, tensors)
  assert tf_checkpoint.convert(tmp_path)[1].variant == variant  # inferred from the shapes
  missing = "model/blocks_2/conv2d_1/kernel"  # a Fused-MBConv projection
  expected_shape = tensors.pop(missing).shape
  bad = tmp_path / "bad"
  bad.mkdir()
  write_checkpoint(bad, tensors)
  with pytest.raises(ValueError) as error:
    tf_checkpoint.convert(bad)
  assert str(error.value).startswith("1 problem(s)")
  assert (f"missing source tensor {missing} for variable params/blocks_2/project_conv/conv/"
          f"kernel {expected_shape}") in str(error.value)
