"""Training command line: `efficientnet-train --config=configs/b0.py --workdir=DIR`
(the same as `python -m efficientnet_jax.main ...`). `--config` is a config file or, from
an installed package too, a config or model name: `--config=demo`, `--config=v2_s`
(see `efficientnet_jax.configs`).

Any config value can be overridden, e.g. `--config.batch_size=1024`. A workdir that holds
a checkpoint resumes from it.

Several processes (hosts) train one model with `--distributed`: each runs the same command
with its own `--process_id` (TPU pods, SLURM and Open MPI fill these in themselves).

The terminal shows a progress bar, one line per evaluation and a final summary; every log
line goes to <workdir>/train.log (`--verbose`: to the terminal too, as absl logs).

Exit status: 0 finished; 75 stopped by SIGTERM after saving a checkpoint (rerun to
resume); 76 stopped on a non-finite loss (the last checkpoint is kept); 77 a multi-process
run lost another process (rerun all of them to resume); 78 the disk filled while saving a
checkpoint or writing metrics (the path is named; free space and rerun to resume); 1 any
other error (e.g. a bad config, or a corrupt data shard, named in the message).

On Linux the process restarts itself once with glibc malloc settings for XLA's CPU
buffers (`host_memory`), which speed up CPU training a lot and are harmless elsewhere.
"""

from __future__ import annotations

import gc
import json
import logging as python_logging
import os
import sys
import time

from absl import app, flags, logging
from ml_collections import config_flags

from efficientnet_jax import compilation_cache, configs, host_memory, terminal

_CONFIG = config_flags.DEFINE_config_file("config", None, "Training config file.",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints and metrics.")
_DISTRIBUTED = flags.DEFINE_bool(
    "distributed", False, "Run as one of several processes: call jax.distributed.initialize() "
    "first. TPU pods, SLURM and Open MPI are detected; elsewhere pass --coordinator_address "
    "(or set JAX_COORDINATOR_ADDRESS), --num_processes and --process_id.")
_COORDINATOR_ADDRESS = flags.DEFINE_string(
    "coordinator_address", None, "With --distributed: host:port of process 0, the same for "
    "every process (process 0 listens on that port).")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None,
                                      "With --distributed: how many processes take part.")
_PROCESS_ID = flags.DEFINE_integer("process_id", None,
                                   "With --distributed: this process's id, 0..num_processes-1.")
_HEARTBEAT_TIMEOUT = flags.DEFINE_integer(
    "heartbeat_timeout_s", 100, "With --distributed: a process silent this long counts as "
    "dead, and the others stop with an error instead of waiting for it (100: JAX's default).")
_VERBOSE = flags.DEFINE_bool(
    "verbose", False, "Every log line on the terminal (no progress bar) and the final "
    "results as one JSON line, instead of the progress bar and a summary.")
flags.mark_flags_as_required(["config", "workdir"])

EXIT_PREEMPTED = 75  # EX_TEMPFAIL: try again (schedulers may requeue on it)
EXIT_NONFINITE = 76
EXIT_LOST_PROCESS = 77
EXIT_DISK_FULL = 78  # EX_CONFIG's number; nothing is lost, rerun after freeing space


