"""Scaling sweeps: expand φ values, the α/β/γ grid or single-dimension multipliers into
runs, and launch them here, on Cloud TPU VM slices, or as a SLURM job array.

A run is the base config (a `configs/` file with its optional `:arg`) plus override
flags, exactly what `python -m efficientnet_jax.main` accepts, trained in its own workdir
`<sweep_dir>/<run name>`. Multipliers are relative to the base config's own scaling (for
configs/b0.py that is B0's row: width 1, depth 1, resolution 224), so the same sweep
works on a small demo network and on any family: a base without the φ formula
(EfficientNetV2, Lite, EdgeTPU) has its own row scaled by α^φ, β^φ, γ^φ, its evaluation
size with its training size. Every run's config is parsed and its size computed before
anything is launched, so a bad flag fails in seconds, not after the first run trained.

`sweep.json` in the sweep directory records the base and the runs; `scaling_results`
reads it with each workdir's config.json and metrics.jsonl.

A run that fails does not stop the others. Each launch records how it ended in the run's
workdir (`sweep_status.json`: exit status and log file; the local backend writes it, and
the SLURM script after each array task), and every backend ends with one table of
outcomes (`outcome_table`): done, skipped (finished before), FAILED with its exit status
and log, or unfinished. Rerunning a local sweep retries only the failed and unfinished
runs (`is_done`).
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import json
import math
import os
import re
import shlex
import signal
import subprocess
import sys
import threading
import time
from typing import Any, Callable, Sequence

from absl import flags
from etils import epath
import ml_collections
from ml_collections import config_flags

from efficientnet_jax import configs, terminal
from efficientnet_jax.models import costs, registry, scaling
from efficientnet_jax.training import metrics_log

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MAIN_MODULE = "efficientnet_jax.main"
MANIFEST = "sweep.json"
DONE_FILE = "done.json"   # written by the local backend after a run finished
STATUS_FILE = "sweep_status.json"  # how a run's last launch ended: exit status and log
_POLL_SECONDS = 2.0       # how often the local backend's bar reads a run's metrics.jsonl
DIMENSIONS = ("width", "depth", "resolution")
GRID_TARGET = 2.0         # paper step 1: α·β²·γ² ≈ 2, so each unit of φ doubles the FLOPs
EFFICIENTNET = registry.DEFAULT_FAMILY


# --- Configs: parsed by the same absl/ml_collections machinery as main.py. ---

def load_config(config_arg: str, flag_args: Sequence[str] = ()) -> ml_collections.ConfigDict:
  """The config `main.py --config=config_arg *flag_args` would train."""
  argv = ["sweep", f"--config={configs.resolve(config_arg)}", *flag_args]
  values = flags.FlagValues()
  config_flags.DEFINE_config_file("config", None, "Base config.", flag_values=values,
                                  lock_config=True, sys_argv=argv)
  try:
    values(argv)
  # A bad file, an unknown key, a bad value; TypeError/ValueError: a key below a leaf
  # (--config.model.variant.x=1), which ml_collections' override parser cannot walk.
  except (flags.Error, AttributeError, KeyError, TypeError, ValueError) as e:
    raise ValueError(f"--config={config_arg} {' '.join(flag_args)}: {e}") from None
  if not isinstance(values.config, ml_collections.ConfigDict):
    raise ValueError(f"--config={config_arg}: get_config() did not return a ConfigDict")
  return values.config


def override_flags(overrides: Sequence[str]) -> list[str]:
  """['config.num_epochs=20', …] (the --override values) → ['--config.num_epochs=20', …]."""
  out = []
  for item in overrides:
    item = item.strip()
    if not re.fullmatch(r"config(\.\w+)+=.*", item):
      raise ValueError(f"--override={item!r}: expected config.KEY=VALUE, e.g. "
                       "config.num_epochs=20")
    out.append("--" + item)
  return out


def family(model_config: Any) -> str:
  """The family name of `config.model` (as the registry resolves it)."""
  return registry.family_of(model_config).name


def dataset_classes(config: ml_collections.ConfigDict) -> int:
  """The classifier size training will use: config.model.num_classes or the dataset's."""
  if config.model.num_classes is not None:
    return config.model.num_classes
  from efficientnet_jax.data import input_pipeline  # imports TensorFlow: only when needed
  try:
    return input_pipeline.dataset_info(config).num_classes
  except Exception as e:  # not downloaded here, a bucket out of reach, …: all mean the same
    raise ValueError(f"cannot read the class count of config.dataset={config.dataset!r} "
                     f"on this machine ({type(e).__name__}: {str(e)[:200]}); pass "
                     "--num_classes (1000 for ImageNet) or set config.model.num_classes"
                     ) from None


