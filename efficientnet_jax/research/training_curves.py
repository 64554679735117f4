"""Training curves of one or several runs, read from each workdir's metrics.jsonl: loss,
accuracy and learning rate against steps or epochs, in one PNG (`efficientnet-plot`).

The trainer writes two kinds of record there: train logs (every config.log_every_steps:
the mean "loss", "accuracy" and "learning_rate" since the previous log) and evaluations
("eval_loss", "eval_top1", "eval_top5"; "eval_raw_*" for the raw weights beside the EMA
ones). Train loss and accuracy are on augmented, label-smoothed batches and eval loss is
plain cross-entropy, so the train curve sits above the eval one without overfitting.

Each run has its colour; each split (train, eval, eval of the raw weights) its line style.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Sequence

from etils import epath
from matplotlib import ticker
from matplotlib.figure import Figure  # no pyplot: renders with Agg, needs no display

from efficientnet_jax.training import metrics_log

X_AXES = ("step", "epoch")
# (record key, legend label, line style, marker) of each curve, per panel. Eval points are
# few (every config.eval_every_epochs): markers keep a single one visible.
_LOSS = (("loss", "train", "-", None), ("eval_loss", "eval", "--", "o"),
         ("eval_raw_loss", "eval (raw weights)", ":", "^"))
_ACCURACY = (("accuracy", "train top-1", "-", None), ("eval_top1", "eval top-1", "--", "o"),
             ("eval_top5", "eval top-5", "-.", "s"),
             ("eval_raw_top1", "eval top-1 (raw weights)", ":", "^"))
_LEARNING_RATE = (("learning_rate", "train", "-", None),)


@dataclasses.dataclass(frozen=True)
class Run:
  """One workdir's records, split by kind, in step order."""
  name: str
  path: str
  train: list[dict[str, Any]]
  eval: list[dict[str, Any]]


def load(workdir: str, name: str | None = None) -> Run:
  """The records of <workdir>/metrics.jsonl as a `Run` named `name` (default: the
  workdir's name).

  A resumed run logs again the steps after its last checkpoint: the later record of a
  step replaces the earlier one, so each curve goes forward only.
  """
  path = epath.Path(workdir) / "metrics.jsonl"
  if not path.exists():
    raise ValueError(f"{path}: no such file (is {workdir} a training workdir?)")
  train, evals = {}, {}
  for record in metrics_log.read(str(path)):
    if "eval_top1" in record:
      evals[record["step"]] = record
    elif "loss" in record:
      train[record["step"]] = record
  if not train and not evals:
    raise ValueError(f"{path}: no train or eval records")
  return Run(name=name or _name(workdir), path=str(path),
             train=[train[s] for s in sorted(train)], eval=[evals[s] for s in sorted(evals)])


def _name(workdir: str) -> str:
  path = epath.Path(workdir)
  return path.name or path.resolve().name  # "." or "runs/demo/" name their directory


def names(workdirs: Sequence[str]) -> list[str]:
  """Each workdir's name, with its parent's when two runs share one (a/demo, b/demo)."""
  short = [_name(w) for w in workdirs]
  return [s if short.count(s) == 1 else f"{_name(str(epath.Path(w).parent))}/{s}"
          for s, w in zip(short, workdirs)]


def figure(runs: Sequence[Run], x_axis: str = "step") -> Figure:
  """Loss, accuracy and learning rate of `runs` against `x_axis` ("step" or "epoch")."""
  if x_axis not in X_AXES:
    raise ValueError(f"x_axis={x_axis!r}: expected one of {X_AXES}")
  fig = Figure(figsize=(16, 5), layout="constrained")
  loss, accuracy, learning_rate = fig.subplots(1, 3)
  for i, run in enumerate(runs):
    colour = f"C{i % 10}"
    for ax, curves in ((loss, _LOSS), (accuracy, _ACCURACY), (learning_rate, _LEARNING_RATE)):
      for key, label, style, marker in curves:
        records = [r for r in (run.eval if key.startswith("eval") else run.train) if key in r]
        if not records:
          continue
        if any(x_axis not in r for r in records):
          raise ValueError(f"{run.path}: records without {x_axis!r}; plot against step")
        ax.plot([r[x_axis] for r in records], [r[key] for r in records], color=colour,
                linestyle=style, marker=marker, markersize=5, label=f"{run.name}: {label}")
  # Log scale: a loss falls by orders of magnitude, and an early EMA evaluation (averaging
  # mostly the random start) can sit far above the rest.
  loss.set(title="Loss", ylabel="cross-entropy loss (log scale)", yscale="log")
  loss.yaxis.set_major_formatter(ticker.FuncFormatter(lambda y, _: f"{y:g}"))  # not 10⁰
  loss.yaxis.set_minor_formatter(ticker.FuncFormatter(_minor_log_label))
  accuracy.set(title="Accuracy", ylabel="accuracy")
  accuracy.yaxis.set_major_formatter(ticker.PercentFormatter(xmax=1.0))
  learning_rate.set(title="Learning rate", ylabel="learning rate")
  learning_rate.ticklabel_format(axis="y", style="sci", scilimits=(-2, 3))
  for ax in (loss, accuracy, learning_rate):
    ax.set_xlabel(x_axis)
    ax.grid(alpha=0.3)
    if ax.lines:
      ax.legend(fontsize="small")
  fig.suptitle("Training curves: " + ", ".join(run.name for run in runs))
  return fig


def _minor_log_label(y: float, _) -> str:
  """Labels 0.2, 0.3, 0.5, 2, 3, 5, … between the powers of ten; the other ticks stay bare
  (all of them would overlap)."""
  mantissa = y / 10 ** math.floor(math.log10(y) + 1e-9)
  return f"{y:g}" if round(mantissa) in (2, 3, 5) else ""


def plot(workdirs: Sequence[str], output: str, x_axis: str = "step") -> Figure:
  """Draws the runs of `workdirs` into the PNG `output` (any epath path); returns the
  figure."""
  runs = [load(w, n) for w, n in zip(workdirs, names(workdirs))]
  fig = figure(runs, x_axis)
  out = epath.Path(output)
  out.parent.mkdir(parents=True, exist_ok=True)
  with out.open("wb") as f:  # epath: a gs:// output works too
    fig.savefig(f, format="png", dpi=100)
  return fig
