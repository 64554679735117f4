"""Training as 2 processes with jax.distributed on this machine: 2 simulated CPU devices
each, collectives through gloo over localhost, launched through `main.py --distributed`.

* The 2-process run ends with the parameters of a 1-process run on 4 devices that sees the
  same global batches; only process 0 writes metrics; the eval counts every example once.
* SIGKILL of either process makes the other one exit with an error that says so, within
  the heartbeat timeout (seconds), instead of waiting for it forever.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest
from PIL import Image

from efficientnet_jax.training import metrics_log

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
pytestmark = [pytest.mark.slow, pytest.mark.faults]

TRAIN_IMAGES, TEST_IMAGES, CLASSES = 32, 11, 4
PROCESSES, DEVICES_PER_PROCESS = 2, 2
BATCH = 8  # global: 4 per process, 2 per device
NUM_STEPS = 6  # 4 steps per epoch: the runs go past an epoch boundary
HEARTBEAT_TIMEOUT_S = 10
EXIT_LOST_PROCESS = 77


@pytest.fixture(scope="module")
def image_root(tmp_path_factory) -> str:
  """A folder dataset of random 32x32 PNGs (the model's resolution): 32 train and 11 test
  images in 4 classes."""
  root = tmp_path_factory.mktemp("images")
  rng = np.random.default_rng(0)
  for split, count in (("train", TRAIN_IMAGES), ("test", TEST_IMAGES)):
    for i in range(count):
      folder = root / split / f"class{i % CLASSES}"
      folder.mkdir(parents=True, exist_ok=True)
      pixels = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
      Image.fromarray(pixels).save(folder / f"{i}.png")
  return str(root)


def interleaved_split(num_examples: int, processes: int, local_batch: int) -> str:
  """The split string whose stored order is what `processes` processes feed as global
  batches: batch k = process 0's k-th local batch, then process 1's, ...

  Process p reads the contiguous part p of the split (as tfds.even_splits; equal parts
  here) in stored order, and `make_array_from_process_local_data` lays the processes'
  local batches one after the other along the batch axis (process 0's devices come first
  in the mesh).
  """
  part = num_examples // processes
  return "+".join(f"train[{p * part + start}:{p * part + start + local_batch}]"
                  for start in range(0, part, local_batch) for p in range(processes))


def command(image_root: str, workdir: str, **overrides) -> list[str]:
  settings = {
      "dataset": f"folder:{image_root}", "train_split": "train", "eval_split": "test",
      "model.width": 0.25, "model.depth": 0.25, "model.resolution": 32,
      "batch_size": BATCH, "eval_batch_size": BATCH, "num_train_steps": NUM_STEPS,
      "log_every_steps": 2, "checkpoint_every_steps": 2, "eval_every_epochs": 1000.0,
      # Seed-independent preprocessing (whole image, no flip, no augmentation) and no
      # shuffling: each process's stream is its part of the split in stored order.
      "input.crop_area_range": (1.0, 1.0), "input.crop_fraction": 1.0,
      "input.random_flip": False, "input.shuffle_buffer": 1,
      # A learning rate that moves the weights well beyond the tolerance of the comparison.
      "schedule.warmup_epochs": 0.0, "optimizer.base_learning_rate": 0.1,
  }
  settings.update(overrides)
  # --verbose: the log lines (and the final JSON line) on stdout/stderr, where these
  # tests read them.
  return ([sys.executable, "-m", "efficientnet_jax.main", "--config=configs/demo.py",
           f"--workdir={workdir}", "--verbose"]
          + [f"--config.{k}={v}" for k, v in settings.items()])


def start(args: list[str], devices: int, log: str) -> subprocess.Popen:
  """Starts `args` with `devices` simulated CPU devices; stdout/stderr go to log.out/.err."""
  env = dict(os.environ)
  env["PYTHONPATH"] = REPO + os.pathsep + env.get("PYTHONPATH", "")
  # conftest's fast-compile flags, plus the device count.
  env["XLA_FLAGS"] = (f"{env.get('XLA_FLAGS', '')} "
                      f"--xla_force_host_platform_device_count={devices}").strip()
  with open(log + ".out", "w") as out, open(log + ".err", "w") as err:
    return subprocess.Popen(args, cwd=REPO, env=env, stdout=out, stderr=err)


def start_processes(args: list[str], logs: list[str]) -> list[subprocess.Popen]:
  """One process of `args` per log, joined through jax.distributed on a free local port."""
  with socket.socket() as s:
    s.bind(("localhost", 0))
    port = s.getsockname()[1]
  return [start(args + ["--distributed", f"--coordinator_address=localhost:{port}",
                        f"--num_processes={len(logs)}", f"--process_id={i}",
                        f"--heartbeat_timeout_s={HEARTBEAT_TIMEOUT_S}"],
                DEVICES_PER_PROCESS, log)
          for i, log in enumerate(logs)]


def stop_all(processes: list[subprocess.Popen]) -> None:
  for process in processes:
    if process.poll() is None:
      process.kill()
      process.wait()


def finish(processes: list[subprocess.Popen], logs: list[str], timeout: float) -> None:
  """Waits for every process to exit 0; kills them all on a failure or after `timeout`."""
  deadline = time.monotonic() + timeout
  try:
    for process, log in zip(processes, logs):
      status = process.wait(timeout=max(1.0, deadline - time.monotonic()))
      assert status == 0, f"{log}: exit status {status}\n{read(log + '.err')[-5000:]}"
  finally:
    stop_all(processes)


def read(path: str) -> str:
  with open(path) as f:
    return f.read()


def final_results(log: str) -> dict | None:
  """The JSON object main.py prints at the end (process 0 only), or None."""
  lines = [line for line in read(log + ".out").splitlines() if line.startswith("{")]
  return json.loads(lines[-1]) if lines else None


def saved_states(workdir: str) -> dict[int, dict]:
  """Every kept checkpoint of `workdir`, restored onto this process's one device."""
  on_one_device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  with ocp.CheckpointManager(os.path.join(workdir, "checkpoints")) as manager:
    return {step: manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(
        fallback_sharding=on_one_device)))["state"] for step in manager.all_steps()}