def network_cost(model_config: Any, num_classes: int) -> tuple[int, int]:
  """(trainable parameters, multiply-adds at the evaluation size, as papers count them) of
  the network `config.model` describes."""
  size = registry.scaling_of(model_config)
  network = registry.network_of(model_config)
  for key, value in (("resolution", size.resolution), ("eval_resolution", size.eval_size)):
    if value < network.total_stride:  # as the config validator refuses it
      raise ValueError(f"config.model.{key} {value} is smaller than the network's total "
                       f"stride {network.total_stride}")
  return (costs.count_params(network, num_classes),
          costs.multiply_adds(network, size.eval_size, num_classes))


# --- Expanding a sweep. ---

@dataclasses.dataclass(frozen=True)
class GridRange:
  start: float
  stop: float
  step: float


def parse_grid(text: str) -> dict[str, GridRange]:
  """'alpha:1.0:1.4:0.05,beta:1.0:1.4:0.05,gamma:1.0:1.4:0.05' → {name: range}."""
  ranges = {}
  for item in text.split(","):
    parts = item.strip().split(":")
    if len(parts) != 4 or parts[0] not in ("alpha", "beta", "gamma"):
      raise ValueError(f"--grid: expected alpha:START:STOP:STEP,beta:…,gamma:…, got {item!r}")
    try:
      start, stop, step = map(float, parts[1:])
    except ValueError:
      raise ValueError(f"--grid: {item!r} has a non-numeric bound") from None
    if not 1.0 <= start <= stop or step <= 0:
      raise ValueError(f"--grid: {item!r} needs 1 <= START <= STOP and STEP > 0 "
                       "(the paper searches α, β, γ >= 1)")
    ranges[parts[0]] = GridRange(start, stop, step)
  if set(ranges) != {"alpha", "beta", "gamma"}:
    raise ValueError(f"--grid must give alpha, beta and gamma ranges, got {sorted(ranges)}")
  if len({r.step for r in ranges.values()}) != 1:
    raise ValueError("--grid: alpha, beta and gamma must share one STEP (one grid)")
  return ranges


def grid(ranges: dict[str, GridRange], tolerance: float) -> list[scaling.GridCandidate]:
  """The candidates of paper step 1 inside `ranges`: |α·β²·γ² − 2| ≤ tolerance."""
  if not 0 <= tolerance < GRID_TARGET:
    raise ValueError(f"--tolerance must be in [0, {GRID_TARGET}), got {tolerance}")
  step = ranges["alpha"].step
  maximum = max(r.stop for r in ranges.values())
  inside = lambda value, r: r.start - 1e-9 <= value <= r.stop + 1e-9
  return [c for c in scaling.grid_candidates(step, maximum, GRID_TARGET, tolerance)
          if all(inside(getattr(c, name), r) for name, r in ranges.items())]


@dataclasses.dataclass(frozen=True)
class Run:
  """One training run of a sweep and its predicted size."""

  name: str
  kind: str                   # "phi" | "grid" | "width" | "depth" | "resolution"
  value: float                # φ, or the multiplier of the scaled dimension (grid: φ=1)
  flags: tuple[str, ...]      # --config.model.* flags on top of the base and --override
  workdir: str
  family: str
  width: float
  depth: float
  resolution: int
  params: int
  multiply_adds: int
  num_classes: int
  alpha: float | None = None
  beta: float | None = None
  gamma: float | None = None
  same_as: str | None = None  # an earlier run builds this network: not trained again


def _number(x: float) -> str:
  return f"{x:.6g}"


def _compound_flags(base: ml_collections.ConfigDict, base_size: scaling.Scaling, phi: float,
                    alpha: float, beta: float, gamma: float) -> list[str]:
  m = base.model
  formula = ["--config.model.variant=phi", f"--config.model.phi={_number(phi)}",
             f"--config.model.alpha={_number(alpha)}", f"--config.model.beta={_number(beta)}",
             f"--config.model.gamma={_number(gamma)}"]
  if not registry.family_of(m).compound_scaling:
    formula = []  # V2, Lite, EdgeTPU: their rows are not φ's; scale the base's row alone
  elif m.variant == "b0" and all(m[k] is None for k in DIMENSIONS):
    return formula  # B0 itself is the baseline: the φ formula alone says it
  # Any other base: scale its own width/depth/resolution (these overrides win over φ's row).
  return formula + [
      f"--config.model.width={_number(base_size.width * beta**phi)}",
      f"--config.model.depth={_number(base_size.depth * alpha**phi)}",
      *_resolution_flags(base, base_size, gamma**phi)]


