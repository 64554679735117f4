"""Step 1 of the paper as one command: at φ=1, train every α, β, γ ≥ 1 of a grid with
α·β²·γ² ≈ 2 (within --tolerance) for a short budget, here one after another, and report
the candidates ranked by top-1 with the best triple (the paper found 1.2, 1.1, 1.15).

The budget is the base config's, changed with --override. Rerunning skips finished
candidates and retries failed ones; a failed candidate does not stop the others, is listed
with its exit status and log in the outcome table, and makes the command exit with 1
after the ranking of the others. For a cluster, launch the same grid with
`efficientnet-sweep --grid=... --backend=tpu|slurm` and rank it here with --report_only.

  efficientnet-grid-search --config=configs/b0.py --sweep_dir=runs/grid \\
      --num_classes=1000 --dry_run                           # the candidates, sized
  efficientnet-grid-search --config=configs/demo.py --sweep_dir=runs/grid_demo \\
      --step=0.1 --maximum=1.3 --tolerance=0.2 --override=config.num_epochs=10
  efficientnet-grid-search --sweep_dir=runs/grid_demo --report_only
"""

from __future__ import annotations

import os
import sys

from absl import app, flags

from efficientnet_jax import terminal
from efficientnet_jax.research import paper_tables, sweep_results, sweep

_CONFIG = flags.DEFINE_string("config", None, "Base config file, optionally with :ARG.")
_SWEEP_DIR = flags.DEFINE_string("sweep_dir", None, "One workdir per candidate under it.")
_STEP = flags.DEFINE_float("step", 0.05, "Grid step of α, β and γ.")
_MAXIMUM = flags.DEFINE_float("maximum", 1.4, "Largest α, β, γ on the grid (from 1).")
_TOLERANCE = flags.DEFINE_float("tolerance", 0.1, "Allowed |α·β²·γ² − 2|.")
_OVERRIDE = flags.DEFINE_multi_string(
    "override", [], "config.KEY=VALUE for every candidate, e.g. config.num_epochs=20.")
_NUM_CLASSES = flags.DEFINE_integer(
    "num_classes", 0, "Classifier size for the predicted sizes; 0: the config's or the "
    "dataset's.")
_DRY_RUN = flags.DEFINE_bool("dry_run", False, "List the candidates; train nothing.")
flags.DEFINE_alias("dry-run", "dry_run")
_REPORT_ONLY = flags.DEFINE_bool("report_only", False,
                                 "Rank the candidates already in --sweep_dir; train nothing.")
_VERBOSE = flags.DEFINE_bool("verbose", False, terminal.VERBOSE_HELP)
flags.mark_flag_as_required("sweep_dir")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  summary = ""
  if not _REPORT_ONLY.value:
    if not _CONFIG.value:
      raise ValueError("--config is required unless --report_only")
    axis = sweep.GridRange(1.0, _MAXIMUM.value, _STEP.value)
    runs = sweep.expand(_CONFIG.value, _SWEEP_DIR.value, overrides=_OVERRIDE.value,
                        grid_ranges={"alpha": axis, "beta": axis, "gamma": axis},
                        tolerance=_TOLERANCE.value, num_classes=_NUM_CLASSES.value or None)
    print(f"{len(runs)} candidates with |α·β²·γ² − 2| <= {_TOLERANCE.value} at φ=1:\n")
    print(paper_tables.to_markdown(sweep.RUNS_HEADER, sweep.runs_table(runs)), end="\n\n")
    if _DRY_RUN.value:
      return
    sweep.write_manifest(_SWEEP_DIR.value, runs, _CONFIG.value, _OVERRIDE.value)
    if not _VERBOSE.value:  # the runs' progress on the terminal, log lines in sweep.log
      terminal.quiet_output(os.path.join(_SWEEP_DIR.value, "sweep.log"))
    outcomes = sweep.train_local(runs, _CONFIG.value, _OVERRIDE.value)
    print(paper_tables.to_markdown(sweep.OUTCOME_HEADER, sweep.outcome_table(outcomes)),
          end="\n\n")
    summary = sweep.summary_line(outcomes)
  results = sweep_results.load(_SWEEP_DIR.value, _NUM_CLASSES.value or None)
  if not sweep_results.grid_results(results):
    sys.exit(f"--sweep_dir={_SWEEP_DIR.value} holds no grid candidates")
  print(paper_tables.to_markdown(sweep_results.GRID_HEADER,
                                 sweep_results.grid_rows(results)))
  best = sweep_results.best_grid(results)
  if best is None:
    sys.exit("no candidate has been evaluated yet")
  print(f"\nBest: α={best.alpha:g}, β={best.beta:g}, γ={best.gamma:g} "
        f"(top-1 {100 * best.top1:.2f}%; paper: 1.2, 1.1, 1.15)")
  if summary:  # the best of those that finished, and still a failure
    sys.exit(summary)


if __name__ == "__main__":
  app.run(main)
