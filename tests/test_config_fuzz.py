"""A config fuzzer: seeded perturbations of the defaults and of every shipped config.

Each case is a config a user could hand to main.py, perturbed in one key:

* "flag": a `--config.KEY=VALUE` override parsed as main.py parses it
  (`research.sweep.load_config`, ml_collections' type-safe flags), or
* "assign": the value set in a config built from a plain dict (a config file or a JSON that
  builds its own ConfigDict), where a wrongly typed value arrives unconverted.

The categories: wrong types, out-of-range and boundary values (each RULES limit, on both
sides), unknown and mistyped keys (top level and nested), empty strings, NaN and ±inf, huge
sizes; the progressive-learning block (config.progressive.*) included, mostly on the V2
configs that turn it on.

Every case must either pass `trainer.validate` (main.py's pre-flight) and then build what
the trainer builds before its first compile (dataset info, model, stage models, schedule,
optimizer, mesh, PRNG key, and the state's shapes by `jax.eval_shape`), or be refused, at
the flags or by `trainer.validate`, with a ValueError that names the perturbed key. Any
other exception, a ValueError that does not name the key, or one from the set-up after
`validate` passed, is a failure. Nothing compiles; the data is the digits dataset.
"""

import collections
import dataclasses
import math
import random
import time
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import pytest

from efficientnet_jax import configs
from efficientnet_jax.config import defaults, validation
from efficientnet_jax.data import augment, input_pipeline
from efficientnet_jax.models import registry, scaling
from efficientnet_jax.research import sweep
from efficientnet_jax.training import (freezing, metrics_log, optimizers, progressive, sharding,
                                       train_step, trainer)

SEED = 20210521
NUM_CASES = 600  # drawn from the pool of every (key, perturbation, route): ~1,600
MIN_CASES = 300
NAN, INF = float("nan"), float("inf")
# The defaults (written to a file: a config file like any other), every shipped config, and
# the shipped configs' other arguments that change what is checked (φ, the paper schedule,
# the largest variants).
EXTRA_BASES = ("efficientnet:phi=1.5", "efficientnet:b7", "efficientnet:l2",
               "efficientnetv2:v2_s,paper", "efficientnetv2:v2_xl", "efficientnetv2:v2_b0",
               "efficientnet_lite:lite4", "efficientnet_edgetpu:edgetpu_l",
               "finetune:dataset=digits")
V2_BASES = ("efficientnetv2", "efficientnetv2:v2_s,paper", "efficientnetv2:v2_xl",
            "efficientnetv2:v2_b0")
# Blocks above which the state's shapes are traced at depth 0.01 (one block a stage): the
# values under test reach the model either way, and tracing costs ~0.1 s a block here.
MAX_TRACED_BLOCKS = 10

