"""Results of a scaling sweep in the paper's shapes: Table 2 (size and accuracy), Table 3
(single-dimension vs compound scaling of a baseline), the step-1 grid, and Figures 3 and 8
(top-1 against multiply-adds).

Everything comes from the sweep directory: `sweep.json` (written by efficientnet-sweep: the
base and what each run varies) and each workdir's config.json (what was trained) and
metrics.jsonl (its last evaluation). A directory without sweep.json is read as plain runs:
every subdirectory holding a config.json (tables only; the figures need the run kinds).
"""

from __future__ import annotations

import dataclasses
import json
import math
from typing import Any, Sequence

from etils import epath
import ml_collections
from matplotlib import ticker
from matplotlib.figure import Figure  # no pyplot: renders with Agg, needs no display

from efficientnet_jax.models import costs, registry, scaling
from efficientnet_jax.research import paper_tables, sweep

KIND_LABELS = {"width": "width only", "depth": "depth only", "resolution": "resolution only",
               "phi": "compound (φ)"}
KIND_SYMBOLS = {"width": "w", "depth": "d", "resolution": "r", "phi": "φ"}
KINDS = ("phi", "width", "depth", "resolution")  # legend order, as the paper's Figure 8
_KIND_OF_LABEL = {label: kind for kind, label in KIND_LABELS.items()}


@dataclasses.dataclass(frozen=True)
class PaperRow:
  family: str
  kind: str        # "baseline", a dimension, or "phi" (compound)
  value: float     # multiplier, or φ
  setting: str     # as the paper writes it
  flops: float     # multiply-adds
  top1: float      # %


# Paper Table 3 (arXiv v5). Its compound rows cost ≈4× the baseline's FLOPs, i.e. φ=2 of
# (α, β, γ) = (1.2, 1.1, 1.15): d=1.44, w=1.21, r=1.32, the setting it gives for MobileNetV1.
PAPER_TABLE3 = (
    PaperRow("mobilenetv1", "baseline", 1.0, "baseline", 0.6e9, 70.6),
    PaperRow("mobilenetv1", "width", 2.0, "w=2", 2.2e9, 74.2),
    PaperRow("mobilenetv1", "resolution", 2.0, "r=2", 2.2e9, 72.7),
    PaperRow("mobilenetv1", "phi", 2.0, "d=1.4, w=1.2, r=1.3", 2.3e9, 75.6),
    PaperRow("mobilenetv2", "baseline", 1.0, "baseline", 0.3e9, 72.0),
    PaperRow("mobilenetv2", "depth", 4.0, "d=4", 1.2e9, 76.8),
    PaperRow("mobilenetv2", "width", 2.0, "w=2", 1.1e9, 76.4),
    PaperRow("mobilenetv2", "resolution", 2.0, "r=2", 1.2e9, 74.8),
    PaperRow("mobilenetv2", "phi", 2.0, "compound", 1.3e9, 77.4),
    PaperRow("resnet50", "baseline", 1.0, "baseline", 4.1e9, 76.0),
    PaperRow("resnet50", "depth", 4.0, "d=4", 16.2e9, 78.1),
    PaperRow("resnet50", "width", 2.0, "w=2", 14.7e9, 77.7),
    PaperRow("resnet50", "resolution", 2.0, "r=2", 16.4e9, 77.5),
    PaperRow("resnet50", "phi", 2.0, "compound", 16.7e9, 78.8),
)


@dataclasses.dataclass(frozen=True)
class Result:
  """One run: what it scaled, its size, and its last evaluation (None before the first)."""

  name: str
  kind: str            # "phi" | "grid" | "width" | "depth" | "resolution" | "run"
  value: float | None  # φ or the dimension's multiplier
  family: str
  variant: str
  width: float
  depth: float
  resolution: int
  params: int
  multiply_adds: int
  alpha: float | None = None
  beta: float | None = None
  gamma: float | None = None
  top1: float | None = None
  top5: float | None = None
  step: int | None = None
  same_as: str | None = None  # trained as that run (same network)


@dataclasses.dataclass(frozen=True)
class SweepResults:
  directory: str
  base: dict[str, Any] | None  # family, variant, width, depth, resolution (sweep.json)
  results: tuple[Result, ...]

  def is_baseline(self, r: Result) -> bool:
    b = self.base
    # Close, not equal: run flags carry 6 significant digits.
    return (b is not None and r.family == b["family"] and r.resolution == b["resolution"]
            and math.isclose(r.width, b["width"], rel_tol=1e-5)
            and math.isclose(r.depth, b["depth"], rel_tol=1e-5))

  def unique(self) -> list[Result]:
    """Each trained network once (not the runs that repeat an earlier one's)."""
    return [r for r in self.results if r.same_as is None]

  def baseline(self) -> Result | None:
    return next((r for r in self.results if self.is_baseline(r)), None)

  def curve(self, kind: str) -> list[Result]:
    """The baseline and the runs of `kind`, by increasing cost (one line of a figure)."""
    runs = [r for r in self.results if r.kind == kind or self.is_baseline(r)]
    unique = {(r.width, r.depth, r.resolution): r for r in reversed(runs)}
    return sorted(unique.values(), key=lambda r: r.multiply_adds)


