"""The registry walked: every family and variant builds, counts, and round-trips."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from efficientnet_jax.config import defaults, validation
from efficientnet_jax.models import architecture, blocks, convnet, costs, registry
from efficientnet_jax.weights import weights_directory

EVERY_VARIANT = [(f, v) for f in registry.FAMILIES for v in registry.FAMILIES[f].variants]


def model_config(family: str, variant: str):
  config = defaults.get_config()
  config.model.family, config.model.variant = family, variant
  return config


def test_every_block_kind_and_activation_has_a_module():
  assert set(blocks.MODULES) == set(architecture.BLOCK_KINDS)
  assert set(blocks.ACTIVATIONS) == set(architecture.ACTIVATIONS)


@pytest.mark.parametrize("family, variant", EVERY_VARIANT)
def test_every_variant_builds_counts_and_round_trips_through_a_config(family, variant):
  network = registry.variant_network(variant, family)
  assert network.total_stride == 32
  # The arithmetic cost model covers every block of every family.
  assert costs.count_params(network) > costs.count_params(network, num_classes=0) > 0
  size = registry.FAMILIES[family].variants[variant]
  assert costs.multiply_adds(network, size.resolution) > 0
  config = model_config(family, variant)
  validation.check_model(config.model)
  assert registry.scaling_of(config.model) == size
  # The config describes the same block list, with the family's drop-path default.
  assert [(b.kind, b.in_channels, b.out_channels, b.stride) for b in
          registry.network_of(config.model).blocks] == [
              (b.kind, b.in_channels, b.out_channels, b.stride) for b in network.blocks]
  if family == registry.DEFAULT_FAMILY and variant == "b0":
    assert registry.network_of(config.model).blocks[-1].drop_path_rate > 0


@pytest.mark.parametrize("family", list(registry.FAMILIES))
def test_the_flax_module_creates_what_the_cost_model_counts(family):
  """Shapes only (jax.eval_shape): nothing is materialised."""
  config = model_config(family, registry.FAMILIES[family].default_variant)
  config.model.num_classes = 7
  model, size = convnet.create(config.model)
  assert size.eval_size == 224  # every default variant evaluates at 224; V2-B0 trains at 192
  assert size.resolution == (192 if family == "efficientnetv2" else 224)
  assert costs.count_module_params(model, 64) == costs.count_params(model.network, 7)


def test_names_resolve_in_one_place():
  assert registry.lookup("b3") == (registry.FAMILIES["efficientnet"], "b3")
  assert registry.lookup("resnet50") == (registry.FAMILIES["resnet50"], "b0")
  with pytest.raises(ValueError, match="unknown model 'vgg16'"):
    registry.lookup("vgg16")
  assert registry.variant_names("mobilenetv2")[-1] == registry.PHI
  assert registry.infer_variant(40, 1536, 26) == "b3"
  with pytest.raises(ValueError, match="no EfficientNet variant has stem width 40"):
    registry.infer_variant(40, 1536, 27)


# Each family at its default size, and every size with a table of its own (V2-S …).
ROUND_TRIPS = [(f.name, v) for f in registry.FAMILIES.values()
               for v in f.variants if v == f.default_variant or v in f.tables]


@pytest.mark.parametrize("family, variant", ROUND_TRIPS)
def test_every_family_round_trips_through_the_weights_directory(family, variant, tmp_path):
  config = model_config(family, variant)
  config.model.width, config.model.depth = 0.25, 0.25  # small weights to write
  info = weights_directory.WeightsInfo.from_config(config, 6, {"format": "test"})
  assert info.family == family
  model, _ = convnet.create(config.model, num_classes=6)
  assert info.network == model.network
  variables = jax.jit(model.init)(jax.random.key(0), jnp.zeros((1, 32, 32, 3)))
  weights_directory.save_weights(tmp_path / "w", variables, info)
  loaded, loaded_info = weights_directory.load_weights(tmp_path / "w")
  assert loaded_info == info
  for a, b in zip(jax.tree.leaves(loaded), jax.tree.leaves(variables), strict=True):
    np.testing.assert_array_equal(a, b)
  # ...and back into a config that builds the same network.
  again = defaults.get_config()
  loaded_info.update_config(again)
  assert registry.network_of(again.model) == model.network
  size = registry.scaling_of(again.model)
  assert (size.resolution, size.eval_size) == (info.train_resolution, info.resolution)


@pytest.mark.parametrize("family", list(registry.FAMILIES))
def test_backbone_features_match_their_description(family):
  """Every family as a backbone at an odd resolution: the maps' shapes, channels and
  strides are what `feature_info` says without running, and the pre-pool map pooled is
  the classifier's input."""
  f = registry.FAMILIES[family]
  network = registry.build(family, 0.25, 0.25, variant=f.default_variant)
  model = convnet.ConvNet(network, num_classes=0, depthwise_impl="xla")
  x = jax.random.normal(jax.random.key(0), (2, 45, 53, 3))

  @jax.jit
  def run(x):
    variables = model.init(jax.random.key(1), x)
    return model.apply(variables, x, return_features=True)

  pooled, maps = run(x)
  info = architecture.feature_info(network)
  assert set(maps) == {i.name for i in info}  # (a dict through jit: keys sorted)
  assert [i.stride for i in info[:-1]] == [2, 4, 8, 16, 32]
  for i in info:
    assert maps[i.name].shape == (2, -(-45 // i.stride), -(-53 // i.stride), i.channels), i
  np.testing.assert_allclose(jnp.mean(maps["pre_pool"], axis=(1, 2)), pooled, rtol=1e-6)
