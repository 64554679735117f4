"""Checkpoints of a workdir: Orbax managers for the latest and the best state, and the
config that the workdir was started with.

Layout of a workdir:
  config.json          the resolved config of the first run; a resume must match it
  checkpoints/<step>/  the last `config.keep_checkpoints` states, every
                       `config.checkpoint_every_steps` steps and at the end (async)
  best/<step>/         the state with the best eval top-1 so far

A disk that fills during a save (Orbax writes asynchronously, so the error arrives at the
next save or at close) raises `metrics_log.DiskFullError` naming the directory: the save
in progress stays an `<step>.orbax-checkpoint-tmp` directory that a resume ignores, and
the previous checkpoints are untouched.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import time
from typing import Any, Iterator

from absl import logging
from etils import epath
import flax
import jax
import ml_collections
import orbax.checkpoint as ocp

from efficientnet_jax.training import metrics_log

# Keys that may change when a run resumes: they don't change what is being trained.
RESUMABLE_KEYS = frozenset({
    "num_epochs", "num_train_steps", "log_every_steps", "checkpoint_every_steps",
    "keep_checkpoints", "eval_every_epochs", "eval_batch_size", "eval_raw_weights",
    "data_dir", "allow_config_change", "input.cache_eval",
})


def config_differences(old: dict, new: dict) -> list[str]:
  """'key: old → new' for every key that differs, except RESUMABLE_KEYS."""
  old_flat, new_flat = metrics_log.flatten_config(old), metrics_log.flatten_config(new)
  return [f"{k}: {old_flat.get(k)!r} -> {new_flat.get(k)!r}"
          for k in sorted(set(old_flat) | set(new_flat))
          if k not in RESUMABLE_KEYS and old_flat.get(k) != new_flat.get(k)]


def _abstract(state: Any, sharding: jax.sharding.Sharding) -> Any:
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding),
                      state)


class Checkpoints:
  """The latest/best checkpoint managers of one workdir, and its config check."""

  def __init__(self, workdir: str, config: ml_collections.ConfigDict):
    # Orbax needs absolute paths; `--workdir=runs/b0` is relative to where it was started.
    self.workdir = workdir if "://" in workdir else os.path.abspath(workdir)
    epath.Path(self.workdir).mkdir(parents=True, exist_ok=True)
    self._check_config(config)
    # Both managers may save the same step at once (the final step, an eval step). With
    # several processes Orbax names its barriers after the step: without a prefix of their
    # own, the two saves would meet at one barrier and fail or hang.
    self.latest = ocp.CheckpointManager(
        os.path.join(self.workdir, "checkpoints"),
        options=ocp.CheckpointManagerOptions(
            max_to_keep=config.keep_checkpoints,
            save_interval_steps=config.checkpoint_every_steps, create=True,
            multiprocessing_options=ocp.options.MultiprocessingOptions(
                barrier_sync_key_prefix="latest")))
    self.best = ocp.CheckpointManager(
        os.path.join(self.workdir, "best"),
        options=ocp.CheckpointManagerOptions(
            max_to_keep=1, best_fn=lambda metrics: metrics["eval_top1"], best_mode="max",
            keep_checkpoints_without_metrics=False, create=True,
            multiprocessing_options=ocp.options.MultiprocessingOptions(
                barrier_sync_key_prefix="best")))

  def _check_config(self, config: ml_collections.ConfigDict) -> None:
    path = epath.Path(self.workdir) / "config.json"
    current = json.loads(config.to_json_best_effort())
    if path.exists():
      saved = json.loads(path.read_text())
      differences = config_differences(saved, current)
      if differences and not config.allow_config_change:
        raise ValueError(
            f"workdir {self.workdir} holds a run with a different config; resuming it with "
            "this one would mix two experiments. Differences:\n  " + "\n  ".join(differences)
            + "\nUse a new --workdir, or pass --config.allow_config_change=True to resume "
            "anyway.")
      if differences:
        logging.warning("Resuming with a changed config:\n  %s", "\n  ".join(differences))
      return
    if jax.process_index() == 0:
      try:
        path.write_text(json.dumps(current, indent=2, sort_keys=True))
      except OSError as e:
        if not metrics_log.is_disk_full(e):
          raise
        path.unlink(missing_ok=True)  # a cut-short config.json would fail the resume
        raise metrics_log.DiskFullError(os.fspath(path), "the run's config", e) from e

  def restore_or_init(self, state: Any, sharding: jax.sharding.Sharding) -> Any:
    """The newest readable saved state of this workdir, or `state` if it has none.

    A checkpoint that cannot be read (cut short by a crash, corrupted on disk) is
    reported and moved aside to `<step>.unreadable-<time>` — kept for inspection, never
    deleted — and the previous one is tried.
    """
    target = ocp.args.Composite(state=ocp.args.StandardRestore(_abstract(state, sharding)))
    for step in sorted(self.latest.all_steps(), reverse=True):
      try:
        restored = self.latest.restore(step, args=target)
      except Exception as e:  # noqa: BLE001 - any failure to read means: try an older one
        logging.error("Checkpoint %s/checkpoints/%d cannot be read (%s: %s); moving it "
                      "aside and trying the previous one.", self.workdir, step,
                      type(e).__name__, str(e)[:500])
        if jax.process_index() == 0:
          directory = epath.Path(self.workdir) / "checkpoints" / str(step)
          directory.rename(directory.parent / f"{step}.unreadable-{int(time.time())}")
        self.latest.reload()
        continue
      logging.info("Resuming from %s/checkpoints/%d", self.workdir, step)
      return restored["state"]
    return state

  def save(self, step: int, state: Any, force: bool = False) -> None:
    with _full_disk_reported(self.latest, f"a checkpoint (at step {step})"):
      self.latest.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state)),
                       force=force)

  def save_best(self, step: int, state: Any, top1: float) -> None:
    with _full_disk_reported(self.best, f"a checkpoint (the best, at step {step})"):
      self.best.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state)),
                     metrics={"eval_top1": float(top1)}, force=True)

  def close(self) -> None:
    """Completes the saves in progress and closes both managers, even when one fails."""
    errors = []
    for manager in (self.latest, self.best):
      try:
        with _full_disk_reported(manager, "a checkpoint (the save in progress)"):
          manager.wait_until_finished()
      except Exception as e:  # noqa: BLE001 - the other manager is still closed
        errors.append(e)
      manager.close()
    if errors:
      raise errors[0]


@contextlib.contextmanager
def _full_disk_reported(manager: ocp.CheckpointManager, what: str) -> Iterator[None]:
  """Orbax/TensorStore's ENOSPC (an OSError or a RESOURCE_EXHAUSTED ValueError, maybe from
  the previous async save) as one `DiskFullError` naming the directory."""
  try:
    yield
  except Exception as e:
    if not metrics_log.is_disk_full(e):
      raise
    raise metrics_log.DiskFullError(os.fspath(manager.directory), what) from e


class WorkdirLock:
  """An exclusive lock on a local workdir, so two runs never write it at once.

  `fcntl.flock` is released by the kernel when the process dies, even by SIGKILL, so a
  crashed run never leaves a stale lock behind. Object-store workdirs (gs://) cannot be
  locked this way and are not locked.
  """

  def __init__(self, workdir: str, enabled: bool = True):
    self.file = None
    if not enabled:  # processes other than 0 of a multi-host run share process 0's lock
      return
    if "://" in workdir:
      logging.warning("workdir %s is not local: not locked against concurrent runs.", workdir)
      return
    os.makedirs(workdir, exist_ok=True)
    path = os.path.join(workdir, "lock")
    self.file = open(path, "a+")
    try:
      fcntl.flock(self.file, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      self.file.seek(0)
      owner = self.file.read().strip() or "another process"
      self.file.close()
      raise ValueError(f"workdir {workdir} is in use by {owner}; two runs must not write "
                       "one workdir. Wait for it to finish, stop it, or use another "
                       "--workdir.") from None
    self.file.seek(0)
    self.file.truncate()
    self.file.write(f"pid {os.getpid()} on {socket.gethostname()}")
    self.file.flush()

  def release(self) -> None:
    if self.file is not None:
      fcntl.flock(self.file, fcntl.LOCK_UN)
      self.file.close()
      self.file = None

  def __enter__(self) -> "WorkdirLock":
    return self

  def __exit__(self, *exc_info) -> None:
    self.release()


def load_variables(path: str) -> dict[str, Any]:
  """{'params', 'batch_stats'} of a training workdir (EMA weights of its latest
  checkpoint) or of a directory of converted weights."""
  checkpoints = os.path.abspath(os.path.join(path, "checkpoints"))  # Orbax wants absolute
  if os.path.isdir(checkpoints):
    with ocp.CheckpointManager(checkpoints) as manager:
      step = manager.latest_step()
      if step is None:
        raise ValueError(f"config.init_from={path!r}: no checkpoint in {checkpoints}")
      state = manager.restore(step, args=ocp.args.Composite(
          state=ocp.args.StandardRestore()))["state"]
    return {"params": state["ema_params"], "batch_stats": state["ema_batch_stats"]}
  if not os.path.isdir(path):
    raise ValueError(f"config.init_from={path!r} is not a directory")
  return ocp.StandardCheckpointer().restore(os.path.abspath(path))


def merge_pretrained(state: Any, pretrained: dict[str, Any], source: str) -> Any:
  """`state` with every pretrained variable whose path and shape match copied in.

  A classifier of another size (fine-tuning to new classes) is left as initialised; any
  other missing, extra or mis-shaped variable is an error that names it.
  """
  new = {}
  problems, skipped = [], []
  for collection in ("params", "batch_stats"):
    target = flax.traverse_util.flatten_dict(getattr(state, collection), sep="/")
    source_flat = flax.traverse_util.flatten_dict(pretrained.get(collection, {}), sep="/")
    merged = {}
    for name, value in target.items():
      if name not in source_flat:
        problems.append(f"{collection}/{name} missing from {source}")
      elif tuple(source_flat[name].shape) != tuple(value.shape):
        if name.startswith("classifier/"):
          skipped.append(name)
          merged[name] = value
          continue
        problems.append(f"{collection}/{name}: shape {tuple(source_flat[name].shape)} in "
                        f"{source}, model has {tuple(value.shape)}")
      else:
        merged[name] = jax.device_put(source_flat[name].astype(value.dtype), value.sharding)
    problems += [f"{collection}/{name} in {source} is not a model variable"
                 for name in source_flat if name not in target]
    new[collection] = flax.traverse_util.unflatten_dict(merged, sep="/") if not problems else None
  if problems:
    raise ValueError("config.init_from does not fit the model:\n  " + "\n  ".join(problems))
  if skipped:
    logging.info("init_from: new classifier (%s has another size)", ", ".join(skipped))
  # The EMA gets its own copy: the train step donates the state, and one buffer cannot be
  # donated twice.
  copy = lambda tree: jax.tree.map(lambda x: x.copy(), tree)
  return state.replace(params=new["params"], batch_stats=new["batch_stats"],
                       ema_params=copy(new["params"]), ema_batch_stats=copy(new["batch_stats"]))