# Values at and around each limit of RULES (and of the relations between keys).
_RATE_LIMITS = (0.0, 0.999999, 1.0, 1e-12, -1e-12)
LIMITS: dict[str, tuple] = {
    "seed": (2**31 - 1, 2**63 - 1, 2**63),
    "model.family": ("resnet50", "mobilenetv1", "EfficientNet", "efficientnetv3", " "),
    "model.variant": ("b9", "B0", "phi", "v2_s", "lite0", "resnet50", " b0"),
    "model.phi": (0.0, -1.0, 1.5, 7.0, 20.0, -20.0, 50.0),
    "model.alpha": (0.999, 1.0, 1.5), "model.beta": (0.999, 1.0, 2.0),
    "model.gamma": (0.999, 1.0, 1.15),
    "model.resolution_multiple": (1, 7, 8192, 8193),
    "model.width": (1e-9, 0.01, scaling.MAX_COEFFICIENT, scaling.MAX_COEFFICIENT + 0.5),
    "model.depth": (1e-9, 0.01, 3.0, scaling.MAX_COEFFICIENT + 0.5),
    "model.resolution": (scaling.MIN_RESOLUTION - 1, scaling.MIN_RESOLUTION, 33,
                         scaling.MAX_RESOLUTION, scaling.MAX_RESOLUTION + 1),
    "model.eval_resolution": (scaling.MIN_RESOLUTION - 1, scaling.MIN_RESOLUTION,
                              scaling.MAX_RESOLUTION, scaling.MAX_RESOLUTION + 1),
    "model.dropout_rate": _RATE_LIMITS, "model.drop_path_rate": _RATE_LIMITS,
    "model.bn_momentum": _RATE_LIMITS, "model.bn_epsilon": (1e-12, 1e-300, 0.0, 10.0),
    "model.num_classes": (0, 1, 10, 1000, 21843),
    "model.padding": ("SAME", "valid", "symmetric"),
    "model.depthwise_impl": ("xla", "shift_add", "cuda"),
    "model.dtype": ("bfloat16", "float16", "int8", "float64"),
    "model.remat_policy": ("save_conv", "none"),
    "dataset": ("digitz", "Digits", "folder:/nonexistent/images", "digits/x"),
    "train_split": ("test", "train[:10]", "train[:50%]", "validation", "train[", "train[:0]"),
    "eval_split": ("train", "test[:10]", "validation", "test[:0]"),
    "input.crop_padding": (0, 32, 10**4),
    "input.crop_fraction": (1e-9, 0.875, 1.0, 1.000001),
    "input.crop_area_range": ((0.0, 1.0), (1e-9, 1.0), (1.0, 1.0), (0.5, 0.4), (0.5, 1.01),
                              (0.5,), (0.1, 0.5, 1.0), ("a", "b"), (NAN, 1.0), (0.5, INF)),
    "input.mean_rgb": ((0.0, 0.0, 0.0), (1.0, 2.0), ("a", "b", "c"), (NAN, 0.0, 0.0),
                       (INF, 0.0, 0.0), (1.0, 2.0, 3.0, 4.0), (-1e9, 0.0, 0.0)),
    "input.stddev_rgb": ((1.0, 1.0, 1.0), (0.0, 1.0, 1.0), (-1.0, 1.0, 1.0), (INF, 1.0, 1.0),
                         (NAN, 1.0, 1.0), (1e-300, 1.0, 1.0), ("a", "b", "c")),
    "input.augment": ("none", "autoaugment", "randaugment", "RandAugment", "mixup"),
    "input.randaug_layers": (0, 1, 2, 10),
    "input.randaug_magnitude": (0, augment.MAX_RANDAUG_MAGNITUDE,
                                augment.MAX_RANDAUG_MAGNITUDE + 1e-6),
    "input.mixup_alpha": (0.0, 1e-12, 0.2, 1e6), "input.cutmix_alpha": (0.0, 1e-12, 1.0, 1e6),
    "input.shuffle_buffer": (1, 2),
    "progressive.num_stages": (0, 1, 2, 4, 121, 122, 123, 1000),
    "progressive.interpolation": ("paper", "released", "Paper", "linear"),
    "progressive.start_image_size": (scaling.MIN_RESOLUTION - 1, scaling.MIN_RESOLUTION,
                                     128, 300, 301),
    "progressive.image_size_multiple": (1, 8, 32, 33, 128, 1000),
    "progressive.start_randaug_magnitude": (0.0, 10.0, 10.000001,
                                            augment.MAX_RANDAUG_MAGNITUDE + 1e-6),
    "progressive.start_mixup_alpha": (0.0, 0.2, 0.5, 0.500001),
    "progressive.start_cutmix_alpha": (0.0, 0.5, 0.500001),
    "progressive.start_dropout_rate": (0.0, 0.1, 0.2, 0.3, 0.300001, 0.999999, 1.0),
    "progressive.start_drop_path_rate": (0.0, 0.2, 0.200001, 1.0),
    "batch_size": (1, 2, 3, 1437, 1438),
    "eval_batch_size": (1, 7, 360, 361),
    "num_epochs": (1e-9, 0.001, 1.0), "num_train_steps": (1, 2, 3),
    "optimizer.name": ("sgd", "lars", "adamw", "adam", "RMSProp"),
    "optimizer.base_learning_rate": (1e-12, 1.0, 1e6),
    "optimizer.base_batch_size": (1, 2**20),
    "optimizer.momentum": _RATE_LIMITS, "optimizer.rmsprop_decay": _RATE_LIMITS,
    "optimizer.rmsprop_epsilon": (1e-12, 1e-300, 1.0),
    "optimizer.adamw_weight_decay": (0.0, 1e-12, 10.0),
    "optimizer.l2_weight_decay": (0.0, 1e-12, 10.0),
    "schedule.name": ("cosine", "polynomial", "step", "Cosine"),
    "schedule.warmup_epochs": (0.0, 349.0, 350.0, 1e-12),
    "schedule.decay_epochs": (1e-12, 1e-9, 350.0),
    "schedule.decay_rate": (1e-12, 1.0, 1.000001),
    "schedule.end_learning_rate_factor": (0.0, 1.0, 1.01),
    "schedule.power": (1e-12, 1.0, 100.0),
    "label_smoothing": _RATE_LIMITS, "ema_decay": _RATE_LIMITS,
    "bn_group_size": (0, 1, 2, 3),
    "eval_every_epochs": (1e-12, 1e-9, 1.0),
    "log_every_steps": (1,), "checkpoint_every_steps": (1,), "keep_checkpoints": (1,),
    "on_nonfinite": ("skip", "stop", "Skip", "raise"),
    "finetune.freeze_backbone_epochs": (0.0, 1e-9, 350.0, 351.0),
    "init_from": ("/nonexistent/checkpoint",),
    "data_dir": ("relative/path/that/does/not/exist",),
}
# Sizes that pass a `> 0` check but are absurd.
HUGE: dict[str, tuple] = {
    "model.resolution": (10**9,), "model.eval_resolution": (10**9,),
    "batch_size": (10**12,), "eval_batch_size": (10**12,),
    "progressive.num_stages": (10**6,), "progressive.start_image_size": (10**9,),
    "progressive.image_size_multiple": (10**9,),
    "num_train_steps": (10**12, 2**31), "seed": (2**64,),
    "model.num_classes": (10**12,), "model.phi": (1e6,), "model.width": (1e6,),
    "model.depth": (1e6,), "model.resolution_multiple": (10**9,),
    "input.randaug_layers": (10**6,), "input.shuffle_buffer": (10**12,),
    "input.crop_padding": (10**12,),
    "optimizer.base_batch_size": (10**12,),
    "log_every_steps": (10**12,), "checkpoint_every_steps": (10**12,),
    "keep_checkpoints": (10**9,), "bn_group_size": (10**6,),
}
TYPOS = ("modle.width", "model.resoluton", "model.Resolution", "batch_sise", "Batch_size",
         "progressive.num_stage", "progressive.start_image_sizes", "progresive.num_stages",
         "input.randaug_magnitud", "optimizer.learning_rate", "schedule.warmup_epoch",
         "model.dropout", "seeds", "model.resolution.value", "input.augment.name",
         "finetune.freeze_backbone", "evaluation.every_epochs", "eval_split_", "x")


