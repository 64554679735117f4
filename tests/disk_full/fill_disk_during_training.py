"""Trains on a disk that fills up, then resumes after space is freed; run by
tests/test_data_faults.py inside `unshare -rm` (its own user and mount namespace), where it
may mount a size-limited tmpfs without being root on the machine.

  python fill_disk_during_training.py MOUNT_POINT DATA_DIR OUT_DIR

Two faults, each in its own workdir on the tmpfs:
- "checkpoint": the command line (`efficientnet_jax.main`) on a disk with room for the
  first checkpoint only: a later save meets ENOSPC.
- "metrics": in-process, the disk is filled just before the metrics write of step 8.
Each run is then rerun after the filler file is deleted. The workdirs are copied to
OUT_DIR and what was seen goes to OUT_DIR/results.json, for the test to check.
"""

import json
import os
import shutil
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, REPO)

MiB = 2**20
TMPFS_SIZE = 48 * MiB
ROOM_LEFT = 4 * MiB  # one tiny checkpoint takes about 2.4 MiB


def fill(mount: str, leave: int = 0) -> str:
  """A file that takes all but `leave` bytes of the mount's free space (all: ENOSPC)."""
  path = os.path.join(mount, "filler")
  free = os.statvfs(mount).f_bavail * os.statvfs(mount).f_frsize
  with open(path, "ab") as f:
    try:
      for _ in range(max(0, free - leave) // (64 * 1024) + 1):
        f.write(b"\0" * (64 * 1024))
        f.flush()
    except OSError:
      pass  # full
  return path


def listing(workdir: str) -> dict:
  checkpoints = os.path.join(workdir, "checkpoints")
  metrics = os.path.join(workdir, "metrics.jsonl")
  return {"checkpoints": sorted(os.listdir(checkpoints)) if os.path.isdir(checkpoints) else [],
          "metrics": open(metrics).read() if os.path.exists(metrics) else "",
          "files": sorted(os.listdir(workdir))}


def checkpoint_fault(mount: str, data_dir: str, out: str) -> dict:
  workdir = os.path.join(mount, "checkpoint")
  command = [sys.executable, "-m", "efficientnet_jax.main", "--config=configs/demo.py",
             f"--workdir={workdir}", f"--config.data_dir={data_dir}",
             "--config.model.width=0.25", "--config.model.depth=0.25",
             "--config.batch_size=16", "--config.num_train_steps=12",
             "--config.log_every_steps=4", "--config.checkpoint_every_steps=4",
             "--config.eval_every_epochs=1000.0", "--config.eval_batch_size=64",
             "--config.input.shuffle_buffer=256"]
  env = dict(os.environ, PYTHONPATH=REPO)
  filler = fill(mount, leave=ROOM_LEFT)
  full = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True,
                        timeout=600)
  seen = {"full_exit": full.returncode, "full_stderr": full.stderr[-4000:],
          "full_log": open(os.path.join(workdir, "train.log")).read()[-4000:],
          "after_full": listing(workdir)}
  os.remove(filler)  # space freed: the same command resumes
  again = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True,
                         timeout=600)
  seen.update(resumed_exit=again.returncode, resumed_stderr=again.stderr[-4000:],
              after_resume=listing(workdir))
  shutil.copytree(workdir, os.path.join(out, "checkpoint"))
  shutil.rmtree(workdir)  # the next fault starts from an empty disk
  seen["free_after"] = os.statvfs(mount).f_bavail * os.statvfs(mount).f_frsize
  return seen


def metrics_fault(mount: str, data_dir: str, out: str) -> dict:
  from tests.conftest import tiny_config
  from efficientnet_jax.training import metrics_log, trainer

  workdir = os.path.join(mount, "metrics")
  write = metrics_log.JsonlWriter.write
  seen = {}

  def write_on_a_full_disk(self, step, metrics):
    if step == 8 and "error" not in seen:
      while any(name.endswith("-tmp") for name in listing(workdir)["checkpoints"]):
        time.sleep(0.05)  # the async save of step 4 completes first: a metrics fault only
      seen["before_fill"] = listing(workdir)
      seen["filler"] = fill(mount)
    return write(self, step, metrics)

  metrics_log.JsonlWriter.write = write_on_a_full_disk
  try:
    trainer.train_and_evaluate(tiny_config(data_dir, num_train_steps=12), workdir)
  except metrics_log.DiskFullError as e:
    seen["error"] = f"{type(e).__name__}: {e}"
  else:
    seen["error"] = None
  seen["after_full"] = listing(workdir)
  os.remove(seen["filler"])
  trainer.train_and_evaluate(tiny_config(data_dir, num_train_steps=12), workdir)
  seen["after_resume"] = listing(workdir)
  shutil.copytree(workdir, os.path.join(out, "metrics"))
  return seen


def main() -> None:
  mount, data_dir, out = sys.argv[1:4]
  subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={TMPFS_SIZE}", "tmpfs", mount],
                 check=True)
  results = {"checkpoint": checkpoint_fault(mount, data_dir, out),
             "metrics": metrics_fault(mount, data_dir, out)}
  with open(os.path.join(out, "results.json"), "w") as f:
    json.dump(results, f, indent=1)


if __name__ == "__main__":
  main()
