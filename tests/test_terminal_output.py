"""What a person sees when training on a terminal: a progress bar, a line per evaluation
and a short final summary, the log lines in the workdir's train.log — and the summary's
next commands run as written."""

import fcntl
import os
import pty
import re
import shlex
import struct
import subprocess
import sys
import termios

from efficientnet_jax.training import metrics_log

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COLUMNS = 100


def run_on_a_terminal(args: list[str], timeout: float = 600,
                      **environment: str) -> tuple[int, str]:
  """Runs `args` with stdin/stdout/stderr on a pseudo-terminal of COLUMNS×40 (and
  `environment` added to the environment); returns the exit status and everything it drew."""
  controller, terminal = pty.openpty()
  fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", 40, COLUMNS, 0, 0))
  env = dict(os.environ, PYTHONPATH=REPO, **environment)
  process = subprocess.Popen(args, stdin=terminal, stdout=terminal, stderr=terminal,
                             cwd=REPO, env=env, close_fds=True)
  os.close(terminal)
  chunks = []
  while True:
    try:
      data = os.read(controller, 1 << 16)
    except OSError:  # EIO: the child closed the terminal
      break
    if not data:
      break
    chunks.append(data)
  os.close(controller)
  return process.wait(timeout=timeout), b"".join(chunks).decode(errors="replace")


def screen_lines(drawn: str) -> int:
  """Lines the output occupies on screen: a bar redrawn with \\r stays on its line, and a
  nested bar's cursor-ups take back the newlines that made room for it."""
  return drawn.count("\n") - drawn.count("\x1b[A")


def test_training_on_a_terminal_shows_a_bar_and_a_summary_and_logs_to_a_file(data_dir,
                                                                            tmp_path):
  workdir = tmp_path / "run"
  overrides = {"data_dir": data_dir, "model.width": 0.25, "model.depth": 0.25,
               "num_train_steps": 30, "log_every_steps": 10, "eval_every_epochs": 0.5,
               "batch_size": 32}
  status, drawn = run_on_a_terminal(
      [sys.executable, "-m", "efficientnet_jax.main", "--config=demo", f"--workdir={workdir}"]
      + [f"--config.{k}={v}" for k, v in overrides.items()])
  assert status == 0, drawn[-3000:]
  assert screen_lines(drawn) <= 40, drawn
  # The bar: steps done of the total, with rate and ETA.
  assert re.search(r"train b0: 100%\|.*\| 30/30 \[\d\d:\d\d<00:00, +[\d.]+(step/s|s/step)",
                   drawn), drawn
  # One line per evaluation (the eval split has 360 images; 45 steps an epoch at 32):
  # 22 and 30.
  evaluations = re.findall(r"step (\d+) \(epoch [\d.]+\): top-1 [\d.]+% \((\d+)/360\)", drawn)
  assert [int(step) for step, _ in evaluations] == [22, 30], drawn
  records = [r for r in metrics_log.read(str(workdir)) if "eval_top1" in r]
  assert [round(r["eval_top1"] * 360) for r in records] == [int(n) for _, n in evaluations]
  # The summary: result with counts, time, where things are, what to run next.
  summary = drawn[drawn.index("Done in"):]
  assert re.match(r"Done in \dm\d\ds: b0 on digits, test split \(EMA weights\) top-1 "
                  rf"[\d.]+% \({evaluations[-1][1]}/360\)", summary), summary
  for path in ("checkpoints", "best", "metrics.jsonl", "train.log"):
    assert str(workdir / path) in summary
  assert f"tensorboard --logdir={workdir}" in summary
  assert f"efficientnet-evaluate --weights={workdir} --dataset=digits --split=test" in summary
  # No log lines on the terminal: they are in train.log.
  assert not re.search(r"^[IW]\d{4} ", drawn, re.M), drawn
  log = (workdir / "train.log").read_text()
  assert re.search(r"^I\d{4} .*trainer.py.*b0: \d+ params, 10 classes", log, re.M)
  # TensorFlow's C++ notice at import ("oneDNN custom operations are on", printed on CPUs
  # where TF enables oneDNN, e.g. with AVX-512; none on AVX2 ones) is in the log, never on
  # the terminal.
  notices = subprocess.run([sys.executable, "-c", "import tensorflow"], capture_output=True,
                           text=True, env=dict(os.environ), timeout=300).stderr
  assert ("oneDNN" in log) == ("oneDNN" in notices), notices
  assert "oneDNN" not in drawn

  # The suggested predict command runs as written, on the sample images it names.
  predict = re.search(r"^ *(efficientnet-predict .*)$", summary, re.M).group(1).strip()
  args = shlex.split(predict)
  args[0] = os.path.join(os.path.dirname(sys.executable), args[0])
  done = subprocess.run(args, capture_output=True, text=True, cwd=REPO, timeout=300)
  assert done.returncode == 0, done.stderr[-3000:]
  images = args[2:]
  assert len(images) == 2 and all(os.path.isfile(i) for i in images)
  for image in images:
    assert image in done.stdout