def _from_config(name: str, workdir: epath.Path, entry: dict[str, Any],
                 num_classes: int | None) -> Result | None:
  """A run's Result from its config.json (None if it never started)."""
  path = workdir / "config.json"
  if not path.exists():
    return None
  config = ml_collections.ConfigDict(json.loads(path.read_text()))
  classes = (config.model.num_classes or num_classes or entry.get("num_classes")
             or sweep.dataset_classes(config))
  size = registry.scaling_of(config.model)
  params, multiply_adds = sweep.network_cost(config.model, classes)
  record = sweep.final_eval(str(workdir)) or {}
  return Result(
      name=name, kind=entry.get("kind", "run"), value=entry.get("value"),
      family=sweep.family(config.model), variant=config.model.variant,
      width=size.width, depth=size.depth, resolution=size.resolution, params=params,
      multiply_adds=multiply_adds, alpha=entry.get("alpha"), beta=entry.get("beta"),
      gamma=entry.get("gamma"), top1=record.get("eval_top1"), top5=record.get("eval_top5"),
      step=record.get("step"), same_as=entry.get("same_as"))


def load(sweep_dir: str, num_classes: int | None = None) -> SweepResults:
  """Every run of `sweep_dir` with its size (from config.json) and last evaluation.

  Runs that have not started yet appear with the manifest's predicted size and no top-1.
  """
  directory = epath.Path(sweep_dir)
  manifest_path = directory / sweep.MANIFEST
  if manifest_path.exists():
    manifest = json.loads(manifest_path.read_text())
    base, entries = manifest["base"], manifest["runs"]
  elif directory.is_dir():
    base = None
    entries = [{"name": p.name, "workdir": p.name} for p in sorted(directory.iterdir())
               if (p / "config.json").exists()]
  else:
    raise ValueError(f"--sweep_dir={sweep_dir}: no such directory")
  if not entries:
    raise ValueError(f"--sweep_dir={sweep_dir}: no {sweep.MANIFEST} and no run directories "
                     "with a config.json")
  results = []
  for entry in entries:
    result = _from_config(entry["name"], directory / entry["workdir"], entry, num_classes)
    if result is None:  # not started: the sweep's prediction
      fields = {f.name for f in dataclasses.fields(Result)}
      result = Result(variant="", **{k: v for k, v in entry.items() if k in fields})
    results.append(result)
  return SweepResults(str(directory), base, tuple(results))


def _percent(x: float | None) -> str:
  return "" if x is None else f"{100 * x:.1f}"


def _billions(x: float | None) -> str:
  return "" if x is None else f"{x / 1e9:.4g}"


def _multiplier(results: SweepResults, r: Result) -> str:
  """How the run differs from the base, as the paper labels it."""
  if results.is_baseline(r):
    return "baseline"
  if r.kind in ("width", "depth", "resolution"):
    return f"{KIND_SYMBOLS[r.kind]}={r.value:g}"
  if r.kind == "phi":
    return f"φ={r.value:g}"
  if r.kind == "grid":
    return f"α={r.alpha:g}, β={r.beta:g}, γ={r.gamma:g}"
  return r.name


SIZE_ACCURACY_HEADER = ("run", "scaling", "width", "depth", "resolution", "params",
                        "multiply-adds (B)", "top-1 (%)", "top-5 (%)", "paper params",
                        "paper multiply-adds (B)", "paper top-1 (%)")


def size_accuracy_rows(results: SweepResults) -> list[tuple]:
  """Table 2: every run by cost; the paper's numbers beside runs that are a named variant."""
  rows = []
  for r in sorted(results.unique(), key=lambda r: r.multiply_adds):
    paper = None
    if r.family == sweep.EFFICIENTNET and r.variant in paper_tables.PAPER_TABLE2:
      row = scaling.VARIANTS[r.variant]
      if (row.width, row.depth, row.resolution) == (r.width, r.depth, r.resolution):
        paper = paper_tables.PAPER_TABLE2[r.variant]
    rows.append((r.name, _multiplier(results, r), f"{r.width:.3f}", f"{r.depth:.3f}",
                 r.resolution, f"{r.params:,}", _billions(r.multiply_adds),
                 _percent(r.top1), _percent(r.top5),
                 f"{paper[1] / 1e6:g}M" if paper else "", _billions(paper[2]) if paper else "",
                 f"{paper[0]:.1f}" if paper else ""))
  return rows


