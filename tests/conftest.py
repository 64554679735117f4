"""Test-session settings (XLA and TensorFlow quiet and on the CPU, compiling fast) and the
fixtures several test files share: the digits data, tiny training runs and their states.

The plain helpers (`tiny_config`, `latest_state`) import what they need when called, so
that a child process can import them (`from tests.conftest import tiny_config`) without
this file's session settings doing more than set environment defaults.
"""

import gc
import json
import os

import pytest

from tests.session_cache import shared_once

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# Compilation dominates test time on CPU; the cheaper LLVM pipeline halves it and
# leaves float32 results within the tolerances the tests assert.
# XLA's older loop emitters compile a tiny train step in 7 s instead of 11.5 s.
os.environ.setdefault("XLA_FLAGS", "--xla_backend_optimization_level=0 "
                      "--xla_llvm_disable_expensive_passes=true "
                      "--xla_cpu_use_fusion_emitters=false")
# Many tests (and the training subprocesses they start) compile the same small train and
# eval steps: JAX's persistent compilation cache, shared by the xdist workers and their
# children, compiles each once (a cache hit measured 45 s → 7 s for a tiny train step).
# The cache is keyed by the program and the jax/XLA version, so stale entries cannot hit;
# a size bound turns on JAX's file lock, so concurrent writers cannot tear an entry.
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))), ".pytest_cache",
    "jax_compilation_cache"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")
os.environ.setdefault("JAX_COMPILATION_CACHE_MAX_SIZE", str(4 * 2**30))

# `make test` hands whole files to two xdist workers (--dist loadfile) in collection order
# (--no-loadscope-reorder). The longest files go first, so that the short ones fill in at
# the end and both workers finish at about the same time (README "Tests" has the timings).
LONGEST_FILES_FIRST = ("test_reliability.py", "test_progressive.py", "test_distributed.py",
                       "test_train.py",
                       "test_convert_keras.py", "test_finetune.py", "test_inference.py",
                       "test_convert_timm.py", "test_wheel.py", "test_model.py")


def pytest_configure(config):
  # Collection imports TensorFlow, Keras, JAX and flax: Python's garbage collector, run over
  # the millions of objects they create, takes a quarter of that time. Off while collecting;
  # then those objects are frozen (never scanned again) and collection is back on.
  del config
  gc.disable()


def pytest_collection_modifyitems(items):
  def rank(item):
    name = os.path.basename(str(item.path))
    return LONGEST_FILES_FIRST.index(name) if name in LONGEST_FILES_FIRST else len(
        LONGEST_FILES_FIRST)
  items.sort(key=rank)  # stable: the tests of a file keep their order


def pytest_collection_finish(session):
  gc.freeze()
  gc.enable()


def tiny_config(data_dir, **overrides):
  """The demo config shrunk to compile and run in seconds; overrides by dotted key."""
  from efficientnet_jax.configs import demo
  config = demo.get_config()
  config.data_dir = data_dir
  config.model.width = 0.25
  config.model.depth = 0.25
  config.batch_size = 16
  config.num_train_steps = 8
  config.log_every_steps = 4
  config.checkpoint_every_steps = 4
  config.eval_every_epochs = 1000.0  # only at the end
  config.eval_batch_size = 64
  config.input.shuffle_buffer = 256
  return with_overrides(config, **overrides)


def with_overrides(config, **overrides):
  """`config` with values set by dotted key ("optimizer.name"="sgd" as a ** argument)."""
  for key, value in overrides.items():
    node = config
    *parents, leaf = key.split(".")
    for p in parents:
      node = node[p]
    node[leaf] = value
  return config


def latest_state(workdir):
  """(step, state as saved) of the newest checkpoint of a training workdir."""
  import orbax.checkpoint as ocp
  with ocp.CheckpointManager(os.path.join(workdir, "checkpoints")) as manager:
    step = manager.latest_step()
    return step, manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore()))["state"]


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory):
  """digits prepared once for the session (a few seconds)."""
  from efficientnet_jax.data import input_pipeline
  path = str(tmp_path_factory.mktemp("tfds"))
  input_pipeline.dataset_info(tiny_config(path))
  return path


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory, data_dir):
  """`tiny_run(num_train_steps)`: the workdir of `tiny_config(data_dir,
  num_train_steps=...)` trained from scratch, once per test session (shared between files
  and workers: copy it to change it)."""
  from efficientnet_jax.training import trainer

  def workdir(num_train_steps: int) -> str:
    return str(shared_once(
        tmp_path_factory, f"tiny_run_{num_train_steps}",
        lambda path: trainer.train_and_evaluate(
            tiny_config(data_dir, num_train_steps=num_train_steps), str(path))))
  return workdir


def tiny_digits_config(data_dir):
  """configs/demo.py at width/depth 0.25 for 150 steps: seconds of training on a CPU.

  Faster BN statistics (momentum 0.9) and a constant learning rate so that so few steps
  learn something (about 84% test top-1 with these settings).
  """
  from efficientnet_jax.configs import demo
  config = demo.get_config()
  config.data_dir = str(data_dir)
  config.model.width = config.model.depth = 0.25
  config.batch_size = 32
  config.num_train_steps = 150
  config.schedule.warmup_epochs = 0.0
  config.optimizer.base_learning_rate = 0.04  # RMSProp at 0.005 for batch 32
  config.model.bn_momentum = 0.9
  config.ema_decay = 0.9
  config.eval_every_epochs = 1000.0  # evaluate once, at the end
  config.log_every_steps = 20
  config.checkpoint_every_steps = 1000
  return config


@pytest.fixture(scope="session")
def trained_digits(tmp_path_factory):
  """(workdir, final eval metrics) of a tiny digits run (`tiny_digits_config`), trained
  once per test session; its data dir is the workdir's sibling "tfds"."""
  def build(workdir):
    from efficientnet_jax.training import trainer
    results = trainer.train_and_evaluate(tiny_digits_config(workdir.parent / "tfds"),
                                         str(workdir))
    (workdir / "final_eval.json").write_text(json.dumps(results))

  workdir = shared_once(tmp_path_factory, "digits_tiny", build)
  return workdir, json.loads((workdir / "final_eval.json").read_text())
