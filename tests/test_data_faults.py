"""Fault injection on the data: corrupt TFRecord shards (cut short, a bit flipped) and a
disk that fills during a checkpoint save or a metrics write. Run alone with
`pytest -m faults`."""

import json
import os
import shutil
import subprocess
import sys

import jax
import numpy as np
import pytest
import tensorflow as tf

from efficientnet_jax.data import input_pipeline
from conftest import REPO, latest_state, tiny_config

pytestmark = pytest.mark.faults

SHARD = os.path.join("digits", "1.0.0", "digits-train.tfrecord-00000-of-00001")
NUM_TRAIN = 1437


def record_offsets(path):
  """Byte offset of each record of a TFRecord file (8-byte length, 4-byte CRC, data, CRC)."""
  data, offsets, at = open(path, "rb").read(), [], 0
  while at < len(data):
    offsets.append(at)
    at += 16 + int.from_bytes(data[at:at + 8], "little")
  return offsets


def corrupt_copy(data_dir, tmp_path, kind, record):
  """A copy of the digits data whose train shard is cut short at, or has a bit flipped in
  the data of, record `record`; (data_dir, shard path, that record's byte offset)."""
  copy = str(tmp_path / kind)
  shutil.copytree(data_dir, copy)
  shard = os.path.join(copy, SHARD)
  offset = record_offsets(shard)[record]
  data = bytearray(open(shard, "rb").read())
  if kind == "truncated":
    data = data[:offset + 20]  # the copy stopped inside the record
  else:
    data[offset + 12 + 5] ^= 0x10  # one bit of the record's data: its CRC no longer matches
  open(shard, "wb").write(bytes(data))
  return copy, shard, offset


def first_data_loss(dataset, max_batches=200):
  with pytest.raises(tf.errors.DataLossError) as error:
    for _, _ in zip(range(max_batches), dataset.as_numpy_iterator()):
      pass
  return error.value


@pytest.mark.parametrize("kind, problem", [("truncated", "truncated record"),
                                           ("bit_flipped", "corrupted record")])
def test_corrupt_shard_is_named_with_its_record(data_dir, tmp_path, kind, problem):
  copy, shard, offset = corrupt_copy(data_dir, tmp_path, kind, record=900)
  config = tiny_config(copy)
  error = first_data_loss(input_pipeline.create_train_dataset(
      config, 32, process_index=0, process_count=1))
  message = input_pipeline.explain_data_loss(config, error)
  # TF's reader reports a bad CRC at the record's data, 12 bytes after its header.
  offset += 12 if kind == "bit_flipped" else 0
  assert f"{shard}: record 900 of {NUM_TRAIN} at byte {offset} is unreadable" in message
  assert problem in message and "skip_bad_records=True" in message
  # Evaluating on the damaged split meets the same record.
  eval_config = tiny_config(copy, eval_split="train")
  dataset, _ = input_pipeline.create_eval_dataset(eval_config, 32, process_index=0,
                                                  process_count=1)
  assert shard in input_pipeline.explain_data_loss(eval_config, first_data_loss(dataset))


@pytest.mark.parametrize("kind", ["truncated", "bit_flipped"])
def test_skip_bad_records_skips_and_counts(data_dir, tmp_path, kind):
  copy, _, _ = corrupt_copy(data_dir, tmp_path, kind, record=900)
  skipped = NUM_TRAIN - 900  # TF's reader cannot resync: the rest of the shard goes too
  config = tiny_config(copy, eval_split="train", **{"input.skip_bad_records": True})
  assert input_pipeline.dataset_info(config).num_skipped_records == skipped
  # One pass reads exactly the readable records, which are the clean data's first 900.
  dataset, _ = input_pipeline.create_eval_dataset(config, 64, process_index=0,
                                                  process_count=1)
  labels = np.concatenate([b["label"][b["mask"]] for b in dataset.as_numpy_iterator()])
  clean, _ = input_pipeline.create_eval_dataset(tiny_config(data_dir, eval_split="train"), 64,
                                                process_index=0, process_count=1)
  clean_labels = np.concatenate([b["label"][b["mask"]] for b in clean.as_numpy_iterator()])
  np.testing.assert_array_equal(labels, clean_labels[:900])
  # Two processes: the first part (records 0–718) is whole, the second loses `skipped`.
  assert input_pipeline._source(config).part_sizes("train", 2) == [719, 718 - skipped]

  # The training stream still runs past epochs and resumes bitwise (epochs of 900).
  def batches(start_step, count):
    ds = input_pipeline.create_train_dataset(config, 32, process_index=0, process_count=1,
                                             start_step=start_step)
    return [b for _, b in zip(range(count), ds.as_numpy_iterator())]

  straight, resumed = batches(0, 60), batches(50, 10)  # 60 batches of 16: over one epoch
  for a, b in zip(straight[50:], resumed, strict=True):
    for key in a:
      np.testing.assert_array_equal(a[key], b[key])


def test_clean_data_stream_is_unchanged_by_skip_bad_records(data_dir):
  def first(skip):
    config = tiny_config(data_dir, **{"input.skip_bad_records": skip})
    ds = input_pipeline.create_train_dataset(config, 32, process_index=0, process_count=1)
    return [b for _, b in zip(range(3), ds.as_numpy_iterator())]
  for a, b in zip(first(False), first(True), strict=True):
    for key in a:
      np.testing.assert_array_equal(a[key], b[key])