TABLE3_HEADER = ("model", "scaling", "width", "depth", "resolution", "multiply-adds (B)",
                 "top-1 (%)", "paper setting", "paper FLOPs (B)", "paper top-1 (%)")


def _paper_row(family: str, kind: str, value: float) -> PaperRow | None:
  return next((p for p in PAPER_TABLE3 if (p.family, p.kind) == (family, kind)
               and abs(p.value - value) < 1e-9), None)


def table3_rows(results: SweepResults) -> list[tuple]:
  """Table 3: each baseline, single-dimension and compound runs (those of the sweep's kinds)."""
  rows = []
  for r in sorted(results.unique(), key=lambda r: (r.family, r.multiply_adds)):
    if not (results.is_baseline(r) or r.kind in KIND_LABELS):
      continue
    kind, value = ("baseline", 1.0) if results.is_baseline(r) else (r.kind, r.value)
    paper = _paper_row(r.family, kind, value)
    rows.append((r.family, _multiplier(results, r), f"{r.width:.3f}", f"{r.depth:.3f}",
                 r.resolution, _billions(r.multiply_adds), _percent(r.top1),
                 paper.setting if paper else "", _billions(paper.flops) if paper else "",
                 f"{paper.top1:.1f}" if paper else ""))
  return rows


def baseline_size_rows(resolution: int = scaling.BASE_RESOLUTION) -> list[tuple]:
  """Table 3's structure: our multiply-adds for each of the paper's settings, beside its FLOPs.

  Compound rows use φ=2 of (1.2, 1.1, 1.15), rounded as the φ formula rounds.
  """
  rows = []
  for p in PAPER_TABLE3:
    width = depth = 1.0
    res = resolution
    if p.kind == "width":
      width = p.value
    elif p.kind == "depth":
      depth = p.value
    elif p.kind == "resolution":
      res = int(round(resolution * p.value))
    elif p.kind == "phi":
      size = scaling.compound(p.value)
      width, depth, res = size.width, size.depth, size.resolution
    network = registry.build(p.family, width, depth)
    macs = costs.multiply_adds(network, res)
    rows.append((p.family, p.setting, f"{width:.3f}", f"{depth:.3f}", res,
                 f"{costs.count_params(network):,}", _billions(macs),
                 _billions(p.flops), f"{100 * (macs / p.flops - 1):+.0f}%", f"{p.top1:.1f}"))
  return rows


BASELINE_SIZE_HEADER = ("model", "paper setting", "width", "depth", "resolution", "params",
                        "multiply-adds (B)", "paper FLOPs (B)", "dev", "paper top-1 (%)")

GRID_HEADER = ("rank", "α", "β", "γ", "α·β²·γ²", "width", "depth", "resolution", "params",
               "multiply-adds (B)", "top-1 (%)", "top-5 (%)")


def grid_results(results: SweepResults) -> list[Result]:
  """The step-1 candidates, best top-1 first (unevaluated ones last)."""
  grid = [r for r in results.results if r.kind == "grid"]
  return sorted(grid, key=lambda r: (r.top1 is None, -(r.top1 or 0.0), r.multiply_adds))


def grid_rows(results: SweepResults) -> list[tuple]:
  return [(i, f"{r.alpha:g}", f"{r.beta:g}", f"{r.gamma:g}",
           f"{r.alpha * r.beta**2 * r.gamma**2:.3f}", f"{r.width:.3f}", f"{r.depth:.3f}",
           r.resolution, f"{r.params:,}", _billions(r.multiply_adds), _percent(r.top1),
           _percent(r.top5)) for i, r in enumerate(grid_results(results), 1)]


def best_grid(results: SweepResults) -> Result | None:
  """The evaluated candidate with the highest top-1 (the paper found 1.2, 1.1, 1.15)."""
  ranked = grid_results(results)
  return ranked[0] if ranked and ranked[0].top1 is not None else None


def _evaluated(runs: Sequence[Result]) -> list[Result]:
  return [r for r in runs if r.top1 is not None]


def _base_name(results: SweepResults) -> str:
  b = results.base or {}
  name = b.get("family", "")
  if name == sweep.EFFICIENTNET:
    name = f"EfficientNet-{b.get('variant', '').upper()}"
  return (f"{name} (w={b.get('width', 0):g}, d={b.get('depth', 0):g}, "
          f"r={b.get('resolution', 0)})")


def _unit(results: SweepResults) -> tuple[float, str]:
  """Billions for ImageNet-sized networks, millions for small ones (readable ticks)."""
  largest = max(r.multiply_adds for r in results.results)
  return (1e9, "billions") if largest >= 1e9 else (1e6, "millions")