@dataclasses.dataclass
class Case:
  base: str
  category: str
  key: str  # dotted, without "config."
  value: Any
  route: str  # "flag" | "assign"

  def __str__(self) -> str:
    return f"{self.base} [{self.route}] config.{self.key}={self.value!r} ({self.category})"


def _flag_text(value: Any) -> str:
  if isinstance(value, float) and not math.isfinite(value):
    return str(value)  # nan, inf, -inf: what float() parses
  return value if isinstance(value, str) else repr(value)


def _perturbations(key: str, default: Any) -> list[tuple[str, Any]]:
  """(category, value) pairs for one key: each applicable category."""
  types = validation.RULES.get(key, ((type(default),), None, None))[0]
  numeric = (int in types or float in types) and bool not in types
  out = []
  if str not in types:
    out.append(("wrong_type", "abc"))
  out.append(("wrong_type", [1, 2]))
  out.append(("wrong_type", {"a": 1}))
  if bool not in types:
    out.append(("wrong_type", True))
  if not numeric:
    out.append(("wrong_type", 1))
  if int in types and float not in types:
    out.append(("wrong_type", 2.5))
  if type(None) not in types:
    out.append(("wrong_type", None))
  out.append(("empty_string", ""))
  if numeric:
    out += [("boundary", v) for v in (0, -1, 1)]
    out += [("nan_inf", v) for v in (NAN, INF, -INF)]
    out += [("huge", v) for v in HUGE.get(key, (10**15,) if float not in types else (1e300,))]
  out += [("boundary", v) for v in LIMITS.get(key, ())]
  out += [("huge", v) for v in HUGE.get(key, ()) if not numeric]
  return out


