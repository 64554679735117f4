"""Command line entry: `python -m efficientnet_jax.main --config=configs/b0.py --workdir=DIR`.

Any config value can be overridden, e.g. `--config.batch_size=1024`. A workdir that holds
a checkpoint resumes from it.

Exit status: 0 finished; 75 stopped by SIGTERM after saving a checkpoint (rerun to
resume); 76 stopped on a non-finite loss (the last checkpoint is kept); 1 any other error
(e.g. a bad config, named in the message, before anything was computed).

On Linux the process restarts itself once with transparent huge pages for malloc
(`host_memory`), which speeds up CPU training a lot and is harmless elsewhere.
"""

from __future__ import annotations

import json
import logging as python_logging
import sys

from absl import app, flags, logging
from ml_collections import config_flags

from efficientnet_jax import host_memory

_CONFIG = config_flags.DEFINE_config_file("config", None, "Training config file.",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints and metrics.")
_DISTRIBUTED = flags.DEFINE_bool(
    "distributed", False, "Call jax.distributed.initialize() first (multi-host TPU pods, "
    "SLURM, or JAX_COORDINATOR_ADDRESS/JAX_NUM_PROCESSES/JAX_PROCESS_ID set).")
flags.mark_flags_as_required(["config", "workdir"])

EXIT_PREEMPTED = 75  # EX_TEMPFAIL: try again (schedulers may requeue on it)
EXIT_NONFINITE = 76


class _QuietCheckpointing(python_logging.Filter):
  """Orbax logs every phase of every save at INFO; keep its warnings and errors."""

  def filter(self, record: python_logging.LogRecord) -> bool:
    return record.levelno >= python_logging.WARNING or "/orbax/" not in record.pathname


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  host_memory.reexec_with_transparent_hugepages()
  logging.get_absl_handler().addFilter(_QuietCheckpointing())
  import jax  # after flag parsing, so --distributed can initialise it first
  if _DISTRIBUTED.value:
    jax.distributed.initialize()
  from efficientnet_jax import train
  logging.info("JAX process %d/%d, %d local devices (%s)", jax.process_index(),
               jax.process_count(), jax.local_device_count(), jax.default_backend())
  try:
    results = train.train_and_evaluate(_CONFIG.value, _WORKDIR.value)
  except train.Preempted as e:
    logging.warning("%s", e)
    sys.exit(EXIT_PREEMPTED)
  except train.NonFiniteError as e:
    logging.error("%s", e)
    sys.exit(EXIT_NONFINITE)
  if jax.process_index() == 0:
    print(json.dumps({"final_" + k: v for k, v in results.items()}, sort_keys=True))


def run():
  """Console script `efficientnet-train`."""
  app.run(main)


if __name__ == "__main__":
  run()