def test_main_names_the_corrupt_shard(data_dir, tmp_path):
  copy, shard, _ = corrupt_copy(data_dir, tmp_path, "bit_flipped", record=3)
  workdir = str(tmp_path / "run")
  run = subprocess.run(
      [sys.executable, "-m", "efficientnet_jax.main", "--config=configs/demo.py",
       f"--workdir={workdir}", f"--config.data_dir={copy}", "--config.model.width=0.25",
       "--config.model.depth=0.25", "--config.batch_size=16", "--config.num_train_steps=4",
       "--config.eval_batch_size=64", "--config.input.shuffle_buffer=256"],
      cwd=REPO, env=dict(os.environ, PYTHONPATH=REPO), capture_output=True, text=True,
      timeout=300)
  assert run.returncode == 1, run.stderr[-3000:]
  log = open(os.path.join(workdir, "train.log")).read()
  for text in (run.stderr, log):
    assert f"{shard}: record 3 of {NUM_TRAIN}" in text, text[-3000:]
    assert "corrupted record" in text
  assert "Traceback" not in run.stderr


def test_full_disk_stops_the_run_and_the_same_command_resumes_bitwise(data_dir, tmp_path,
                                                                      tiny_run):
  """A real full disk: a size-limited tmpfs mounted in a user namespace of its own
  (`unshare -rm`, no root needed). A checkpoint save meets ENOSPC (exit status 78, the
  checkpoints directory named), then a metrics write does; each time the earlier
  checkpoints stay readable, metrics.jsonl keeps every earlier record, and after the
  filler file is deleted the same run resumes to an uninterrupted run's state, bitwise."""
  mount, out = tmp_path / "mount", tmp_path / "out"
  mount.mkdir()
  out.mkdir()
  child = subprocess.run(
      ["unshare", "-rm", sys.executable,
       os.path.join(REPO, "tests", "disk_full", "fill_disk_during_training.py"),
       str(mount), data_dir, str(out)],
      cwd=REPO, env=dict(os.environ, PYTHONPATH=REPO), capture_output=True, text=True,
      timeout=1200)
  assert child.returncode == 0, child.stderr[-5000:]
  results = json.loads((out / "results.json").read_text())
  _, uninterrupted = latest_state(tiny_run(12))

  cli = results["checkpoint"]
  assert cli["full_exit"] == 78, cli["full_stderr"]
  checkpoints_dir = str(mount / "checkpoint" / "checkpoints")
  # The run's own message on the terminal (Orbax logs its errors before it, and asyncio may
  # print an ignored "Event loop is closed" at interpreter exit after it).
  said = [line for line in cli["full_stderr"].splitlines() if line.startswith("error: ")]
  assert len(said) == 1 and "no space left to write a checkpoint (at step " in said[0], said
  assert said[0].endswith(f"run the same command again to resume: '{checkpoints_dir}'")
  assert "Logging error" not in cli["full_stderr"]
  assert "1" in cli["after_full"]["checkpoints"]  # the first checkpoint, complete
  assert cli["resumed_exit"] == 0, cli["resumed_stderr"]
  assert not [n for n in cli["after_resume"]["checkpoints"] if n.endswith("-tmp")]

  metrics = results["metrics"]
  assert metrics["error"].startswith("DiskFullError: [Errno 28] no space left to write the "
                                     "metrics log"), metrics["error"]
  assert str(mount / "metrics" / "metrics.jsonl") in metrics["error"]
  assert metrics["after_full"]["metrics"] == metrics["before_fill"]["metrics"]
  assert [json.loads(line)["step"] for line in
          metrics["before_fill"]["metrics"].splitlines()] == [4]
  assert "metrics.jsonl.partial" not in metrics["after_full"]["files"]
  assert {"1", "4"} <= set(metrics["after_full"]["checkpoints"])
  # After the restart every earlier record is still there, then the resumed run's.
  assert metrics["after_resume"]["metrics"].startswith(metrics["before_fill"]["metrics"])

  for name in ("checkpoint", "metrics"):
    step, resumed = latest_state(str(out / name))
    assert step == 12
    for x, y in zip(jax.tree.leaves(uninterrupted), jax.tree.leaves(resumed), strict=True):
      np.testing.assert_array_equal(x, y)


def test_skipped_records_are_counted_in_metrics_jsonl(data_dir, tmp_path):
  """A training run on the truncated shard with skip_bad_records logs how many records it
  left out with every train record of metrics.jsonl."""
  from efficientnet_jax.training import metrics_log, trainer
  copy, _, _ = corrupt_copy(data_dir, tmp_path, "truncated", record=900)
  workdir = str(tmp_path / "run")
  trainer.train_and_evaluate(tiny_config(copy, num_train_steps=4, **{
      "input.skip_bad_records": True}), workdir)
  train_records = [r for r in metrics_log.read(workdir) if "loss" in r]
  assert [r["skipped_records"] for r in train_records] == [NUM_TRAIN - 900]
