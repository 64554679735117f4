"""Launch a scaling sweep: φ values, the α/β/γ grid (paper step 1), or one dimension.

Every run is `python -m efficientnet_jax.main --config=CONFIG --workdir=SWEEP_DIR/RUN`
plus its `--config.model.*` flags and every `--override`. Width, depth and resolution
values are multipliers of the base config's own scaling; φ runs scale it by α^φ, β^φ,
γ^φ (config.model.alpha/beta/gamma, 1.2/1.1/1.15 by default).

  # Preview: the runs, their predicted params and multiply-adds, and the commands.
  efficientnet-sweep --config=configs/b0.py --sweep_dir=runs/phi --phi=0,1,2,3 \\
      --num_classes=1000 --dry_run

  # Here, one after another (rerunning skips finished runs): a small network on the
  # offline digits data, 6 epochs per run, tables and figures into runs/sweep_demo.
  efficientnet-sweep --config=configs/demo.py --sweep_dir=runs/sweep_demo \\
      --phi=0,1 --width=2 --depth=3 --resolution=1.5 --num_classes=10 \\
      --override=config.model.width=0.25 --override=config.model.depth=0.25 \\
      --override=config.model.resolution_multiple=4 --override=config.model.bn_momentum=0.9 \\
      --override=config.input.crop_area_range=1.0,1.0 \\
      --override=config.num_epochs=6 --override=config.eval_every_epochs=6 \\
      --override=config.schedule.warmup_epochs=1 --override=config.ema_decay=0 \\
      --override=config.optimizer.base_learning_rate=0.032 \\
      --override=config.checkpoint_every_steps=10000

  # Cloud TPU VM slices (every worker of a slice runs `main.py --distributed`):
  efficientnet-sweep --config=configs/b0.py --sweep_dir=gs://BUCKET/sweeps/phi \\
      --phi=1,2,3,4 --backend=tpu --tpu_names=slice-a,slice-b --zone=us-central2-b \\
      --repo_dir=efficientnet-jax --override=config.data_dir=gs://BUCKET/tfds \\
      --num_classes=1000 --dry_run

  # SLURM: an array job, one task (of --nodes nodes) per run; sbatch without --dry_run.
  efficientnet-sweep --config=configs/b0.py --sweep_dir=/shared/sweeps/grid \\
      --grid=alpha:1.0:1.4:0.05,beta:1.0:1.4:0.05,gamma:1.0:1.4:0.05 --tolerance=0.1 \\
      --backend=slurm --nodes=2 --gpus_per_node=8 --num_classes=1000 --dry_run

The local backend writes the tables and figures into SWEEP_DIR when it finishes; for the
others (or at any time) run `efficientnet-tables --sweep_dir=SWEEP_DIR`.

A failed run does not stop the others. The local and TPU backends end with a table of each
run's outcome (done, skipped, FAILED with its exit status and log, unfinished) and exit
with status 1 if any run failed; rerunning the same local command retries only the failed
and unfinished runs. SLURM: each array task records its exit status in its workdir, and a
summary job (after the whole array) prints the same table into SWEEP_DIR/sweep-summary.out;
print it at any time with

  efficientnet-sweep --sweep_dir=/shared/sweeps/grid --status
"""

from __future__ import annotations

import os
import sys

from absl import app, flags

from efficientnet_jax import terminal
from efficientnet_jax.research import paper_tables, sweep_results, sweep

_CONFIG = flags.DEFINE_string("config", None, "Base config file, optionally with :ARG.")
_SWEEP_DIR = flags.DEFINE_string("sweep_dir", None, "One workdir per run is made under it.")
_PHI = flags.DEFINE_list("phi", [], "Compound coefficients φ, e.g. 0,0.5,1,2.")
_GRID = flags.DEFINE_string(
    "grid", None, "Paper step 1 at φ=1: alpha:START:STOP:STEP,beta:…,gamma:… (one STEP), "
    "keeping α·β²·γ² within --tolerance of 2.")
