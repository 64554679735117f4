"""Test-session settings: keep XLA and TensorFlow quiet and on the CPU, compile fast."""

import gc
import os

# Collection imports TensorFlow, Keras, JAX and flax: Python's garbage collector, run over
# the millions of objects they create, takes a quarter of that time. Off while collecting;
# then those objects are frozen (never scanned again) and collection is back on.
gc.disable()
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
LONGEST_FILES_FIRST = ("test_reliability.py", "test_distributed.py", "test_train.py",
                       "test_convert_keras.py", "test_finetune.py", "test_inference.py",
                       "test_convert_timm.py", "test_model.py")


def pytest_collection_modifyitems(items):
  def rank(item):
    name = os.path.basename(str(item.path))
    return LONGEST_FILES_FIRST.index(name) if name in LONGEST_FILES_FIRST else len(
        LONGEST_FILES_FIRST)
  items.sort(key=rank)  # stable: the tests of a file keep their order


def pytest_collection_finish(session):
  gc.freeze()
  gc.enable()