def _route(value: Any, default_type: type, rng: random.Random) -> list[str]:
  """How a value can arrive: an override flag takes text (parsed to the field's type),
  a plain-dict config takes anything. Same-type values go one way, chosen at random;
  type-changing ones both ways."""
  textual = isinstance(value, (str, int, float, bool)) or value is None
  same_type = (type(value) is default_type or value is None
               or (isinstance(value, int) and default_type is float
                   and not isinstance(value, bool)))
  if not textual:
    return ["assign"]
  if same_type:
    return [rng.choice(["flag", "assign"])]
  return ["flag", "assign"]


def _pool() -> list[Case]:
  """Every perturbation of every key of the defaults, each on a base drawn at random."""
  rng = random.Random(SEED)
  bases = ["defaults", *configs.names(), *EXTRA_BASES]
  flat = metrics_log.flatten_config(defaults.get_config())
  cases = []
  for key, default in flat.items():
    field_type = type(default) if default is not None else validation.RULES[key][0][0]
    for category, value in _perturbations(key, default):
      if key.startswith("progressive.") and rng.random() < 0.8:
        base = rng.choice(V2_BASES)  # where progressive learning is on
      else:
        base = rng.choice(bases)
      for route in _route(value, field_type, rng):
        cases.append(Case(base, category, key, value, route))
  for key in TYPOS:
    for route in ("flag", "assign"):
      cases.append(Case(rng.choice(bases), "unknown_key", key, rng.choice([1, 2.5, "b0"]),
                        route))
  return cases


def generate_cases(num_cases: int = NUM_CASES) -> list[Case]:
  """`num_cases` of the pool, seeded: one of each (key, category), every unknown key and
  every base unperturbed, then a random draw of the rest."""
  rng = random.Random(SEED)
  pool = _pool()
  groups = collections.defaultdict(list)
  for i, case in enumerate(pool):
    groups[case.key, case.category].append(i)
  chosen = {rng.choice(members) for members in groups.values()}
  chosen |= {i for i, case in enumerate(pool) if case.category == "unknown_key"}
  rest = sorted(set(range(len(pool))) - chosen)
  chosen |= set(rng.sample(rest, min(len(rest), max(0, num_cases - len(chosen)))))
  bases = ["defaults", *configs.names(), *EXTRA_BASES]
  cases = [pool[i] for i in sorted(chosen)]
  cases += [Case(base, "unperturbed", "", None, "flag") for base in bases]
  rng.shuffle(cases)
  return cases


# ---------------------------------------------------------------------------------------
# Running a case.
# ---------------------------------------------------------------------------------------