_TOLERANCE = flags.DEFINE_float("tolerance", 0.1, "Allowed |α·β²·γ² − 2| for --grid.")
_WIDTH = flags.DEFINE_list("width", [], "Width multipliers of the base, e.g. 1.4,2.")
_DEPTH = flags.DEFINE_list("depth", [], "Depth multipliers of the base, e.g. 2,4.")
_RESOLUTION = flags.DEFINE_list("resolution", [], "Resolution multipliers of the base.")
_OVERRIDE = flags.DEFINE_multi_string(
    "override", [], "config.KEY=VALUE for every run, e.g. config.num_epochs=20 (repeatable).")
_NUM_CLASSES = flags.DEFINE_integer(
    "num_classes", 0, "Classifier size for the predicted sizes; 0: config.model.num_classes "
    "or the dataset's (read from tfds).")
_BACKEND = flags.DEFINE_enum("backend", "local", ["local", "tpu", "slurm"],
                             "Where the runs train.")
_DRY_RUN = flags.DEFINE_bool("dry_run", False, "Print the runs and commands; start nothing.")
flags.DEFINE_alias("dry-run", "dry_run")
_PYTHON = flags.DEFINE_string("python", None, "Python on the training machines (default: "
                              "this interpreter locally, `python` on TPU VMs and SLURM).")
_REPO_DIR = flags.DEFINE_string(
    "repo_dir", None, "The checkout on the training machines (tpu: relative to the home "
    "directory, default efficientnet-jax; slurm: default this checkout).")
_TPU_NAMES = flags.DEFINE_list("tpu_names", [], "Cloud TPU VM names; runs go round-robin.")
_ZONE = flags.DEFINE_string("zone", None, "Zone of the TPU VMs.")
_PROJECT = flags.DEFINE_string("project", None, "Google Cloud project (default: gcloud's).")
_JOB_NAME = flags.DEFINE_string("job_name", "efficientnet-sweep", "SLURM job name.")
_NODES = flags.DEFINE_integer("nodes", 1, "SLURM nodes per run.")
_GPUS_PER_NODE = flags.DEFINE_integer("gpus_per_node", 8, "GPUs per SLURM node.")
_PARTITION = flags.DEFINE_string("partition", None, "SLURM partition.")
_ACCOUNT = flags.DEFINE_string("account", None, "SLURM account.")
_TIME = flags.DEFINE_string("time", None, "SLURM time limit per run, e.g. 48:00:00.")
_MAX_PARALLEL = flags.DEFINE_integer("max_parallel", 0,
                                     "SLURM: at most this many runs at once (0: no limit).")
_STATUS = flags.DEFINE_bool(
    "status", False, "Print the outcome of every run of the sweep in --sweep_dir (any "
    "backend); exit status 1 if one failed or is unfinished. Needs no --config.")
_VERBOSE = flags.DEFINE_bool("verbose", False, terminal.VERBOSE_HELP)
flags.mark_flag_as_required("sweep_dir")


def _floats(values: list[str], flag: str) -> list[float]:
  try:
    return [float(v) for v in values]
  except ValueError:
    raise ValueError(f"--{flag}: expected numbers, got {','.join(values)}") from None


def report_outcomes(outcomes: list[sweep.Outcome]) -> None:
  """The outcome table; exits with status 1 naming the failed and unfinished runs."""
  print(paper_tables.to_markdown(sweep.OUTCOME_HEADER, sweep.outcome_table(outcomes)))
  summary = sweep.summary_line(outcomes)
  if summary:
    sys.exit(summary)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  try:
    launch()
  except ValueError as e:  # a bad flag or a sweep directory that is not one: no traceback
    sys.exit(f"error: {e}")


