"""The Table 3 baselines: exact standard parameter counts, multiply-adds, scaling, modules."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from efficientnet_jax.config import defaults, validation
from efficientnet_jax.models import convnet, costs, registry
from efficientnet_jax.models.families import baselines
from efficientnet_jax.training import metrics_log, optimizers, trainer
from conftest import latest_state, tiny_config

# torchvision resnet50/resnet152/mobilenet_v2, Keras MobileNet (trainable), 1000 classes.
STANDARD_PARAMS = {"resnet50": 25_557_032, "resnet152": 60_192_808,
                   "mobilenetv2": 3_504_872, "mobilenetv1": 4_231_976}


@pytest.mark.parametrize("name", list(STANDARD_PARAMS))
def test_parameter_counts_are_the_standard_ones(name):
  network = registry.build(name)
  # Traced from the Flax module (jax.eval_shape, nothing allocated) and from the spec.
  assert costs.count_module_params(convnet.ConvNet(network), 64) == STANDARD_PARAMS[name]
  assert costs.count_params(network) == STANDARD_PARAMS[name]


def test_spec_count_matches_the_module_when_scaled():
  for name, width, depth, classes in (("resnet50", 0.5, 0.6, 10), ("mobilenetv2", 1.3, 0.5, 7)):
    network = registry.build(name, width, depth)
    module = convnet.ConvNet(network, num_classes=classes)
    assert costs.count_module_params(module, 64) == costs.count_params(network, classes)


def test_multiply_adds_at_224():
  # ResNet-50 ≈ 4.1B, MobileNetV2 ≈ 0.30B, MobileNetV1 ≈ 0.57B (their papers and the
  # EfficientNet paper's Table 3); these are our exact counts.
  assert costs.multiply_adds(registry.build("resnet50"), 224) == 4_089_184_256
  assert costs.multiply_adds(registry.build("resnet152"), 224) == 11_513_626_624
  assert costs.multiply_adds(registry.build("mobilenetv2"), 224) == 300_774_272
  assert costs.multiply_adds(registry.build("mobilenetv1"), 224) == 568_740_352


def test_scaling_rules_apply_like_b0():
  wide = registry.build("resnet50", width=2.0)
  assert [b.out_channels for b in wide.blocks if b.stride == 2 or b.index == 0] == [
      512, 1024, 2048, 4096]
  assert wide.stem_channels == 128 and wide.blocks[0].mid_channels == 128
  deep = registry.build("resnet50", depth=4.0)
  assert [sum(b.stage == s for b in deep.blocks) for s in range(4)] == [12, 16, 24, 12]
  assert [sum(b.stage == s for b in registry.build("resnet152").blocks)
          for s in range(4)] == [3, 8, 36, 3]
  # MobileNetV2 keeps its 1280-channel head below width 1 and widens it above.
  assert registry.build("mobilenetv2", width=0.5).head_channels == 1280
  assert registry.build("mobilenetv2", width=1.4).head_channels == 1792
  for name in (a.name for a in baselines.ARCHITECTURES):
    assert registry.build(name).total_stride == 32
  # Resolution: multiply-adds grow with the pixel count (stride-exact sizes).
  mb = registry.build("mobilenetv1")
  assert costs.multiply_adds(mb, 448) - 1_024_000 == 4 * (
      costs.multiply_adds(mb, 224) - 1_024_000)


def test_residual_and_projection_structure():
  r50 = registry.build("resnet50")
  assert [b.index for b in r50.blocks if b.has_projection] == [0, 3, 7, 13]
  v2 = registry.build("mobilenetv2")
  assert sum(b.has_residual for b in v2.blocks) == 10
  assert not v2.blocks[0].has_expand_conv and v2.blocks[1].has_expand_conv
  assert not any(b.has_residual for b in registry.build("mobilenetv1").blocks)


def test_bad_names_and_multipliers():
  with pytest.raises(ValueError, match="unknown model family 'resnet51'"):
    registry.build("resnet51")
  with pytest.raises(ValueError, match="width"):
    registry.build("resnet50", width=0)


def _model_config(family):
  config = defaults.get_config().model
  config.family = family  # adds the key where default_config lacks it
  config.width, config.depth, config.resolution = 0.25, 0.25, 32
  config.depthwise_impl = "xla"  # compiles faster than the unrolled CPU default
  return config


@pytest.mark.parametrize("family", ["resnet50", "mobilenetv2"])
def test_modules_train_and_eval(family):
  config = _model_config(family)
  model, _ = convnet.create(config, num_classes=10)
  x = jax.random.normal(jax.random.key(0), (4, 32, 32, 3))

  @jax.jit  # one compilation for init, a train-mode forward and eval
  def run(x):
    variables = model.init(jax.random.key(1), x)
    logits, updates = model.apply(variables, x, train=True, mutable=["batch_stats"],
                                  rngs={"dropout": jax.random.key(2)})
    return variables, logits, updates["batch_stats"], model.apply(variables, x)

  variables, logits, new_stats, eval_logits = run(x)
  assert logits.shape == eval_logits.shape == (4, 10)
  assert bool(jnp.all(jnp.isfinite(logits)))
  # Untrained running statistics (mean 0, var 1) make eval differ from train mode.
  assert float(jnp.abs(logits - eval_logits).max()) > 1e-3
  changed = jax.tree.map(lambda a, b: float(jnp.abs(a - b).max()), new_stats,
                         variables["batch_stats"])
  assert min(jax.tree.leaves(changed)) > 0  # every BN saw the batch
  # Weight decay skips exactly the BatchNorm variables (named *_bn): scale and bias of
  # each BN, as many as its (mean, var) statistics.
  bn = [p for p, _ in jax.tree_util.tree_flatten_with_path(variables["params"])[0]
        if optimizers.is_batch_norm(p)]
  assert len(bn) == len(jax.tree.leaves(variables["batch_stats"])) > 0
  features = jax.eval_shape(model.clone(num_classes=0).apply, variables, x)
  assert features.shape == (4, model.network.features)


def test_validator_checks_family_and_resolution():
  config = _model_config("vgg16")
  with pytest.raises(ValueError, match="config.model.family: unknown model family 'vgg16'"):
    validation.check_model(config)
  config = _model_config("resnet50")
  config.resolution = 16
  with pytest.raises(ValueError, match="config.model.resolution 16"):
    validation.check_model(config)


@pytest.mark.parametrize("family, policy", [("resnet50", "full"), ("mobilenetv1", "save_conv")])
def test_baselines_train_with_frozen_bn_and_remat(family, policy):
  """Both drifted before the one network: frozen BN and remat reach every family."""
  config = _model_config(family)
  config.remat, config.remat_policy = True, policy
  remat_model, _ = convnet.create(config, num_classes=10)
  frozen = remat_model.clone(bn_frozen=True)  # what config.finetune.freeze_bn=True builds
  plain = remat_model.clone(remat=False)
  x = jax.random.normal(jax.random.key(0), (4, 32, 32, 3))
  variables = jax.jit(plain.init)(jax.random.key(1), x)

  @jax.jit
  def grads_and_stats(params):
    def loss(params, model):
      logits, updates = model.apply({**variables, "params": params}, x, train=True,
                                    mutable=["batch_stats"], rngs={"dropout": jax.random.key(2)})
      return jnp.sum(logits**2), updates["batch_stats"]
    return {name: jax.grad(loss, has_aux=True)(params, model)
            for name, model in (("plain", plain), ("remat", remat_model), ("frozen", frozen))}

  out = grads_and_stats(variables["params"])
  # Remat recomputes the blocks: the same gradients up to float32 reordering.
  for a, b in zip(jax.tree.leaves(out["remat"][0]), jax.tree.leaves(out["plain"][0])):
    assert float(jnp.abs(a - b).max()) <= 1e-4 * max(1.0, float(jnp.abs(b).max()))
  # Frozen BN keeps the running statistics and still trains the weights.
  for new, old in zip(jax.tree.leaves(out["frozen"][1]), jax.tree.leaves(variables["batch_stats"])):
    assert bool(jnp.all(new == old))
  assert any(float(jnp.abs(g).max()) > 0 for g in jax.tree.leaves(out["frozen"][0]))
  # ...and normalises with those statistics, unlike train-mode BN.
  assert not all(bool(jnp.all(a == b)) for a, b in zip(
      jax.tree.leaves(out["frozen"][0]), jax.tree.leaves(out["plain"][0])))


@pytest.mark.slow
@pytest.mark.parametrize("family, policy", [("resnet50", "full"), ("mobilenetv1", "save_conv")])
def test_baseline_family_trains_with_freeze_bn_and_remat(data_dir, tmp_path, family, policy):
  """The whole trainer: `finetune.freeze_bn=True` used to fail inside Flax's clone for the
  baselines, and `remat` was silently ignored for them."""
  config = tiny_config(data_dir, **{
      "model.family": family, "model.remat": True, "model.remat_policy": policy,
      "finetune.freeze_bn": True, "num_train_steps": 4, "checkpoint_every_steps": 4})
  results = trainer.train_and_evaluate(config, str(tmp_path))
  assert results["eval_num_examples"] == 360 and 0 <= results["eval_top1"] <= 1
  records = [r for r in metrics_log.read(str(tmp_path)) if "loss" in r]
  assert records and all(np.isfinite(r["loss"]) for r in records)
  _, state = latest_state(str(tmp_path))
  # Frozen BN: the running statistics are still the initial ones (mean 0, variance 1).
  for path, leaf in jax.tree_util.tree_flatten_with_path(state["batch_stats"])[0]:
    np.testing.assert_array_equal(leaf, 0.0 if path[-1].key == "mean" else 1.0)
