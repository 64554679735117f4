"""efficientnet-plot: the training curves of metrics.jsonl files as the trainer writes them
(train logs and evaluations, two runs), drawn as labelled panels and written as a PNG."""

import os
import re
import subprocess
import sys

from matplotlib import image
import pytest

from efficientnet_jax.research import training_curves
from efficientnet_jax.training import metrics_log

STEPS_PER_EPOCH = 25
COMMAND = os.path.join(os.path.dirname(sys.executable), "efficientnet-plot")


def write_run(workdir, scale, raw=False):
  """Records in the trainer's shape: a train log every 10 steps, an eval every 50."""
  writer = metrics_log.JsonlWriter(str(workdir))
  for step in range(10, 101, 10):
    writer.write(step, {"loss": scale * 2.3 / step ** 0.5, "l2_loss": 4.0,
                        "accuracy": 1 - 1 / step ** 0.5, "learning_rate": 0.01 * step / 100,
                        "grad_norm": 1.5, "nonfinite": 0.0, "nonfinite_steps": 0.0,
                        "images_per_second": 900.0, "epoch": step / STEPS_PER_EPOCH})
    if step % 50 == 0:
      evals = {"eval_top1": 0.8 + step / 1000, "eval_top5": 0.95 + step / 10000,
               "eval_loss": scale / step, "eval_num_examples": 360.0}
      if raw:
        evals.update(eval_raw_top1=0.7 + step / 1000, eval_raw_loss=2 * scale / step)
      writer.write(step, {**evals, "epoch": step / STEPS_PER_EPOCH})
  return metrics_log.read(str(workdir))


@pytest.fixture
def runs(tmp_path):
  records = {"run_a": write_run(tmp_path / "run_a", 1.0),
             "run_b": write_run(tmp_path / "run_b", 1.5, raw=True)}
  return tmp_path, records


def lines_by_label(ax):
  return {line.get_label(): line for line in ax.lines}


def test_figure_draws_every_curve_of_every_run_from_its_records(runs):
  tmp_path, records = runs
  fig = training_curves.plot([str(tmp_path / "run_a"), str(tmp_path / "run_b")],
                             str(tmp_path / "out.png"))
  loss, accuracy, learning_rate = fig.axes
  assert [ax.get_title() for ax in fig.axes] == ["Loss", "Accuracy", "Learning rate"]
  assert [ax.get_xlabel() for ax in fig.axes] == ["step"] * 3
  assert [ax.get_ylabel() for ax in fig.axes] == ["cross-entropy loss (log scale)",
                                                  "accuracy", "learning rate"]
  assert loss.get_yscale() == "log"
  assert "run_a" in fig.get_suptitle() and "run_b" in fig.get_suptitle()
  expected = {loss: {"train": "loss", "eval": "eval_loss"},
              accuracy: {"train top-1": "accuracy", "eval top-1": "eval_top1",
                         "eval top-5": "eval_top5"},
              learning_rate: {"train": "learning_rate"}}
  for ax, curves in expected.items():
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    for name, run in records.items():
      for label, key in curves.items():
        assert f"{name}: {label}" in legend
        line = lines_by_label(ax)[f"{name}: {label}"]
        points = [r for r in run if key in r]
        assert list(line.get_xdata()) == [r["step"] for r in points]
        assert list(line.get_ydata()) == [r[key] for r in points]
  # Only run_b evaluated its raw weights; each run has one colour, each split a line style.
  assert "run_b: eval (raw weights)" in lines_by_label(loss)
  assert "run_a: eval (raw weights)" not in lines_by_label(loss)
  by_label = lines_by_label(loss)
  assert by_label["run_a: train"].get_color() == by_label["run_a: eval"].get_color()
  assert by_label["run_a: train"].get_color() != by_label["run_b: train"].get_color()
  assert by_label["run_a: train"].get_linestyle() != by_label["run_a: eval"].get_linestyle()
  assert by_label["run_a: train"].get_linestyle() == by_label["run_b: train"].get_linestyle()


def test_png_is_written_at_the_figure_size(runs):
  tmp_path, _ = runs
  fig = training_curves.plot([str(tmp_path / "run_a")], str(tmp_path / "plots" / "a.png"))
  pixels = image.imread(str(tmp_path / "plots" / "a.png"))
  width, height = fig.get_size_inches() * 100
  assert pixels.shape[:2] == (int(height), int(width))
  assert pixels.std() > 0.05  # something drawn, not a blank canvas


def test_epoch_axis(runs):
  tmp_path, records = runs
  fig = training_curves.figure([training_curves.load(str(tmp_path / "run_a"))], "epoch")
  assert [ax.get_xlabel() for ax in fig.axes] == ["epoch"] * 3
  line = lines_by_label(fig.axes[0])["run_a: eval"]
  assert list(line.get_xdata()) == [2.0, 4.0]
  assert list(line.get_xdata()) == [r["epoch"] for r in records["run_a"] if "eval_loss" in r]
  with pytest.raises(ValueError, match="x_axis='time'"):
    training_curves.figure([training_curves.load(str(tmp_path / "run_a"))], "time")


def test_a_resumed_run_keeps_the_later_record_of_a_step(tmp_path):
  writer = metrics_log.JsonlWriter(str(tmp_path))
  for step, loss in ((10, 2.0), (20, 1.5), (30, 1.2), (20, 1.4), (30, 1.1)):
    writer.write(step, {"loss": loss, "learning_rate": 0.1, "epoch": step / 10})
  run = training_curves.load(str(tmp_path))
  assert [(r["step"], r["loss"]) for r in run.train] == [(10, 2.0), (20, 1.4), (30, 1.1)]


def test_runs_of_the_same_name_are_told_apart_by_their_parent(tmp_path):
  assert training_curves.names([str(tmp_path / "a" / "demo"), str(tmp_path / "b" / "demo/"),
                                str(tmp_path / "c")]) == ["a/demo", "b/demo", "c"]


def test_bad_workdirs_name_their_path(tmp_path):
  missing = re.escape(f"{tmp_path / 'missing'}/metrics.jsonl: no such file")
  with pytest.raises(ValueError, match=missing):
    training_curves.load(str(tmp_path / "missing"))
  (tmp_path / "empty").mkdir()
  (tmp_path / "empty" / "metrics.jsonl").write_text("\n")
  empty = re.escape(f"{tmp_path / 'empty'}/metrics.jsonl: no train or eval records")
  with pytest.raises(ValueError, match=empty):
    training_curves.load(str(tmp_path / "empty"))


def test_command_writes_the_png_and_names_a_bad_workdir(runs):
  tmp_path, _ = runs
  done = subprocess.run([COMMAND, str(tmp_path / "run_a"), str(tmp_path / "run_b"),
                         "--x_axis=epoch"], capture_output=True, text=True)
  assert done.returncode == 0, done.stderr[-2000:]
  default = tmp_path / "run_a" / "curves.png"
  assert f"wrote {default}" in done.stdout
  assert image.imread(str(default)).shape[:2] == (500, 1600)

  done = subprocess.run([COMMAND, str(tmp_path / "run_a"), str(tmp_path / "nowhere"),
                         f"--output={tmp_path / 'x.png'}"], capture_output=True, text=True)
  assert done.returncode == 1
  assert f"{tmp_path / 'nowhere'}/metrics.jsonl: no such file" in done.stderr
  assert not (tmp_path / "x.png").exists()