class _QuietCheckpointing(python_logging.Filter):
  """Orbax logs every phase of every save at INFO; keep its warnings and errors."""

  def filter(self, record: python_logging.LogRecord) -> bool:
    return record.levelno >= python_logging.WARNING or "/orbax/" not in record.pathname


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  host_memory.reexec_with_fast_malloc()
  start_time = time.time()
  # Python's garbage collector, run over the millions of objects TensorFlow's and JAX's
  # imports create, took ~2.5 s of a ~10 s start: off while importing, then those objects
  # are frozen (never scanned again). A 20-step tiny run: 36–39 s → 29–33 s.
  gc.disable()
  import jax  # after flag parsing, so --distributed can initialise it first
  if _DISTRIBUTED.value:
    # On CPU the processes' collectives go through gloo over TCP (JAX's default).
    jax.distributed.initialize(
        coordinator_address=_COORDINATOR_ADDRESS.value, num_processes=_NUM_PROCESSES.value,
        process_id=_PROCESS_ID.value, heartbeat_timeout_seconds=_HEARTBEAT_TIMEOUT.value)
  compilation_cache.enable()  # a restarted run loads its compiled steps from disk
  log_file = None if _VERBOSE.value else _log_file(
      _WORKDIR.value, jax.process_index() if _DISTRIBUTED.value else 0)
  if log_file:
    terminal.quiet_output(log_file)
  terminal.add_log_filter(_QuietCheckpointing())
  with terminal.native_stderr_into_log():
    from efficientnet_jax.data import tf_devices
    tf_devices.hide_accelerators_from_tf()  # TF only reads data here: the devices are JAX's
    import tensorflow as tf
    from efficientnet_jax.data import input_pipeline
    from efficientnet_jax.training import metrics_log, preemption, train_step, trainer
  gc.freeze()
  gc.enable()
  logging.info("JAX process %d/%d, %d local devices (%s)", jax.process_index(),
               jax.process_count(), jax.local_device_count(), jax.default_backend())
  try:
    results = trainer.train_and_evaluate(_CONFIG.value, _WORKDIR.value)
  except preemption.Preempted as e:
    logging.warning("%s", e)
    sys.exit(EXIT_PREEMPTED)
  except train_step.NonFiniteError as e:
    logging.error("%s", e)
    sys.exit(EXIT_NONFINITE)
  except metrics_log.DiskFullError as e:
    # Said on the terminal first: train.log may sit on the full disk too.
    print(f"error: {e}", file=sys.stderr, flush=True)
    python_logging.raiseExceptions = False  # a log line that cannot be written is dropped
    logging.error("%s", e)
    sys.exit(EXIT_DISK_FULL)
  except ValueError as e:  # a config, a file or a memory need that cannot work: its message
    logging.error("%s", e)
    sys.exit(f"error: {e}")
  except tf.errors.DataLossError as e:
    # TF's message gives a byte offset but no file: find and name the corrupt shards.
    logging.error("%s", input_pipeline.explain_data_loss(_CONFIG.value, e))
    sys.exit(1)
  except jax.errors.JaxRuntimeError as e:
    if jax.process_count() == 1:
      raise
    logging.exception(
        "Process %d of %d stopped: a computation shared with the other processes failed "
        "(%s). Another process of this run has most likely died or lost its connection; its "
        "own log says why. Restart all %d processes with the same command to resume from "
        "the last checkpoint in %s/checkpoints.", jax.process_index(), jax.process_count(),
        str(e).split("\n", 1)[0], jax.process_count(), _WORKDIR.value)
    logging.flush()
    # Not sys.exit: jax.distributed's exit handler would wait for the lost process at a
    # shutdown barrier until the heartbeat timeout, then abort over this message.
    os._exit(EXIT_LOST_PROCESS)
  if jax.process_index() != 0:
    return
  if not log_file:
    print(json.dumps({"final_" + k: v for k, v in results.items()}, sort_keys=True))
  else:
    from efficientnet_jax.training import run_summary
    print(run_summary.final_summary(_CONFIG.value, _WORKDIR.value, results,
                                    time.time() - start_time, log_file))


def _log_file(workdir: str, process_index: int) -> str | None:
  """<workdir>/train.log (train.<i>.log for process i > 0); None for a remote workdir
  (gs://…), whose run logs to the terminal as with --verbose: Python's file logging
  writes local files only."""
  if "://" in workdir:
    return None
  return os.path.join(workdir, "train.log" if process_index == 0
                      else f"train.{process_index}.log")


def _resolve_config_flag(argv: list[str]) -> list[str]:
  """argv with --config's name (demo, v2_s, …) replaced by the packaged file it means."""
  resolved = list(argv)
  for i, arg in enumerate(resolved):
    try:
      if arg.startswith("--config="):
        resolved[i] = "--config=" + configs.resolve(arg[len("--config="):])
      elif arg == "--config" and i + 1 < len(resolved):
        resolved[i + 1] = configs.resolve(resolved[i + 1])
    except ValueError as e:
      sys.exit(f"error: {e}")
  return resolved


if __name__ == "__main__":
  app.run(main, argv=_resolve_config_flag(sys.argv))