def _resolution_flags(base: ml_collections.ConfigDict, base_size: scaling.Scaling,
                      multiplier: float) -> list[str]:
  """The training size scaled, and the evaluation size with it where the base has its own
  (V2-S: 300 / 384)."""
  def scaled(resolution: int) -> int:  # the base's own size as it is (V2-S's 300 is no 8k)
    if multiplier == 1:
      return resolution
    return scaling.round_resolution(resolution * multiplier, base.model.resolution_multiple)

  out = [f"--config.model.resolution={scaled(base_size.resolution)}"]
  if base_size.eval_size != base_size.resolution:
    out.append(f"--config.model.eval_resolution={scaled(base_size.eval_size)}")
  return out


def _dimension_flags(base: ml_collections.ConfigDict, base_size: scaling.Scaling,
                     dimension: str, multiplier: float) -> list[str]:
  if dimension == "resolution":
    return _resolution_flags(base, base_size, multiplier)
  return [f"--config.model.{dimension}={_number(getattr(base_size, dimension) * multiplier)}"]


def _checked(values: Sequence[float], flag: str, positive: bool) -> list[float]:
  for v in values:
    if not math.isfinite(v) or (positive and v <= 0):
      raise ValueError(f"--{flag}: {v!r} is not a valid value")
  return list(values)


def expand(config_arg: str, sweep_dir: str, *, overrides: Sequence[str] = (),
           phis: Sequence[float] = (), grid_ranges: dict[str, GridRange] | None = None,
           tolerance: float = 0.1, widths: Sequence[float] = (), depths: Sequence[float] = (),
           resolutions: Sequence[float] = (), num_classes: int | None = None) -> list[Run]:
  """The runs of a sweep, each parsed exactly as main.py will and sized.

  A run that builds the same network as an earlier one (φ=0 and width×1 are both the base;
  the grid holds the φ=1 triple) gets `same_as` and shares that run's workdir.
  """
  if not sweep_dir:
    raise ValueError("--sweep_dir is required")
  extra = override_flags(overrides)
  base = load_config(config_arg, extra)
  try:
    base_size = registry.scaling_of(base.model)
  except ValueError as e:
    raise ValueError(f"--config={config_arg}: {e}") from None
  m = base.model
  planned: list[tuple[str, str, float, list[str], tuple]] = []
  for phi in _checked(phis, "phi", positive=False):
    planned.append((f"phi_{phi:g}", "phi", phi,
                    _compound_flags(base, base_size, phi, m.alpha, m.beta, m.gamma),
                    (m.alpha, m.beta, m.gamma)))
  if grid_ranges is not None:
    candidates = grid(grid_ranges, tolerance)
    if not candidates:
      raise ValueError(f"--grid: no α, β, γ in the ranges satisfy |α·β²·γ² − 2| <= "
                       f"{tolerance}; widen the ranges or --tolerance")
    for c in candidates:
      planned.append((f"grid_a{c.alpha:g}_b{c.beta:g}_g{c.gamma:g}", "grid", 1.0,
                      _compound_flags(base, base_size, 1.0, c.alpha, c.beta, c.gamma),
                      (c.alpha, c.beta, c.gamma)))
  for dimension, values in zip(DIMENSIONS, (widths, depths, resolutions)):
    for v in _checked(values, dimension, positive=True):
      planned.append((f"{dimension}_{v:g}", dimension, v,
                      _dimension_flags(base, base_size, dimension, v), (None, None, None)))
  if not planned:
    raise ValueError("nothing to sweep: give --phi, --grid, --width, --depth or --resolution")

  classes = num_classes or dataset_classes(base)
  runs, seen = [], {}
  for name, kind, value, run_flags, (alpha, beta, gamma) in planned:
    config = load_config(config_arg, extra + run_flags)
    try:
      size = registry.scaling_of(config.model)
      params, multiply_adds = network_cost(config.model, classes)
    except ValueError as e:
      raise ValueError(f"run {name} ({' '.join(run_flags)}): {e}") from None
    key = (family(config.model), size.width, size.depth, size.resolution)
    same_as = seen.setdefault(key, name)
    runs.append(Run(name=name, kind=kind, value=value, flags=tuple(run_flags),
                    workdir=os.path.join(sweep_dir, same_as), family=key[0],
                    width=size.width, depth=size.depth, resolution=size.resolution,
                    params=params, multiply_adds=multiply_adds, num_classes=classes,
                    alpha=alpha, beta=beta, gamma=gamma,
                    same_as=None if same_as == name else same_as))
  return runs


