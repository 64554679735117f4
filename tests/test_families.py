"""EfficientNetV2, Lite and EdgeTPU as tables: exact parameter counts, Fused-MBConv, sizes."""

import jax
import numpy as np
import pytest

from efficientnet_jax.models import (architecture, blocks, convnet, costs, layers, registry,
                                     scaling)
from efficientnet_jax.research import paper_tables
from efficientnet_jax.training import metrics_log, trainer
from efficientnet_jax.weights import weights_directory
from conftest import tiny_config

# Trainable parameters with 1000 classes, as timm 1.0.31 builds tf_efficientnetv2_*,
# tf_efficientnet_lite* and tf_efficientnet_es/em/el.
TIMM_PARAMS = {
    "v2_b0": 7_139_704, "v2_b1": 8_141_052, "v2_b2": 10_096_086, "v2_b3": 14_358_406,
    "v2_s": 21_458_488, "v2_m": 54_139_356, "v2_l": 118_515_272, "v2_xl": 208_119_808,
    "lite0": 4_652_008, "lite1": 5_416_680, "lite2": 6_092_072, "lite3": 8_197_096,
    "lite4": 13_006_568,
    "edgetpu_s": 5_438_392, "edgetpu_m": 6_899_496, "edgetpu_l": 10_589_712,
}


@pytest.mark.parametrize("name", list(TIMM_PARAMS))
def test_parameter_counts_equal_timms(name):
  family, variant = registry.lookup(name)
  network = registry.variant_network(variant, family.name)
  assert costs.count_params(network) == TIMM_PARAMS[name]
  # The Flax module creates exactly that (shapes only, nothing allocated).
  assert costs.count_module_params(convnet.ConvNet(network), 64) == TIMM_PARAMS[name]


def test_v2_base_rounds_without_the_ten_percent_rule():
  assert scaling.round_filters(11, 1.0, round_limit=0.0) == 8    # V2's B0–B3
  assert scaling.round_filters(11, 1.0) == 16                    # V1: 8 < 0.9 · 11
  assert registry.variant_network("v2_b2", "efficientnetv2").stage_channels() == [
      16, 32, 56, 104, 120, 208]


def test_lite_keeps_stem_head_and_end_repeats():
  lite4 = registry.variant_network("lite4", "efficientnet_lite")
  assert (lite4.stem_channels, lite4.head_channels) == (32, 1280)
  repeats = lite4.stage_repeats()
  assert (repeats[0], repeats[-1]) == (1, 1) and repeats[1:-1] == [4, 4, 6, 6, 8]
  assert not any(b.se_channels for b in lite4.blocks)
  assert {b.activation for b in lite4.blocks} == {"relu6"}


def test_edgetpu_first_block_expands_24_channels():
  first = registry.variant_network("edgetpu_s", "efficientnet_edgetpu").blocks[0]
  assert (first.kind, first.in_channels, first.mid_channels, first.out_channels) == (
      architecture.FUSED_MBCONV, 32, 96, 24)


@pytest.mark.parametrize("expansion, stride, in_channels", [(4, 2, 8), (4, 1, 16), (1, 1, 16)])
def test_fused_mbconv_is_a_full_convolution_then_a_projection(expansion, stride, in_channels):
  """Against a hand-written reference built from lax convolutions, train mode off."""
  block = architecture.Block(
      kind=architecture.FUSED_MBCONV, stage=0, index=0, kernel=3, stride=stride,
      expand_ratio=expansion, in_channels=in_channels, mid_channels=in_channels * expansion,
      out_channels=16, se_channels=0, drop_path_rate=0.0, activation="swish")
  module = blocks.FusedMBConv(block)
  x = jax.random.normal(jax.random.key(0), (2, 9, 9, in_channels))
  variables = module.init(jax.random.key(1), x)
  params = variables["params"]

  def conv(x, kernel, stride):
    pads = [layers.explicit_padding(x.shape[i], kernel.shape[0], stride, "same") for i in (1, 2)]
    return jax.lax.conv_general_dilated(x, kernel, (stride, stride), pads,
                                        dimension_numbers=("NHWC", "HWIO", "NHWC"))

  bn = lambda x: x / np.sqrt(1 + 1e-3)  # initial statistics: mean 0, variance 1
  if expansion != 1:
    assert params["expand_conv"]["conv"]["kernel"].shape == (3, 3, in_channels,
                                                               in_channels * expansion)
    y = jax.nn.swish(bn(conv(x, params["expand_conv"]["conv"]["kernel"], stride)))
    y = bn(conv(y, params["project_conv"]["conv"]["kernel"], 1))
  else:
    assert "expand_conv" not in params
    y = jax.nn.swish(bn(conv(x, params["project_conv"]["conv"]["kernel"], stride)))
  if block.has_residual:
    y = y + x
  np.testing.assert_allclose(module.apply(variables, x), y, atol=1e-5)