class Runner:

  def __init__(self, data_dir: str, tmp_path):
    self.data_flags = ["--config.dataset=digits", f"--config.data_dir={data_dir}",
                       "--config.train_split=train", "--config.eval_split=test"]
    defaults_file = tmp_path / "defaults_config.py"
    defaults_file.write_text("from efficientnet_jax.config.defaults import get_config\n")
    self.paths = {"defaults": str(defaults_file)}
    self.loaded: dict[str, ml_collections.ConfigDict] = {}
    self.traced: dict[str, Any] = {}
    self.cwd = str(tmp_path)  # a relative data_dir lands here

  def _arg(self, base: str) -> str:
    return self.paths.get(base, base)

  def config(self, case: Case) -> ml_collections.ConfigDict:
    """The perturbed config, or the ValueError of the flags that refuse it."""
    if case.route == "flag":
      flags = [] if not case.key else [f"--config.{case.key}={_flag_text(case.value)}"]
      return sweep.load_config(self._arg(case.base), self.data_flags + flags)
    if case.base not in self.loaded:
      self.loaded[case.base] = sweep.load_config(self._arg(case.base), self.data_flags)
    raw = self.loaded[case.base].to_dict()
    *parents, leaf = case.key.split(".")
    node = raw
    for p in parents:  # a section that is missing, or a value where a section is given
      if not isinstance(node.get(p), dict):
        node[p] = {}
      node = node[p]
    node[leaf] = case.value
    return ml_collections.ConfigDict(raw)

  def state_shapes(self, config: ml_collections.ConfigDict, num_classes: int) -> Any:
    """The model variables' shapes, traced at the config's resolution (shapes cost nothing).

    Cached by what can change a shape: rates and BN constants are only multiplied in, so
    models that differ in those alone share one trace."""
    model, resolution = train_step.create_model(config, num_classes)
    if len(model.network.blocks) > MAX_TRACED_BLOCKS:
      small = ml_collections.ConfigDict(config.to_dict())
      small.model.depth = 0.01
      model, resolution = train_step.create_model(small, num_classes)
    key = repr((model.clone(dropout_rate=0.0, bn_momentum=0.0, bn_epsilon=0.0), resolution))
    if key not in self.traced:
      self.traced[key] = jax.eval_shape(
          model.init, jax.random.key(0),
          jax.ShapeDtypeStruct((1, resolution, resolution, 3), jnp.float32))
    return self.traced[key]

  def optimizer_shapes(self, tx, config, frozen: bool, variables: Any) -> Any:
    """The optimizer state's shapes, cached by the optimizer config and the model."""
    key = repr((config.optimizer.to_dict(), frozen, jax.tree.structure(variables)))
    if key not in self.traced:
      self.traced[key] = jax.eval_shape(tx.init, variables["params"])
    return self.traced[key]

  def build(self, config: ml_collections.ConfigDict) -> None:
    """What trainer._Run builds before its first compile, shapes only."""
    info = input_pipeline.dataset_info(config)
    train_step.create_model(config, info.num_classes)
    registry.scaling_of(config.model).eval_size  # noqa: B018 (may raise)
    steps_per_epoch = info.num_train_examples / config.batch_size
    num_steps = optimizers.total_steps(config, steps_per_epoch)
    # 0 steps (fewer epochs than one batch) is a run that only evaluates: not a crash.
    assert 0 <= num_steps < 2**31, f"{num_steps} steps do not fit the int32 step counter"
    max(1, int(round(config.eval_every_epochs * steps_per_epoch)))
    learning_rate_fn = optimizers.learning_rate_fn(config, steps_per_epoch)
    stages = progressive.stages(config, num_steps)
    for stage in {stages[0], stages[-1]}:
      train_step.create_model(progressive.stage_config(config, stage), info.num_classes)
    frozen_steps = int(round(config.finetune.freeze_backbone_epochs * steps_per_epoch))
    tx = freezing.freeze_backbone_for(optimizers.create_optimizer(config, learning_rate_fn),
                                      frozen_steps)
    jax.random.split(jax.random.key(config.seed))
    sharding.make_mesh(config.bn_group_size)
    variables = self.state_shapes(config, info.num_classes)
    self.optimizer_shapes(tx, config, frozen_steps > 0, variables)
    steps = jnp.asarray([0, 1, num_steps // 2, num_steps], jnp.int32)  # the state's int32 step
    rates = jax.vmap(learning_rate_fn)(steps)
    assert bool(jnp.all(jnp.isfinite(rates))), f"learning rates {rates} are not finite"

  def run(self, case: Case) -> tuple[str, str]:
    """(outcome, detail): "accepted", "refused" (by the flags or `trainer.validate`),
    "refused late" (by the set-up after `validate`, before any compile, naming the key:
    main.py still exits cleanly) or "FAILED"."""
    stage = "flags"
    try:
      config = self.config(case)
      stage = "validate"
      trainer.validate(config)
      stage = "set-up after validate"
      self.build(config)
    except ValueError as e:
      if not case.key or case.key not in str(e):
        return "FAILED", f"{stage}: ValueError not naming config.{case.key}: {e}"
      if stage == "set-up after validate":
        return "refused late", f"{stage}: {e}"
      return "refused", f"{stage}: {e}"
    except Exception as e:  # noqa: BLE001 (what the fuzzer is for)
      return "FAILED", f"{stage}: {type(e).__name__}: {str(e)[:300]}"
    if case.category == "unknown_key":
      return "FAILED", "an unknown key was accepted"
    return "accepted", ""


def test_the_generator_is_seeded_and_covers_every_category():
  cases, again = generate_cases(), generate_cases()
  assert [str(c) for c in cases] == [str(c) for c in again]
  assert len(cases) >= MIN_CASES
  categories = collections.Counter(c.category for c in cases)
  assert set(categories) == {"wrong_type", "boundary", "unknown_key", "empty_string",
                             "nan_inf", "huge", "unperturbed"}
  assert {c.base for c in cases} >= {"defaults", *configs.names()}
  assert sum(c.key.startswith("progressive.") for c in cases) >= 50
  assert {c.route for c in cases} == {"flag", "assign"}


def test_fuzzed_configs_are_accepted_or_refused_naming_the_key(data_dir, tmp_path,
                                                               monkeypatch):
  monkeypatch.chdir(tmp_path)
  runner, cases = Runner(data_dir, tmp_path), generate_cases()
  counts = collections.Counter()
  failures, late = [], []
  start = time.time()
  for case in cases:
    outcome, detail = runner.run(case)
    counts[case.category, outcome] += 1
    if outcome == "FAILED":
      failures.append(f"{case}: {detail}")
    elif outcome == "refused late":
      late.append(f"{case}: {detail}")
  elapsed = time.time() - start
  outcomes = ("refused", "refused late", "accepted", "FAILED")
  total = {o: sum(v for (_, outcome), v in counts.items() if outcome == o) for o in outcomes}
  lines = [f"config fuzzer (seed {SEED}): {len(cases)} cases in {elapsed:.1f} s: "
           + ", ".join(f"{total[o]} {o}" for o in outcomes)]
  for category in sorted({c for c, _ in counts}):
    lines.append(f"  {category:13s} " + ", ".join(f"{counts[category, o]} {o}"
                                                  for o in outcomes))
  lines += ["refused after validate (before any compile):", *late]
  print("\n".join(lines))
  assert len(cases) >= MIN_CASES
  assert not failures, f"{len(failures)} cases failed:\n" + "\n".join(failures)
  # Both outcomes occur in every category that can have both.
  for category in ("wrong_type", "boundary", "empty_string", "huge"):
    assert counts[category, "refused"] > 0, category
  for category in ("boundary", "unperturbed"):
    assert counts[category, "accepted"] > 0, category
  assert counts["unknown_key", "refused"] == sum(c.category == "unknown_key" for c in cases)


def test_an_override_below_a_string_value_is_refused_naming_the_key():
  with pytest.raises(ValueError, match="config.model.variant.x"):
    sweep.load_config("b0", ["--config.model.variant.x=1"])


def test_an_empty_train_split_is_refused_naming_the_key(data_dir, tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  outcome, detail = Runner(data_dir, tmp_path).run(
      Case("demo", "boundary", "train_split", "train[:0]", "assign"))
  assert outcome == "refused", detail
