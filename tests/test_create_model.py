"""The one-line model API: every registered name builds with its exact parameter count,
wildcards list models, weights load with their settings, backbones and new classifiers."""

import functools

import jax
import numpy as np
import pytest

import efficientnet_jax
from efficientnet_jax.models import architecture, registry
from efficientnet_jax.weights import weights_directory
from test_baselines import STANDARD_PARAMS
from test_families import TIMM_PARAMS
from test_model import REFERENCE_PARAMS, randomise_batch_stats

EXPECTED_PARAMS = {**REFERENCE_PARAMS, **TIMM_PARAMS, **STANDARD_PARAMS}


def parameter_count(tree):
  return sum(int(np.prod(leaf.shape)) for leaf in jax.tree.leaves(tree))


def abstract_model(name):
  """create_model(name) traced abstractly: its own code path, no compile, nothing
  allocated (the variables are shapes)."""
  built = {}

  def build():
    built["model"] = efficientnet_jax.create_model(name)
    return built["model"].variables

  variables = jax.eval_shape(build)
  return built["model"]._replace(variables=variables)


def test_every_registered_name_is_listed_with_a_known_count():
  assert efficientnet_jax.list_models() == registry.model_names()
  assert sorted(efficientnet_jax.list_models()) == sorted(EXPECTED_PARAMS)


@pytest.mark.parametrize("name", registry.model_names())
def test_create_model_builds_every_name_with_its_parameter_count(name):
  model = abstract_model(name)
  assert parameter_count(model.variables["params"]) == EXPECTED_PARAMS[name]
  family, variant = registry.lookup(name)
  assert (model.info.family, model.info.variant) == (family.name, variant)
  assert model.info.resolution == registry.family(family.name).variants[variant].eval_size


def test_list_models_takes_wildcards():
  assert efficientnet_jax.list_models("lite*") == ["lite0", "lite1", "lite2", "lite3",
                                                    "lite4"]
  assert efficientnet_jax.list_models("v2_?") == ["v2_s", "v2_m", "v2_l"]
  assert efficientnet_jax.list_models("edgetpu_*") == ["edgetpu_s", "edgetpu_m", "edgetpu_l"]
  assert efficientnet_jax.list_models("nothing*") == []


def test_a_bad_name_lists_the_close_matches():
  with pytest.raises(ValueError, match=r"unknown model 'v2s'; did you mean v2_s, "):
    efficientnet_jax.create_model("v2s")
  with pytest.raises(ValueError,
                     match=r"unknown model 'lite9'; did you mean lite4, lite3, lite2, lite1"):
    efficientnet_jax.create_model("lite9")
  with pytest.raises(ValueError, match="give a model name, weights, or both"):
    efficientnet_jax.create_model()
  with pytest.raises(ValueError, match="num_classes must be an integer >= 0, got -1"):
    efficientnet_jax.create_model("b0", num_classes=-1)


def test_random_init_carries_each_familys_preprocessing_and_settings():
  model, variables, info = efficientnet_jax.create_model("lite0", num_classes=7)
  assert parameter_count(variables["params"]) == TIMM_PARAMS["lite0"] - 1281 * 1000 + 1281 * 7
  assert (info.mean_rgb, info.stddev_rgb, info.resolution) == ((127.0,) * 3, (128.0,) * 3, 224)
  assert info.source == {"format": "random", "seed": "0"}
  assert model.bn_momentum == 0.99
  logits = jax.jit(model.apply)(variables, np.zeros((2, 32, 32, 3), np.float32))
  assert logits.shape == (2, 7)
  v2 = abstract_model("v2_s")
  assert v2.module.bn_momentum == 0.9 and (v2.info.train_resolution, v2.info.resolution) == (
      300, 384)


@pytest.fixture(scope="module")
def b0_weights(tmp_path_factory):
  """A B0 weights directory with random weights and random BN statistics."""
  model, variables, info = efficientnet_jax.create_model("b0", seed=3)
  variables = randomise_batch_stats(jax.tree.map(np.asarray, variables))
  directory = tmp_path_factory.mktemp("weights") / "b0"
  weights_directory.save_weights(directory, variables, info)
  return directory, variables


def test_weights_load_with_their_settings_and_values(b0_weights):
  directory, saved = b0_weights
  model, variables, info = efficientnet_jax.create_model("b0", weights=directory)
  for a, b in zip(jax.tree.leaves(variables), jax.tree.leaves(saved), strict=True):
    np.testing.assert_array_equal(a, b)
  assert info.num_classes == 1000 and model.num_classes == 1000
  # The name may be left out; load() is the same thing.
  loaded = efficientnet_jax.load(directory)
  assert loaded[2] == info
  np.testing.assert_array_equal(loaded[1]["params"]["stem_conv"]["conv"]["kernel"],
                                saved["params"]["stem_conv"]["conv"]["kernel"])


def test_weights_of_another_model_are_refused_naming_both(b0_weights):
  directory, _ = b0_weights
  with pytest.raises(ValueError, match=r"are efficientnet b0, not v2_s \(efficientnetv2 v2_s\)"):
    efficientnet_jax.create_model("v2_s", weights=directory)


def test_another_class_count_gets_a_new_classifier_and_keeps_the_rest(b0_weights):
  directory, saved = b0_weights
  model, variables, info = efficientnet_jax.create_model(weights=directory, num_classes=10)
  assert info.num_classes == model.num_classes == 10
  assert variables["params"]["classifier"]["kernel"].shape == (1280, 10)
  np.testing.assert_array_equal(variables["params"]["head_conv"]["conv"]["kernel"],
                                saved["params"]["head_conv"]["conv"]["kernel"])
  logits = jax.jit(model.apply)(variables, np.zeros((1, 32, 32, 3), np.float32))
  assert logits.shape == (1, 10)


def test_a_backbone_returns_the_feature_maps_feature_info_describes(b0_weights):
  directory, _ = b0_weights
  model, variables, info = efficientnet_jax.create_model("b0", weights=directory,
                                                         features=True)
  assert "classifier" not in variables["params"] and info.num_classes == 0
  images = np.zeros((1, 64, 64, 3), np.float32)
  maps = jax.jit(model.apply)(variables, images)
  expected = architecture.feature_info(model.network)
  assert sorted(maps) == sorted(i.name for i in expected)  # jit returns dicts key-sorted
  for i in expected:
    assert maps[i.name].shape == (1, 64 // i.stride, 64 // i.stride, i.channels)
  # The same maps as the classifier model's return_features.
  full, full_variables, _ = efficientnet_jax.create_model("b0", weights=directory)
  _, full_maps = jax.jit(functools.partial(full.apply, return_features=True))(
      full_variables, images)
  for name in maps:
    np.testing.assert_array_equal(maps[name], full_maps[name])