def test_multiply_adds_beside_the_published_ones():
  """Printed for the record (the `efficientnet-tables` rows). The V2 README's counts (the
  released code's) and V2-B0…B3 agree within 0.5%; the V2 paper's Table 7 and the Lite
  README differ more (measured: S −4.9%, M +2.4%, L +5.8%, XL −0.7%; Lite0–4 −5.4% …
  −3.3%, the README counting about 3 more operations per activation element)."""
  rows = paper_tables.family_table(["efficientnetv2", "efficientnet_lite"])
  assert len(rows) == 13 + 3  # V2-S, M and L have two sources
  for r in rows:
    deviation = r.multiply_adds / r.published.multiply_adds - 1
    print(f"{r.name}: {r.multiply_adds / 1e9:.3f}B multiply-adds at {r.eval_resolution}, "
          f"{r.published.source} {r.published.multiply_adds / 1e9:g}B ({100 * deviation:+.1f}%)")
    assert r.multiply_adds == costs.multiply_adds(
        registry.variant_network(r.name, r.family), r.eval_resolution)
    bound = 0.005 if "README" in r.published.source and r.family == "efficientnetv2" else 0.06
    assert abs(deviation) < bound, (r.name, r.published.source)
    assert r.params == TIMM_PARAMS[r.name]
    assert abs(r.params / r.published.params - 1) < 0.03  # published to 2-3 digits


@pytest.mark.slow
@pytest.mark.parametrize("family, variant", [("efficientnetv2", "v2_b0"),
                                             ("efficientnet_lite", "lite0"),
                                             ("efficientnet_edgetpu", "edgetpu_s")])
def test_new_families_train_on_digits(data_dir, tmp_path, family, variant):
  """The demo config with the family and variant flags, shrunk: the loss falls."""
  config = tiny_config(data_dir, **{"model.family": family, "model.variant": variant,
                                    "num_train_steps": 24, "log_every_steps": 8,
                                    "checkpoint_every_steps": 24})
  results = trainer.train_and_evaluate(config, str(tmp_path))
  losses = [r["loss"] for r in metrics_log.read(str(tmp_path)) if "loss" in r]
  assert len(losses) == 3 and losses[-1] < losses[0], losses
  assert results["eval_num_examples"] == 360


def test_training_and_evaluation_sizes_are_separate(data_dir, tmp_path):
  """V2 trains smaller than it evaluates: each pipeline makes its own size and the saved
  weights record both; config.model.resolution alone sets both; neither: the variant's."""
  config = tiny_config(data_dir, **{"model.family": "efficientnetv2", "model.variant": "v2_s",
                                    "model.resolution": 32, "model.eval_resolution": 40})
  with trainer._Run(config, str(tmp_path), None) as run:
    run.enter_stage(1)  # the train step and stream of step 1 on
    train_images = next(run.train_batches)["image"]
    eval_images = next(run.evaluator.dataset()[0].as_numpy_iterator())["image"]
  assert train_images.shape[1:3] == (32, 32) and eval_images.shape[1:3] == (40, 40)
  info = weights_directory.WeightsInfo.from_config(config, 10, {})
  assert (info.resolution, info.train_resolution) == (40, 32)
  config.model.eval_resolution = None
  assert registry.scaling_of(config.model).eval_size == 32  # resolution alone sets both
  config.model.resolution = None
  size = registry.scaling_of(config.model)
  assert (size.resolution, size.eval_size) == (300, 384)  # V2-S's published sizes
  sizes = {v: (s.resolution, s.eval_size)
           for v, s in registry.family("efficientnetv2").variants.items()}
  assert sizes == {"v2_b0": (192, 224), "v2_b1": (192, 240), "v2_b2": (208, 260),
                   "v2_b3": (240, 300), "v2_s": (300, 384), "v2_m": (384, 480),
                   "v2_l": (384, 480), "v2_xl": (384, 512)}
  v1 = tiny_config(data_dir, **{"model.resolution": 48})
  assert registry.scaling_of(v1.model).eval_size == 48  # one size stays one size
