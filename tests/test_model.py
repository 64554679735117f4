"""The Flax network (every family's): exact parameter counts, shapes, modes, depthwise
paths, dtypes, remat."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import flax.linen as nn

from efficientnet_jax.config import defaults, validation
from efficientnet_jax.models import blocks, convnet, costs, layers, registry, scaling

REFERENCE_PARAMS = {
    "b0": 5_288_548, "b1": 7_794_184, "b2": 9_109_994, "b3": 12_233_232,
    "b4": 19_341_616, "b5": 30_389_784, "b6": 43_040_704, "b7": 66_347_960,
    "b8": 87_413_142, "l2": 480_309_308,
}


def tiny(num_classes=10, **kwargs):
  """A narrow, shallow network that compiles in a second or two on CPU."""
  return convnet.ConvNet(registry.build("efficientnet", 0.25, 0.25), num_classes=num_classes,
                         **kwargs)


def assert_trees_close(a, b, rel=1e-5):
  """Leaves agree up to `rel` times the largest magnitude anywhere in `b`.

  Relative to the whole tree's scale, not leaf by leaf: a gradient that is zero in
  exact arithmetic (a BN bias before another train-mode BN) is pure rounding noise.
  """
  scale = max(float(np.abs(y).max()) for y in jax.tree.leaves(b))
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
    assert float(np.abs(np.asarray(x) - np.asarray(y)).max()) <= rel * scale


def randomise_batch_stats(variables, seed=0):
  """Non-trivial running statistics, so eval-mode BN is exercised."""
  leaves, treedef = jax.tree.flatten(variables["batch_stats"])
  keys = jax.random.split(jax.random.key(seed), len(leaves))
  new = [jax.random.uniform(k, l.shape, minval=0.5, maxval=1.5) if l.ndim and i % 2 else
         0.1 * jax.random.normal(k, l.shape) for i, (k, l) in enumerate(zip(keys, leaves))]
  return {**variables, "batch_stats": jax.tree.unflatten(treedef, new)}


def init(m, x, seed=0):
  # Jitted: op-by-op (eager) execution compiles every primitive separately on CPU.
  return jax.jit(m.init)(jax.random.key(seed), x)


def apply(m, variables, x, train=False, dropout_seed=0):
  """Returns (output, batch_stats updates) in train mode, the output in eval mode."""
  if train:
    fn = lambda v, x, k: m.apply(v, x, train=True, mutable=["batch_stats"],
                                 rngs={"dropout": k})
    return jax.jit(fn)(variables, x, jax.random.key(dropout_seed))
  return jax.jit(lambda v, x: m.apply(v, x))(variables, x)


@pytest.mark.parametrize("name", list(REFERENCE_PARAMS))
def test_parameter_count_is_exact(name):
  s = scaling.variant(name)
  m = convnet.ConvNet(registry.build("efficientnet", s.width, s.depth), num_classes=1000)
  assert costs.count_module_params(m, resolution=64) == REFERENCE_PARAMS[name]
  assert costs.count_params(m.network) == REFERENCE_PARAMS[name]


def test_batch_stats_cover_every_bn():
  m = tiny()
  variables = jax.eval_shape(m.init, jax.random.key(0), jnp.zeros((1, 32, 32, 3)))
  bn_params = {path[:-1] for path, _ in jax.tree_util.tree_flatten_with_path(
      variables["params"])[0] if "_bn" in str(path[-2])}
  stats = {path[:-1] for path, _ in jax.tree_util.tree_flatten_with_path(
      variables["batch_stats"])[0]}
  assert len(bn_params) == len(stats) == 2 + sum(  # stem, head, blocks
      3 if b.expand_ratio != 1 else 2 for b in m.network.blocks)


@pytest.mark.parametrize("shape", [(2, 224, 224), (1, 257, 311), (3, 33, 32), (1, 96, 160)])
def test_output_shapes_any_resolution(shape):
  m = tiny()
  x = jnp.ones(shape + (3,))
  variables = init(m, x)
  assert apply(m, variables, x).shape == (shape[0], 10)


def test_num_classes_zero_returns_pooled_features():
  m = tiny(num_classes=0)
  x = jnp.ones((2, 64, 64, 3))
  variables = init(m, x)
  assert "classifier" not in variables["params"]
  assert apply(m, variables, x).shape == (2, m.network.head_channels)


def test_resolution_below_total_stride_raises():
  m = tiny()
  with pytest.raises(ValueError, match="smaller than the network's total stride 32"):
    m.init(jax.random.key(0), jnp.ones((1, 31, 64, 3)))
  config = defaults.get_config()
  config.model.resolution = 16
  with pytest.raises(ValueError, match="config.model.resolution 16"):
    validation.check_model(config.model)


def test_validator_checks_the_model_config():
  config = defaults.get_config()
  config.model.dtype = "float16"
  with pytest.raises(ValueError, match="config.model.dtype"):
    validation.check_values(config)
  config = defaults.get_config()
  config.model.padding = "valid"
  with pytest.raises(ValueError, match="config.model.padding"):
    validation.check_values(config)
  config = defaults.get_config()
  config.model.variant = "b12"
  with pytest.raises(ValueError, match="unknown EfficientNet variant 'b12'"):
    registry.scaling_of(config.model)
  with pytest.raises(ValueError, match="config.model.variant='b12'"):
    validation.check_values(config)


def test_train_and_eval_differ_only_by_bn_dropout_and_drop_path():
  x = jax.random.normal(jax.random.key(1), (4, 64, 64, 3))
  # No dropout, no drop path, BN momentum 0: the running statistics after one train
  # pass are exactly that batch's statistics, so eval on them reproduces train mode.
  m = convnet.ConvNet(registry.build("efficientnet", 0.25, 0.25, drop_path_rate=0.0),
                      num_classes=10, dropout_rate=0.0, bn_momentum=0.0)
  variables = init(m, x)
  train_out, updates = apply(m, variables, x, train=True, dropout_seed=2)
  train_out_2, _ = apply(m, variables, x, train=True, dropout_seed=3)
  np.testing.assert_array_equal(train_out, train_out_2)  # no randomness left
  eval_out = apply(m, {"params": variables["params"], **updates}, x)
  np.testing.assert_allclose(eval_out, train_out, atol=2e-4, rtol=1e-4)
  # ...and with the initial (unit) statistics eval mode differs.
  assert not np.allclose(apply(m, variables, x), train_out, atol=1e-2)

  # Dropout and drop path make train mode random; eval mode never is.
  noisy = convnet.ConvNet(registry.build("efficientnet", 0.25, 0.25, drop_path_rate=0.5),
                          num_classes=10, dropout_rate=0.5)
  variables = init(noisy, x)
  a, _ = apply(noisy, variables, x, train=True, dropout_seed=2)
  b, _ = apply(noisy, variables, x, train=True, dropout_seed=3)
  assert not np.allclose(a, b)
  np.testing.assert_array_equal(apply(noisy, variables, x), apply(noisy, variables, x))


def test_drop_path_zeroes_whole_samples_and_rescales():
  class Residual(nn.Module):
    @nn.compact
    def __call__(self, x):
      return blocks.drop_path(self, x, 0.25, train=True)
  x = jnp.ones((4000, 2, 2, 3))
  y = Residual().apply({}, x, rngs={"dropout": jax.random.key(0)})
  per_sample = np.asarray(y).reshape(4000, -1)
  kept = per_sample[:, 0] != 0
  np.testing.assert_allclose(per_sample[kept], 1 / 0.75, rtol=1e-6)
  assert (per_sample.min(1) == per_sample.max(1)).all()  # one decision per sample
  assert abs((per_sample[:, 0] == 0).mean() - 0.25) < 0.03


@pytest.mark.parametrize("kernel, stride, padding, size", [
    (3, 1, "same", (17, 20)), (3, 2, "same", (17, 20)), (5, 2, "same", (16, 21)),
    (5, 1, "symmetric", (15, 15)), (3, 2, "symmetric", (14, 19)),
])
def test_depthwise_implementations_agree(kernel, stride, padding, size):
  x = jax.random.normal(jax.random.key(0), (2, *size, 8))
  convs = {impl: layers.DepthwiseConv(kernel, stride, padding, impl)
           for impl in ("xla", "shift_add")}
  variables = convs["xla"].init(jax.random.key(1), x)
  outs, grads = {}, {}
  for impl, conv in convs.items():
    loss = lambda v, x: jnp.sum(jnp.sin(conv.apply(v, x)))
    outs[impl] = conv.apply(variables, x)
    grads[impl] = jax.grad(loss, argnums=(0, 1))(variables, x)
  np.testing.assert_allclose(outs["xla"], outs["shift_add"], atol=1e-5)
  for a, b in zip(jax.tree.leaves(grads["xla"]), jax.tree.leaves(grads["shift_add"])):
    np.testing.assert_allclose(a, b, atol=1e-5, rtol=1e-5)


def test_depthwise_implementations_agree_in_whole_model():
  x = jax.random.normal(jax.random.key(0), (2, 45, 38, 3))
  models = {impl: tiny(depthwise_impl=impl) for impl in ("xla", "shift_add")}
  variables = randomise_batch_stats(init(models["xla"], x, seed=1))

  def loss(v, m):
    return jnp.mean(m.apply(v, x) ** 2)

  results = {impl: jax.jit(jax.value_and_grad(loss), static_argnums=1)(variables, m)
             for impl, m in models.items()}
  assert results["xla"][0] > 1e-3  # a loss with real gradients, not a vanishing one
  np.testing.assert_allclose(results["xla"][0], results["shift_add"][0], rtol=1e-5)
  assert_trees_close(results["shift_add"][1], results["xla"][1], rel=1e-5)


def test_padding_rules():
  # TF SAME puts the odd extra pixel at the end; symmetric pads k//2 on both sides.
  assert layers.explicit_padding(224, 3, 2, "same") == (0, 1)
  assert layers.explicit_padding(225, 3, 2, "same") == (1, 1)
  assert layers.explicit_padding(224, 5, 2, "same") == (1, 2)
  assert layers.explicit_padding(224, 3, 2, "symmetric") == (1, 1)
  x = jax.random.normal(jax.random.key(0), (1, 16, 16, 4))
  same, sym = layers.Conv(6, 3, 2, "same"), layers.Conv(6, 3, 2, "symmetric")
  variables = same.init(jax.random.key(1), x)
  kernel = variables["params"]["conv"]["kernel"]
  ref = lambda pads: jax.lax.conv_general_dilated(x, kernel, (2, 2), pads,
                                                  dimension_numbers=("NHWC", "HWIO", "NHWC"))
  np.testing.assert_allclose(same.apply(variables, x), ref([(0, 1), (0, 1)]), atol=1e-5)
  np.testing.assert_allclose(sym.apply(variables, x), ref([(1, 1), (1, 1)]), atol=1e-5)
  assert not np.allclose(same.apply(variables, x), sym.apply(variables, x))


def test_tf_initialisers():
  s = scaling.variant("b0")
  m = convnet.ConvNet(registry.build("efficientnet", s.width, s.depth), num_classes=1000)
  params = init(m, jnp.zeros((1, 32, 32, 3)))["params"]
  expand = params["blocks_14"]["expand_conv"]["conv"]["kernel"]  # 1x1, 192 → 1152
  assert np.std(expand) == pytest.approx(np.sqrt(2 / 1152), rel=0.02)
  depthwise = params["blocks_14"]["depthwise_conv"]["kernel"]     # 5x5x1x1152
  assert depthwise.shape == (5, 5, 1, 1152)
  assert np.std(depthwise) == pytest.approx(np.sqrt(2 / 25), rel=0.02)
  classifier = params["classifier"]["kernel"]
  assert np.abs(classifier).max() <= 1 / np.sqrt(1000)
  assert np.abs(classifier).max() > 0.99 / np.sqrt(1000)
  assert not np.any(params["classifier"]["bias"])


def test_bfloat16_compute_keeps_float32_params_stats_and_logits():
  m = tiny(dtype=jnp.bfloat16)
  x = jax.random.normal(jax.random.key(0), (2, 64, 64, 3))
  variables = init(m, x, seed=1)
  assert {leaf.dtype for leaf in jax.tree.leaves(variables)} == {jnp.dtype(jnp.float32)}
  logits, updates = apply(m, variables, x, train=True)
  assert logits.dtype == jnp.float32
  assert {leaf.dtype for leaf in jax.tree.leaves(updates)} == {jnp.dtype(jnp.float32)}
  reference = apply(tiny(), variables, x)
  np.testing.assert_allclose(apply(m, variables, x), reference,
                             atol=0.1 * np.abs(reference).max())


@pytest.mark.parametrize("policy", convnet.REMAT_POLICIES)
def test_remat_gives_the_same_gradients(policy):
  x = jax.random.normal(jax.random.key(0), (2, 64, 64, 3))
  plain, remat = tiny(), tiny(remat=True, remat_policy=policy)
  variables = init(plain, x, seed=1)

  def grads(m):
    def loss(params):
      logits, _ = m.apply({**variables, "params": params}, x, train=True,
                          mutable=["batch_stats"], rngs={"dropout": jax.random.key(3)})
      return jnp.sum(logits**2)
    return jax.jit(jax.grad(loss))(variables["params"])

  # Train-mode BN amplifies float32 reordering (remat re-fuses the recomputation).
  assert_trees_close(grads(remat), grads(plain), rel=1e-4)


def test_unknown_remat_policy_is_refused():
  config = defaults.get_config()
  config.model.remat_policy = "some"
  with pytest.raises(ValueError, match="config.model.remat_policy"):
    validation.check_values(config)


@pytest.mark.parametrize("use_bias", [False, True])
def test_pointwise_conv_as_matmul_matches_convolution(use_bias):
  # On CPU a 1x1 Conv runs as a matrix product; XLA's convolution is the reference.
  x = jax.random.normal(jax.random.key(0), (2, 7, 9, 12))
  conv = layers.Conv(20, use_bias=use_bias)
  p = jax.tree.map(lambda v: v + 0.1, conv.init(jax.random.key(1), x)["params"]["conv"])

  def reference(p, x):
    y = jax.lax.conv_general_dilated(x, p["kernel"], (1, 1), "VALID",
                                     dimension_numbers=("NHWC", "HWIO", "NHWC"))
    return y + p["bias"] if use_bias else y

  fast = lambda p, x: conv.apply({"params": {"conv": p}}, x)
  loss = lambda f: lambda p, x: jnp.sum(jnp.sin(f(p, x)))
  np.testing.assert_allclose(fast(p, x), reference(p, x), atol=1e-5, rtol=1e-5)
  for a, b in zip(jax.tree.leaves(jax.grad(loss(fast), argnums=(0, 1))(p, x)),
                  jax.tree.leaves(jax.grad(loss(reference), argnums=(0, 1))(p, x)),
                  strict=True):
    np.testing.assert_allclose(a, b, atol=1e-5, rtol=1e-5)
