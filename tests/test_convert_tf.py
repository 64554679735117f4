"""tensorflow/tpu checkpoints → ours: EMA copies preferred, slots ignored, strict names.

The checkpoints are written by TensorFlow itself (`tf.compat.v1.train.Saver` over
`tf.Variable`s, the reference's saver), from a random B0 of ours: each variable goes to
the name the reference gives it (`reference_name` below spells TF's rule — layers numbered
per class in creation order inside each block's scope, so `conv2d` is the expansion and
`conv2d_1` the projection, or `conv2d` the projection when the block has no expansion),
depthwise kernels in TF's (k, k, C, 1) layout, plus an `/ExponentialMovingAverage` copy
that differs from the raw value, RMSProp slots and global_step. A few names and shapes of
the published efficientnet-b0 checkpoint are also checked verbatim (PUBLISHED_B0).
"""

import flax.traverse_util as flax_traverse
import jax
import numpy as np
import pytest
import tensorflow as tf

from efficientnet_jax.models import convnet, registry
from efficientnet_jax.weights import converters
from efficientnet_jax.weights import tf_checkpoint


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


def reference_name(path, scope="efficientnet-b0"):
  """Our variable path (collection, module, ..., leaf) → the tensorflow/tpu name."""
  path = path[1:]
  module, leaf = path[0], path[-1]
  numbered = lambda base, k: base if k == 0 else f"{base}_{k}"
  fixed = {"stem_conv": "stem/conv2d", "stem_bn": "stem/tpu_batch_normalization",
           "head_conv": "head/conv2d", "head_bn": "head/tpu_batch_normalization",
           "classifier": "head/dense"}
  if module in fixed:
    name = fixed[module]
  else:
    block = NETWORK.blocks[int(module.split("_")[1])]
    expands = block.has_expand_conv
    convs = ["expand_conv", "project_conv"] if expands else ["project_conv"]
    bns = ["expand_bn", "depthwise_bn", "project_bn"] if expands else ["depthwise_bn",
                                                                       "project_bn"]
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


def random_variables(seed):
  """A B0's variables with non-trivial BN statistics and biases, as numpy."""
  model = convnet.ConvNet(NETWORK, depthwise_impl="xla")
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
  assert list(converters.FORMATS) == ["keras", "tf", "timm"]
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