def to_train(runs: Sequence[Run]) -> list[Run]:
  """The runs that need training (not the repeats of an earlier run's network)."""
  return [r for r in runs if r.same_as is None]


RUNS_HEADER = ("run", "kind", "value", "width", "depth", "resolution", "params",
               "multiply-adds (B)", "flags")


def runs_table(runs: Sequence[Run]) -> list[tuple]:
  return [(r.name, r.kind, f"{r.value:g}", f"{r.width:.3f}", f"{r.depth:.3f}", r.resolution,
           f"{r.params:,}", f"{r.multiply_adds / 1e9:.4g}",
           f"(same network as {r.same_as})" if r.same_as else " ".join(r.flags))
          for r in runs]


def write_manifest(sweep_dir: str, runs: Sequence[Run], config_arg: str,
                   overrides: Sequence[str]) -> None:
  """sweep.json: the base config, its scaling, and every run (what scaling_results reads)."""
  base = load_config(config_arg, override_flags(overrides))
  size = registry.scaling_of(base.model)
  manifest = {
      "config": config_arg, "overrides": list(overrides),
      "base": {"family": family(base.model), "variant": base.model.variant,
               "width": size.width, "depth": size.depth, "resolution": size.resolution},
      # Workdirs relative to the sweep directory, so it can be copied or mounted elsewhere.
      "runs": [dict(dataclasses.asdict(r), workdir=os.path.basename(r.workdir),
                    flags=list(r.flags)) for r in runs],
  }
  path = epath.Path(sweep_dir)
  path.mkdir(parents=True, exist_ok=True)
  (path / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")


def main_args(run: Run, config_arg: str, overrides: Sequence[str]) -> list[str]:
  """main.py's arguments for one run: base config, workdir, --override flags, run flags."""
  return [f"--config={config_arg}", f"--workdir={run.workdir}", *override_flags(overrides),
          *run.flags]


# --- Outcomes: how each run of a sweep ended, one table for every backend. ---

DONE, SKIPPED, FAILED, UNFINISHED = "done", "skipped (done before)", "FAILED", "unfinished"


@dataclasses.dataclass(frozen=True)
class Outcome:
  """How one run ended: DONE, SKIPPED, FAILED (exit status, or 0 with no evaluation logged)
  or UNFINISHED (never launched, or its launcher was stopped before it ended)."""

  name: str
  status: str
  exit_status: int | None = None
  log: str | None = None
  top1: float | None = None
  note: str = ""

  @property
  def failed(self) -> bool:
    return self.status == FAILED


OUTCOME_HEADER = ("run", "outcome", "exit status", "top-1 (%)", "log")


def describe_exit(code: int | None) -> str:
  """0, 1, "-9 (SIGKILL)" (Popen's killed by a signal), "137 (SIGKILL)" (a shell's)."""
  if code is None:
    return ""
  number = -code if code < 0 else code - 128 if 128 < code < 128 + 65 else None
  try:
    return f"{code} ({signal.Signals(number).name})" if number else str(code)
  except ValueError:  # not a signal number
    return str(code)


def outcome_table(outcomes: Sequence[Outcome]) -> list[tuple]:
  return [(o.name, o.status + (f": {o.note}" if o.note else ""), describe_exit(o.exit_status),
           "" if o.top1 is None else f"{100 * o.top1:.2f}", o.log or "")
          for o in outcomes]


def summary_line(outcomes: Sequence[Outcome]) -> str:
  """'1 of 3 runs failed (width_2), 1 unfinished (phi_1); rerun …', or '' when all done."""
  failed = [o.name for o in outcomes if o.failed]
  unfinished = [o.name for o in outcomes if o.status == UNFINISHED]
  parts = []
  if failed:
    parts.append(f"{len(failed)} of {len(outcomes)} runs failed ({', '.join(failed)})")
  if unfinished:
    parts.append(f"{len(unfinished)} unfinished ({', '.join(unfinished)})")
  if not parts:
    return ""
  return ", ".join(parts) + "; rerun the same command to retry only those"


def write_status(workdir: str, exit_status: int, log: str | None) -> None:
  """Records how a run's launch ended (a failure is kept until the next launch)."""
  with open(os.path.join(workdir, STATUS_FILE), "w") as f:
    json.dump({"exit_status": exit_status, "log": log}, f)


def read_outcome(name: str, workdir: str) -> Outcome:
  """A run's outcome from what its workdir holds (`STATUS_FILE`, metrics.jsonl)."""
  path = epath.Path(workdir, STATUS_FILE)
  result = final_eval(workdir)
  top1 = result["eval_top1"] if result else None
  if not path.exists():
    return Outcome(name, UNFINISHED, top1=top1)
  try:
    status = json.loads(path.read_text())
    code = int(status["exit_status"])
  except (ValueError, KeyError, TypeError):  # cut short while written: as if not written
    return Outcome(name, UNFINISHED, top1=top1, note=f"unreadable {path}")
  log = status.get("log")
  if code:
    return Outcome(name, FAILED, code, log, top1)
  if result is None:
    return Outcome(name, FAILED, code, log, note="no evaluation logged")
  return Outcome(name, DONE, code, log, top1)


def read_outcomes(sweep_dir: str) -> list[Outcome]:
  """Every trained run of the sweep in `sweep_dir` (its sweep.json), with its outcome."""
  manifest = epath.Path(sweep_dir, MANIFEST)
  if not manifest.exists():
    raise ValueError(f"{manifest} does not exist: no sweep was launched in {sweep_dir}")
  runs = json.loads(manifest.read_text())["runs"]
  return [read_outcome(r["name"], os.path.join(sweep_dir, r["workdir"]))
          for r in runs if r.get("same_as") is None]


# --- Local backend: one run after another on this machine, resumable. ---

def _absolute(path: str) -> str:
  return path if "://" in path else os.path.abspath(path)


def _absolute_config(config_arg: str) -> str:
  path, sep, arg = config_arg.partition(":")
  return os.path.abspath(path) + sep + arg


def is_done(workdir: str, args: Sequence[str]) -> bool:
  """True if the local backend finished this run with exactly these arguments."""
  path = os.path.join(workdir, DONE_FILE)
  if not os.path.exists(path):
    return False
  with open(path) as f:
    return json.load(f).get("args") == list(args)


def final_eval(workdir: str) -> dict[str, Any] | None:
  """The last eval record of a workdir's metrics.jsonl (None before the first eval)."""
  if not epath.Path(workdir, "metrics.jsonl").exists():
    return None
  evals = [r for r in metrics_log.read(workdir) if "eval_top1" in r]
  return evals[-1] if evals else None


def run_local(runs: Sequence[Run], config_arg: str, overrides: Sequence[str],
              python: str = sys.executable,
              echo: Callable[[str], None] = terminal.say) -> list[str]:
  """`train_local`, returning the names of the runs that failed."""
  return [o.name for o in train_local(runs, config_arg, overrides, python, echo) if o.failed]


def train_local(runs: Sequence[Run], config_arg: str, overrides: Sequence[str],
                python: str = sys.executable,
                echo: Callable[[str], None] = terminal.say) -> list[Outcome]:
  """Trains each run in a `main.py` subprocess; skips finished ones. Returns each run's
  outcome.

  A run's output goes to <workdir>/train.log; done.json marks it finished with its
  arguments, so changing --override (say, more epochs) trains it further, and a run that
  failed (or whose launch was stopped) is trained again by the next call. A failure does
  not stop the other runs. On a terminal a bar counts the runs done and another follows
  the current run's logged progress.
  """
  # Absolute workdirs: Orbax refuses relative checkpoint paths.
  if any("://" in r.workdir for r in runs):
    raise ValueError("--backend=local needs a local --sweep_dir")
  runs = [dataclasses.replace(r, workdir=os.path.abspath(r.workdir)) for r in to_train(runs)]
  env = dict(os.environ)
  env["PYTHONPATH"] = os.pathsep.join(p for p in (REPO_ROOT, env.get("PYTHONPATH")) if p)
  outcomes = []
  with terminal.progress(total=len(runs), desc="sweep", unit="run") as sweep_bar:
    for i, run in enumerate(runs, 1):
      args = main_args(run, _absolute_config(config_arg), overrides)
      log_path = os.path.join(run.workdir, "train.log")
      if is_done(run.workdir, args):
        echo(f"[{i}/{len(runs)}] {run.name}: already done, skipped")
        result = final_eval(run.workdir)
        outcomes.append(Outcome(run.name, SKIPPED, 0, log_path,
                                result["eval_top1"] if result else None))
        sweep_bar.update()
        continue
      os.makedirs(run.workdir, exist_ok=True)
      status = os.path.join(run.workdir, STATUS_FILE)
      if os.path.exists(status):  # an earlier launch's: this one has not ended yet
        os.remove(status)
      echo(f"[{i}/{len(runs)}] {run.name}: training (log: {log_path})")
      start = time.time()
      with open(log_path, "a") as log:
        # --verbose: the run's every log line into its log (nobody watches its terminal).
        code = _train_following(
            [python, "-m", MAIN_MODULE, "--verbose", *args], log, env, run,
            lambda: _run_length(config_arg, args[2:]))
      sweep_bar.update()
      write_status(run.workdir, code, log_path)
      outcome = read_outcome(run.name, run.workdir)
      outcomes.append(outcome)
      if outcome.failed:
        why = f"exit status {describe_exit(code)}" if code else outcome.note
        echo(f"[{i}/{len(runs)}] {run.name}: FAILED ({why}); see {log_path}")
        continue
      with open(os.path.join(run.workdir, DONE_FILE), "w") as f:
        json.dump({"args": args, "eval": final_eval(run.workdir)}, f, indent=1)
      echo(f"[{i}/{len(runs)}] {run.name}: top-1 {100 * outcome.top1:.2f}% "
           f"in {time.time() - start:.0f} s")
  return outcomes


def _run_length(config_arg: str, flag_args: Sequence[str]) -> tuple[str, float]:
  """("step", num_train_steps) or ("epoch", num_epochs) of a run's config."""
  config = load_config(config_arg, flag_args)
  if config.num_train_steps is not None:
    return "step", float(config.num_train_steps)
  return "epoch", float(config.num_epochs)


def _train_following(command: list[str], log: Any, env: dict[str, str], run: Run,
                     run_length: Callable[[], tuple[str, float]]) -> int:
  """Runs one training subprocess to its end, while (on a terminal) a bar follows the step
  or epoch of the latest record in its metrics.jsonl. Returns its exit status."""
  process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
  bar = terminal.progress(desc=run.name, leave=False)
  if not bar.disable:
    unit, total = run_length()
    bar.reset(total=total)
    bar.unit = unit
  with bar:
    while True:
      try:
        return process.wait(timeout=_POLL_SECONDS)
      except subprocess.TimeoutExpired:
        if not bar.disable:
          bar.n = _logged_progress(run.workdir, bar.unit)
          bar.refresh()


def _logged_progress(workdir: str, unit: str) -> float:
  try:
    records = metrics_log.read(workdir)
  except (OSError, ValueError):  # not written yet, or caught mid-replace
    return 0.0
  return float(records[-1].get(unit, 0.0)) if records else 0.0


# --- Cloud TPU backend: gcloud ssh to every worker of a slice. ---

@dataclasses.dataclass(frozen=True)
class TpuCommand:
  tpu: str
  run: Run
  argv: tuple[str, ...]

  def shell(self) -> str:
    """The command as one would type it (the remote command single-quoted)."""
    *head, command = self.argv
    remote = command[len("--command="):]
    return shlex.join(head) + " --command=" + shlex.quote(remote)


def tpu_commands(runs: Sequence[Run], config_arg: str, overrides: Sequence[str], *,
                 tpu_names: Sequence[str], zone: str, repo_dir: str, python: str = "python",
                 project: str | None = None) -> list[TpuCommand]:
  """One `gcloud compute tpus tpu-vm ssh --worker=all` per run, slices assigned round-robin."""
  if not tpu_names or not all(tpu_names):
    raise ValueError("--tpu_names: give at least one Cloud TPU VM name")
  if not zone:
    raise ValueError("--zone is required with --backend=tpu")
  commands = []
  for i, run in enumerate(to_train(runs)):
    tpu = tpu_names[i % len(tpu_names)]
    remote = (f"cd {shlex.quote(repo_dir)} && " + shlex.join(
        [python, "-m", MAIN_MODULE, "--distributed", *main_args(run, config_arg, overrides)]))
    argv = ["gcloud", "compute", "tpus", "tpu-vm", "ssh", tpu, f"--zone={zone}"]
    if project:
      argv.append(f"--project={project}")
    argv += ["--worker=all", f"--command={remote}"]
    commands.append(TpuCommand(tpu, run, tuple(argv)))
  return commands


def run_tpu(commands: Sequence[TpuCommand], echo: Callable[[str], None] = print) -> list[str]:
  """`drive_tpu`, returning the names of the runs that failed."""
  return [o.name for o in drive_tpu(commands, echo) if o.failed]


def drive_tpu(commands: Sequence[TpuCommand], echo: Callable[[str], None] = print,
              log_dir: str | None = None) -> list[Outcome]:
  """Runs the commands, slices in parallel, one run after another on each slice; a run
  that fails does not stop the others on its slice. Returns each run's outcome, in the
  order of `commands`.

  Output lines are prefixed with [slice/run], and with `log_dir` (a local folder) also
  written to <log_dir>/<run>.log, the log the outcome names.
  """
  by_tpu: dict[str, list[tuple[int, TpuCommand]]] = {}
  for i, c in enumerate(commands):
    by_tpu.setdefault(c.tpu, []).append((i, c))
  lock = threading.Lock()
  outcomes: list[Outcome | None] = [None] * len(commands)
  if log_dir:
    os.makedirs(log_dir, exist_ok=True)

  def drive(queue: list[tuple[int, TpuCommand]]) -> None:
    for i, c in queue:
      prefix = f"[{c.tpu}/{c.run.name}] "
      log_path = os.path.join(log_dir, f"{c.run.name}.log") if log_dir else None
      with lock:
        echo(prefix + c.shell())
      with open(log_path or os.devnull, "a") as log:
        try:
          proc = subprocess.Popen(c.argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                  text=True)
        except OSError as e:  # no gcloud here: this run fails, and so will the others
          with lock:
            echo(f"{prefix}FAILED: {e}")
          outcomes[i] = Outcome(c.run.name, FAILED, None, log_path, note=str(e))
          continue
        for line in proc.stdout:
          log.write(line)
          with lock:
            echo(prefix + line.rstrip("\n"))
      code = proc.wait()
      outcomes[i] = Outcome(c.run.name, FAILED if code else DONE, code, log_path)
      if code:
        with lock:
          echo(f"{prefix}FAILED (exit status {describe_exit(code)})"
               + (f"; see {log_path}" if log_path else ""))

  with concurrent.futures.ThreadPoolExecutor(len(by_tpu) or 1) as pool:
    for future in [pool.submit(drive, queue) for queue in by_tpu.values()]:
      future.result()
  return [o for o in outcomes if o is not None]


# --- SLURM backend: one array task per run, every node of a task in one JAX job. ---

def slurm_script(runs: Sequence[Run], config_arg: str, overrides: Sequence[str], *,
                 job_name: str, nodes: int, gpus_per_node: int, repo_dir: str, log_dir: str,
                 python: str = "python", partition: str | None = None,
                 account: str | None = None, time_limit: str | None = None,
                 max_parallel: int = 0) -> str:
  """An sbatch script whose array task i trains run i (`srun` starts one process per node;
  `main.py --distributed` lets jax.distributed.initialize() read SLURM's environment)."""
  if nodes < 1 or gpus_per_node < 0:
    raise ValueError(f"--nodes must be >= 1 and --gpus_per_node >= 0, got {nodes}, "
                     f"{gpus_per_node}")
  if not re.fullmatch(r"[\w.-]+", job_name):
    raise ValueError(f"--job_name={job_name!r}: use letters, digits, '.', '_' or '-'")
  # Absolute workdirs (the script changes directory first; Orbax needs them anyway).
  runs = [dataclasses.replace(r, workdir=_absolute(r.workdir)) for r in to_train(runs)]
  log_dir = _absolute(log_dir)
  array = f"0-{len(runs) - 1}" + (f"%{max_parallel}" if max_parallel > 0 else "")
  lines = ["#!/bin/bash",
           f"#SBATCH --job-name={job_name}",
           f"#SBATCH --array={array}",
           f"#SBATCH --nodes={nodes}",
           "#SBATCH --ntasks-per-node=1",  # one JAX process per node, owning all its GPUs
           f"#SBATCH --output={os.path.join(log_dir, 'slurm-%A_%a.out')}"]
  for option, value in (("gpus-per-node", gpus_per_node), ("partition", partition),
                        ("account", account), ("time", time_limit)):
    if value:
      lines.append(f"#SBATCH --{option}={value}")
  for path in [log_dir] + [r.workdir for r in runs]:
    if re.search(r'["\\\n]', path):  # they go into JSON and shell strings unescaped
      raise ValueError(f"{path!r}: a sweep directory for SLURM must not contain '\"', '\\' "
                       "or a newline")
  lines += ["", "set -euo pipefail", f"cd {shlex.quote(repo_dir)}", "",
            'case "$SLURM_ARRAY_TASK_ID" in']
  for i, run in enumerate(runs):
    lines.append(f"  {i}) WORKDIR={shlex.quote(run.workdir)}; "
                 f"ARGS=({shlex.join(main_args(run, config_arg, overrides))}) ;;"
                 f"  # {run.name}")
  log = (shlex.quote(os.path.join(log_dir, "slurm-"))
         + '"${SLURM_ARRAY_JOB_ID:-0}_${SLURM_ARRAY_TASK_ID}.out"')  # as --output names it
  lines += ['  *) echo "no run for array task $SLURM_ARRAY_TASK_ID" >&2; exit 1 ;;', "esac",
            "",
            # How the task ended, in its workdir: `efficientnet-sweep --status` (the summary
            # job submit_slurm adds) reads it. A failed run does not stop the other tasks.
            f"LOG={log}", 'mkdir -p "$WORKDIR"', f'rm -f "$WORKDIR/{STATUS_FILE}"',
            "set +e",
            f'srun {shlex.quote(python)} -m {MAIN_MODULE} --distributed "${{ARGS[@]}}"',
            "STATUS=$?", "set -e",
            'printf \'{"exit_status": %d, "log": "%s"}\\n\' "$STATUS" "$LOG" '
            f'> "$WORKDIR/{STATUS_FILE}"',
            'exit "$STATUS"', ""]
  return "\n".join(lines)


def status_command(sweep_dir: str, python: str = "python") -> list[str]:
  """The command that prints a sweep's outcome table (exit status 1 if any run failed or
  is unfinished), run in the checkout."""
  return [python, "-m", "efficientnet_jax.commands.sweep", f"--sweep_dir={_absolute(sweep_dir)}",
          "--status"]


def slurm_summary_args(array_job: str, sweep_dir: str, *, job_name: str, repo_dir: str,
                       python: str = "python", partition: str | None = None,
                       account: str | None = None) -> list[str]:
  """`sbatch` arguments for a job that prints the outcome table into
  SWEEP_DIR/sweep-summary.out once every task of `array_job` (a job id) has ended."""
  if not re.fullmatch(r"\d+", array_job):
    raise ValueError(f"not a SLURM job id: {array_job!r}")
  sweep_dir = _absolute(sweep_dir)
  args = ["sbatch", f"--dependency=afterany:{array_job}", f"--job-name={job_name}-summary",
          "--nodes=1", "--ntasks=1", f"--output={os.path.join(sweep_dir, 'sweep-summary.out')}"]
  args += [f"--{option}={value}" for option, value in (("partition", partition),
                                                       ("account", account)) if value]
  return args + [f"--wrap=cd {shlex.quote(repo_dir)} && "
                 + shlex.join(status_command(sweep_dir, python))]


def submit_slurm(script: str, path: str) -> str:
  """Writes the script to `path` and submits it; returns sbatch's reply (the job id)."""
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  with open(path, "w") as f:
    f.write(script)
  return _sbatch(["sbatch", path])


def job_id(reply: str) -> str:
  """'Submitted batch job 1234' (or --parsable's '1234;cluster') → '1234'."""
  match = re.search(r"(\d+)(;\S*)?\s*$", reply)
  if not match:
    raise RuntimeError(f"no job id in sbatch's reply {reply!r}")
  return match.group(1)


def _sbatch(args: list[str]) -> str:
  result = subprocess.run(args, capture_output=True, text=True)
  if result.returncode:
    raise RuntimeError(f"{shlex.join(args[:2])} failed: {result.stderr.strip()}")
  return result.stdout.strip()


def submit_slurm_summary(array_reply: str, sweep_dir: str, **kwargs: Any) -> str:
  """Submits the summary job (`slurm_summary_args`) after the array sbatch replied
  `array_reply`; returns sbatch's reply."""
  return _sbatch(slurm_summary_args(job_id(array_reply), sweep_dir, **kwargs))
