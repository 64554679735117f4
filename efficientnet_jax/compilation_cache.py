"""JAX's persistent compilation cache for the commands: a program compiled once (the
predict or eval step of a model, a run's train step) loads from disk the next time,
instead of compiling again (seconds on a CPU, minutes for big models on a TPU).

The cache lives in $JAX_COMPILATION_CACHE_DIR when that is set (JAX's own setting), else
in the user's cache directory; entries are keyed by the program and the jax/XLA version,
so a stale one cannot be used, and the directory is kept under MAX_SIZE_BYTES (JAX evicts
the least recently used entries).
"""

from __future__ import annotations

import os

MAX_SIZE_BYTES = 4 * 2**30


def default_directory() -> str:
  base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
  return os.path.join(base, "efficientnet_jax", "jax_compilation_cache")


def enable() -> None:
  """Turns the cache on for this process, unless the environment already configures it."""
  import jax
  if os.environ.get("JAX_COMPILATION_CACHE_DIR"):
    return  # JAX reads it (and its other JAX_* cache settings) itself
  jax.config.update("jax_compilation_cache_dir", default_directory())
  jax.config.update("jax_compilation_cache_max_size", MAX_SIZE_BYTES)