def _plot_curve(ax: Any, results: SweepResults, kind: str, annotate: bool,
                **style: Any) -> bool:
  runs = _evaluated(results.curve(kind))
  if len(runs) < 2 or not any(r.kind == kind for r in runs):
    return False
  x = [r.multiply_adds / _unit(results)[0] for r in runs]
  y = [100 * r.top1 for r in runs]
  ax.plot(x, y, marker="o", label=KIND_LABELS[kind], **style)
  if annotate:
    for r, xi, yi in zip(runs, x, y):
      text = "base" if results.is_baseline(r) else f"{KIND_SYMBOLS[kind]}={r.value:g}"
      ax.annotate(text, (xi, yi), textcoords="offset points", xytext=(4, 4), fontsize=8)
  return True


def _style(ax: Any, results: SweepResults, title: str) -> None:
  ax.set_xscale("log")
  plain = ticker.FuncFormatter(lambda value, _: f"{value:g}")  # 0.5, 1, 2 rather than 5×10⁻¹
  ax.xaxis.set_major_formatter(plain)
  ax.xaxis.set_minor_formatter(plain)
  ax.margins(x=0.12, y=0.1)  # room for the point labels
  ax.set_xlabel(f"multiply-adds per image ({_unit(results)[1]}, log scale)")
  ax.set_ylabel("top-1 accuracy (%)")
  ax.set_title(title)
  ax.grid(True, which="both", alpha=0.3)
  ax.legend()


def single_dimension_figure(results: SweepResults) -> Figure | None:
  """Figure 3: one panel per dimension (width, depth, resolution) scaled alone.

  None when no dimension has an evaluated run besides the baseline.
  """
  fig = Figure(figsize=(15, 4.5))
  axes = fig.subplots(1, 3, sharey=True)
  drawn = False
  for ax, kind in zip(axes, ("width", "depth", "resolution")):
    if _plot_curve(ax, results, kind, annotate=True):
      drawn = True
      _style(ax, results, f"Scaling {kind} only")
    else:
      ax.set_axis_off()
  if not drawn:
    return None
  fig.suptitle(f"Single-dimension scaling of {_base_name(results)} (paper Figure 3)")
  fig.tight_layout()
  return fig


def compound_figure(results: SweepResults) -> Figure | None:
  """Figure 8: compound scaling against each single dimension, on one axes.

  None without evaluated compound (φ) runs.
  """
  fig = Figure(figsize=(7, 5))
  ax = fig.subplots()
  for kind in ("width", "depth", "resolution"):
    _plot_curve(ax, results, kind, annotate=False, color=f"C{KINDS.index(kind)}")
  # Drawn last and thicker: the curve the figure is about stays on top.
  if not _plot_curve(ax, results, "phi", annotate=False, color="C0", linewidth=2.5, zorder=3):
    return None
  _style(ax, results, f"Scaling {_base_name(results)} (paper Figure 8)")
  handles, labels = ax.get_legend_handles_labels()
  order = sorted(range(len(labels)), key=lambda i: KINDS.index(_KIND_OF_LABEL[labels[i]]))
  ax.legend([handles[i] for i in order], [labels[i] for i in order])
  fig.tight_layout()
  return fig


FIGURES = {"figure3_single_dimension.png": single_dimension_figure,
           "figure8_compound.png": compound_figure}


def report(results: SweepResults, out_dir: str) -> tuple[str, list[str]]:
  """All tables as markdown, written to <out_dir>/tables.md, and the figures as PNGs.

  Returns (markdown, paths of the figures written).
  """
  out = epath.Path(out_dir)
  out.mkdir(parents=True, exist_ok=True)
  sections = [f"# Sweep {results.directory}",
              "## Size and accuracy (paper Table 2)",
              paper_tables.to_markdown(SIZE_ACCURACY_HEADER, size_accuracy_rows(results))]
  table3 = table3_rows(results)
  if table3 and results.base is not None:
    sections += ["## Single-dimension vs compound scaling (paper Table 3)",
                 paper_tables.to_markdown(TABLE3_HEADER, table3)]
  if any(r.kind == "grid" for r in results.results):
    best = best_grid(results)
    sections += ["## Step 1: α, β, γ grid at φ=1, best first",
                 paper_tables.to_markdown(GRID_HEADER, grid_rows(results)),
                 f"Best: α={best.alpha:g}, β={best.beta:g}, γ={best.gamma:g} "
                 f"(top-1 {100 * best.top1:.1f}%)" if best else "No candidate evaluated yet."]
  markdown = "\n\n".join(sections) + "\n"
  (out / "tables.md").write_text(markdown)
  figures = []
  for name, make in FIGURES.items():
    fig = make(results)
    if fig is not None:
      with (out / name).open("wb") as f:  # epath: a gs:// out_dir works too
        fig.savefig(f, format="png", dpi=120)
      figures.append(str(out / name))
  return markdown, figures