def wait_until(condition, processes: list[subprocess.Popen], logs: list[str],
               timeout: float = 300) -> None:
  """Polls `condition()` while every process runs; files it reads may be half-written."""
  deadline = time.monotonic() + timeout
  while True:
    for process, log in zip(processes, logs):
      assert process.poll() is None, f"{log}: exited early\n{read(log + '.err')[-5000:]}"
    try:
      if condition():
        return
    except (FileNotFoundError, ValueError):  # not written yet, or caught mid-write
      pass
    assert time.monotonic() < deadline, f"still waiting after {timeout} s"
    time.sleep(0.2)


def assert_stopped_by_main(log: str, process: int) -> None:
  """main.py's message for a run that lost another process (exit status 77)."""
  assert (f"Process {process} of 2 stopped: a computation shared with the other processes "
          "failed" in log), log[-5000:]
  assert "Restart all 2 processes with the same command" in log, log[-5000:]


def max_difference(a, b) -> float:
  return max(float(np.max(np.abs(np.asarray(x) - np.asarray(y))))
             for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True))


def test_two_processes_train_like_one_process_with_all_devices(image_root, tmp_path):
  """The same global batches through 2 processes x 2 devices and 1 process x 4 devices.

  Both runs train on the same folder. The 2-process run reads "train": process p takes
  the p-th half, 4 images per step. The 1-process run reads a split string that lists
  the same images in the order of the 2-process run's global batches (interleaved_split),
  8 per step. The stream of each repeats identically each epoch (no shuffling), so the
  global batches agree at every step, and so do the seed-dependent parts of a step
  (dropout, drop path), which come from one global key.
  """
  two, one = str(tmp_path / "two_processes"), str(tmp_path / "one_process")
  logs = [str(tmp_path / f"process{i}") for i in range(PROCESSES)]
  reference_log = str(tmp_path / "reference")
  split = interleaved_split(TRAIN_IMAGES, PROCESSES, BATCH // PROCESSES)
  # All three processes at once: compiling dominates, and each compiles on its own.
  processes = start_processes(command(image_root, two), logs)
  processes.append(start(command(image_root, one, train_split=split),
                         PROCESSES * DEVICES_PER_PROCESS, reference_log))
  finish(processes, logs + [reference_log], timeout=300)

  # Weights and BN statistics (raw and EMA) at every kept checkpoint. Not bitwise: the
  # cross-process all-reduces add in another order than one process does, and training
  # amplifies that; observed 1e-6 after 2 steps, 1e-5 after 6.
  states, reference = saved_states(two), saved_states(one)
  assert sorted(states) == sorted(reference) == [2, 4, 6]
  for step in states:
    for key in ("params", "batch_stats", "ema_params", "ema_batch_stats"):
      assert max_difference(states[step][key], reference[step][key]) < 5e-5, (step, key)
  # The comparison can tell: 4 steps moved the weights ~1000x the tolerance.
  assert max_difference(states[6]["params"], states[2]["params"]) > 1e-2

  # Only process 0 writes logs: one TensorBoard file, one metrics.jsonl with one record
  # per logged step and the final eval, equal to the 1-process run's.
  events = [n for n in os.listdir(two) if n.startswith("events.out.tfevents")]
  assert len(events) == 1, events
  records, reference_records = metrics_log.read(two), metrics_log.read(one)
  assert [r["step"] for r in records] == [r["step"] for r in reference_records] == [2, 4, 6, 6]
  for record, expected in zip(records, reference_records):
    for key in ("loss", "accuracy", "eval_top1", "eval_loss", "eval_num_examples"):
      if key in expected:
        assert record[key] == pytest.approx(expected[key], rel=1e-4, abs=1e-6), key

  # The eval split (11 images: parts of 6 and 5, padded) counted each image once.
  final = final_results(logs[0])
  assert final["final_eval_num_examples"] == TEST_IMAGES
  assert final["final_eval_top1"] == final_results(reference_log)["final_eval_top1"]
  assert final_results(logs[1]) is None  # process 1 printed no results


def exit_after_kill(processes: list[subprocess.Popen], victim: int,
                    timeout: float = 60) -> tuple[int, float]:
  """SIGKILLs processes[victim]; returns the other's exit status and seconds to exit."""
  processes[victim].send_signal(signal.SIGKILL)
  killed_at = time.monotonic()
  try:
    status = processes[1 - victim].wait(timeout=timeout)
  except subprocess.TimeoutExpired:
    pytest.fail(f"process {1 - victim} still runs {timeout} s after process {victim} was "
                "killed")
  return status, time.monotonic() - killed_at


def test_killing_process_1_mid_training_stops_process_0_with_an_error(image_root, tmp_path):
  """Process 0 stops within the heartbeat timeout, one of two ways, depending on where
  the kill finds it:

  * its all-reduce with the dead process fails (gloo: connection reset): main.py logs what
    happened and what to do, and exits at once with status 77;
  * gloo keeps waiting for data from the dead process (4 of 9 trials here): the
    coordination service misses process 1's heartbeats and JAX aborts process 0 with a
    fatal error naming the unhealthy task.
  """
  workdir = str(tmp_path / "run")
  logs = [str(tmp_path / f"process{i}") for i in range(PROCESSES)]
  processes = start_processes(
      command(image_root, workdir, num_train_steps=100_000, log_every_steps=1,
              checkpoint_every_steps=100_000), logs)
  try:
    # Past step 2, so past the save of step 1 (Orbax saves a run's first step), whose
    # barriers would be one more place to wait.
    wait_until(lambda: len(metrics_log.read(workdir)) >= 2, processes, logs)
    status, seconds = exit_after_kill(processes, victim=1)
  finally:
    stop_all(processes)
  log = read(logs[0] + ".err")
  if status == EXIT_LOST_PROCESS:
    assert_stopped_by_main(log, process=0)
  else:
    assert status == -signal.SIGABRT, (status, log[-5000:])
    assert "JAX distributed service detected fatal errors" in log, log[-5000:]
    assert "stopped sending heartbeats" in log, log[-5000:]
  assert seconds < HEARTBEAT_TIMEOUT_S + 10  # the service checks heartbeats every few s


def test_killing_the_coordinator_stops_the_other_process(image_root, tmp_path):
  """Process 0 hosts jax.distributed's coordination service: when it dies, process 1
  learns at once (its error poll to the service fails) and JAX ends it with a fatal error
  that says another process died. Process 0 is killed while process 1 is still setting up,
  before any collective, so that the service is the only way process 1 can learn it. If a
  call of process 1 to the service fails first (seen once in a suite run), main.py's handler
  exits it with 77 and its own message instead."""
  logs = [str(tmp_path / f"process{i}") for i in range(PROCESSES)]
  processes = start_processes(command(image_root, str(tmp_path / "run")), logs)
  try:
    wait_until(lambda: "JAX process 1/2" in read(logs[1] + ".err"), processes, logs)
    status, seconds = exit_after_kill(processes, victim=0)
  finally:
    stop_all(processes)
  log = read(logs[1] + ".err")
  if status == EXIT_LOST_PROCESS:
    assert_stopped_by_main(log, process=1)
  else:
    assert status == -signal.SIGABRT, (status, log[-5000:])
    assert ("Terminating process because the JAX distributed service detected fatal errors"
            in log), log[-5000:]
    assert "another task died" in log, log[-5000:]
  assert seconds < HEARTBEAT_TIMEOUT_S