def launch() -> None:
  if _STATUS.value:
    report_outcomes(sweep.read_outcomes(_SWEEP_DIR.value))
    return
  if not _CONFIG.value:
    raise ValueError("--config is required (unless --status)")
  runs = sweep.expand(
      _CONFIG.value, _SWEEP_DIR.value, overrides=_OVERRIDE.value,
      phis=_floats(_PHI.value, "phi"),
      grid_ranges=sweep.parse_grid(_GRID.value) if _GRID.value else None,
      tolerance=_TOLERANCE.value, widths=_floats(_WIDTH.value, "width"),
      depths=_floats(_DEPTH.value, "depth"),
      resolutions=_floats(_RESOLUTION.value, "resolution"),
      num_classes=_NUM_CLASSES.value or None)
  print(paper_tables.to_markdown(sweep.RUNS_HEADER, sweep.runs_table(runs)), end="\n\n")
  overrides = _OVERRIDE.value
  dry_run = _DRY_RUN.value

  if _BACKEND.value == "local":
    if dry_run:
      python = _PYTHON.value or sys.executable
      for run in sweep.to_train(runs):
        print(" ".join([python, "-m", sweep.MAIN_MODULE,
                        *sweep.main_args(run, _CONFIG.value, overrides)]))
      return
    sweep.write_manifest(_SWEEP_DIR.value, runs, _CONFIG.value, overrides)
    if not _VERBOSE.value:  # the runs' progress on the terminal, log lines in sweep.log
      terminal.quiet_output(os.path.join(_SWEEP_DIR.value, "sweep.log"))
    outcomes = sweep.train_local(runs, _CONFIG.value, overrides,
                                 python=_PYTHON.value or sys.executable)
    # Everything ran here: the tables and figures can be made at once (failed runs show
    # their predicted size and no accuracy).
    markdown, figures = sweep_results.report(
        sweep_results.load(_SWEEP_DIR.value, _NUM_CLASSES.value or None), _SWEEP_DIR.value)
    print("\n" + markdown + "".join(f"wrote {path}\n" for path in figures))
  elif _BACKEND.value == "tpu":
    commands = sweep.tpu_commands(
        runs, _CONFIG.value, overrides, tpu_names=_TPU_NAMES.value, zone=_ZONE.value,
        repo_dir=_REPO_DIR.value or "efficientnet-jax", python=_PYTHON.value or "python",
        project=_PROJECT.value)
    if dry_run:
      for c in commands:
        print(f"# {c.run.name} on {c.tpu}\n{c.shell()}")
      return
    sweep.write_manifest(_SWEEP_DIR.value, runs, _CONFIG.value, overrides)
    if not _VERBOSE.value:  # the runs' progress on the terminal, log lines in sweep.log
      terminal.quiet_output(os.path.join(_SWEEP_DIR.value, "sweep.log"))
    # Each run's output also in a local file: the sweep directory is a bucket.
    log_dir = (_SWEEP_DIR.value if "://" not in _SWEEP_DIR.value else
               os.path.join("sweep_logs", os.path.basename(_SWEEP_DIR.value.rstrip("/"))))
    outcomes = sweep.drive_tpu(commands, log_dir=log_dir)
  else:
    script = sweep.slurm_script(
        runs, _CONFIG.value, overrides, job_name=_JOB_NAME.value, nodes=_NODES.value,
        gpus_per_node=_GPUS_PER_NODE.value,
        repo_dir=_REPO_DIR.value or sweep.REPO_ROOT, log_dir=_SWEEP_DIR.value,
        python=_PYTHON.value or "python", partition=_PARTITION.value,
        account=_ACCOUNT.value, time_limit=_TIME.value, max_parallel=_MAX_PARALLEL.value)
    if dry_run:
      print(script)
      return
    sweep.write_manifest(_SWEEP_DIR.value, runs, _CONFIG.value, overrides)
    if not _VERBOSE.value:  # the runs' progress on the terminal, log lines in sweep.log
      terminal.quiet_output(os.path.join(_SWEEP_DIR.value, "sweep.log"))
    path = os.path.join(_SWEEP_DIR.value, "sweep.sbatch")
    reply = sweep.submit_slurm(script, path)
    print(f"{path}: {reply}")
    summary = sweep.submit_slurm_summary(
        reply, _SWEEP_DIR.value, job_name=_JOB_NAME.value,
        repo_dir=_REPO_DIR.value or sweep.REPO_ROOT, python=_PYTHON.value or "python",
        partition=_PARTITION.value, account=_ACCOUNT.value)
    print(f"outcome table job (into {_SWEEP_DIR.value}/sweep-summary.out): {summary}\n"
          f"at any time: efficientnet-sweep --sweep_dir={_SWEEP_DIR.value} --status")
    return
  print()
  report_outcomes(outcomes)


if __name__ == "__main__":
  app.run(main)
