"""Every config under configs/ loads, validates and carries the recipe its docstring names."""

import glob
import os
import re

import pytest

from efficientnet_jax import configs
from efficientnet_jax.config import validation
from efficientnet_jax.models import convnet, registry
from efficientnet_jax.research import sweep
from conftest import REPO

CONFIGS = [os.path.join(configs.DIRECTORY, name + ".py") for name in configs.names()]
# (config argument, family, variant, augmentation, RandAugment magnitude, Mixup/CutMix alpha)
RECIPES = [
    *((f"b{k}.py", "efficientnet", f"b{k}", "autoaugment", 10, 0.0) for k in range(8)),
    ("efficientnet.py:b4", "efficientnet", "b4", "autoaugment", 10, 0.0),
    ("efficientnetv2.py:v2_b2", "efficientnetv2", "v2_b2", "autoaugment", 10, 0.0),
    ("efficientnetv2.py:v2_s", "efficientnetv2", "v2_s", "randaugment", 10, 0.0),
    ("efficientnetv2.py:v2_m", "efficientnetv2", "v2_m", "randaugment", 15, 0.2),
    ("efficientnetv2.py:v2_l", "efficientnetv2", "v2_l", "randaugment", 20, 0.5),
    ("efficientnetv2.py:v2_xl", "efficientnetv2", "v2_xl", "randaugment", 20, 0.5),
    ("efficientnet_lite.py:lite3", "efficientnet_lite", "lite3", None, 10, 0.0),
    ("efficientnet_edgetpu.py:edgetpu_m", "efficientnet_edgetpu", "edgetpu_m", None, 10, 0.0),
]


@pytest.mark.parametrize("path", CONFIGS, ids=os.path.basename)
def test_every_config_validates_and_its_docstring_gives_the_command(path):
  config = sweep.load_config(path)
  validation.validate(config)
  with open(path) as f:
    assert re.search(r"efficientnet_jax\.main \\?\s*--config=configs/", f.read())


@pytest.mark.parametrize("arg, family, variant, augment, magnitude, mix", RECIPES)
def test_published_recipes(arg, family, variant, augment, magnitude, mix):
  config = sweep.load_config(os.path.join(REPO, "configs", arg))
  m = config.model
  assert (m.family, m.variant, config.input.augment) == (family, variant, augment)
  assert config.input.randaug_magnitude == magnitude
  assert config.input.mixup_alpha == config.input.cutmix_alpha == mix
  preprocessing = registry.family(family).preprocessing_of(variant)
  assert tuple(config.input.mean_rgb) == preprocessing.mean_rgb
  assert tuple(config.input.stddev_rgb) == preprocessing.stddev_rgb
  model, size = convnet.create(m, num_classes=10)
  assert model.bn_momentum == (0.9 if family == "efficientnetv2" else 0.99)
  if variant == "v2_s":
    assert (size.resolution, size.eval_size, size.dropout_rate) == (300, 384, 0.2)
  if family == "efficientnet_lite":
    assert config.input.mean_rgb == (127.0,) * 3 and config.input.stddev_rgb == (128.0,) * 3


def test_a_bad_variant_names_the_known_ones():
  with pytest.raises(ValueError, match="unknown efficientnetv2 variant 'v2_q'; known: v2_b0"):
    sweep.load_config(os.path.join(REPO, "configs", "efficientnetv2.py:v2_q"))


def test_augmentation_can_be_turned_off_from_the_command_line():
  config = sweep.load_config(os.path.join(REPO, "configs", "b0.py"),
                             ["--config.input.augment=none"])
  validation.validate(config)
  assert config.input.augment == "none"


def test_the_checkout_configs_folder_is_the_packaged_one():
  assert sorted(glob.glob(os.path.join(REPO, "configs", "*.py"))) == sorted(
      os.path.join(REPO, "configs", os.path.basename(path)) for path in
      [*CONFIGS, os.path.join(configs.DIRECTORY, "__init__.py")])
  assert len(CONFIGS) == 15  # 14, and demo_progressive.py (progressive learning)


@pytest.mark.parametrize("name, file, arg", [
    ("demo", "demo.py", None), ("efficientnetv2:v2_m", "efficientnetv2.py", "v2_m"),
    ("configs/b0.py", "b0.py", None), ("v2_s", "efficientnetv2.py", "v2_s"),
    ("lite0", "efficientnet_lite.py", "lite0"), ("b8", "efficientnet.py", "b8"),
    ("edgetpu_l", "efficientnet_edgetpu.py", "edgetpu_l"), ("b3", "b3.py", None)])
def test_config_names_resolve_to_the_packaged_files(name, file, arg, tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)  # outside the checkout, as an installed package runs
  resolved = configs.resolve(name)
  assert resolved == os.path.join(configs.DIRECTORY, file) + (f":{arg}" if arg else "")
  config = sweep.load_config(name)
  if arg:
    assert config.model.variant == arg


def test_a_config_path_that_exists_is_kept_and_a_bad_name_lists_the_choices(tmp_path):
  own = tmp_path / "my_config.py"
  own.write_text("")
  assert configs.resolve(f"{own}:x") == f"{own}:x"
  with pytest.raises(ValueError, match=r"'resnet50' is not a config name \(b0, .*demo.*\) "
                     r"or a model name \(b0, .*v2_s.*lite0.*edgetpu_l\)"):
    configs.resolve("resnet50")  # a baseline family: no training config of its own
