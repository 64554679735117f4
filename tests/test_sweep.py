"""Sweep expansion, the step-1 grid, and the local/TPU/SLURM launchers (with fake
`python`, `gcloud` and `srun` executables, so nothing trains and no cloud is needed)."""

import json
import math
import os
import shlex
import subprocess
import sys
import textwrap

import pytest

from efficientnet_jax.models import convnet, costs, registry, scaling
from efficientnet_jax.research import sweep

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEMO = os.path.join(REPO, "configs", "demo.py")
B0 = os.path.join(REPO, "configs", "b0.py")
TINY = ["config.model.width=0.25", "config.model.depth=0.25",
        "config.model.resolution_multiple=4"]


def expand(config=DEMO, sweep_dir="/sweeps/s", overrides=TINY, **kwargs):
  return sweep.expand(config, sweep_dir, overrides=overrides, num_classes=10, **kwargs)


def test_phi_on_b0_is_the_formula_alone():
  runs = sweep.expand(B0, "gs://bucket/phi", phis=[0, 2.5], num_classes=1000)
  assert runs[1].flags == ("--config.model.variant=phi", "--config.model.phi=2.5",
                           "--config.model.alpha=1.2", "--config.model.beta=1.1",
                           "--config.model.gamma=1.15")
  size = scaling.compound(2.5)
  assert (runs[1].width, runs[1].depth, runs[1].resolution) == (
      size.width, size.depth, size.resolution)
  assert runs[0].params == 5_288_548 and runs[0].multiply_adds == costs.multiply_adds(
      registry.build("efficientnet"), 224)
  assert runs[1].workdir == "gs://bucket/phi/phi_2.5"


def test_phi_and_single_dimensions_scale_the_base_config():
  runs = expand(phis=[0, 1, 2], widths=[1, 2], depths=[3], resolutions=[1.5])
  by_name = {r.name: r for r in runs}
  assert list(by_name) == ["phi_0", "phi_1", "phi_2", "width_1", "width_2", "depth_3",
                           "resolution_1.5"]
  # The demo base is w=0.25, d=0.25 (overrides), r=32: φ multiplies it, rounding r to 4.
  phi2 = by_name["phi_2"]
  assert (phi2.width, phi2.depth, phi2.resolution) == (
      pytest.approx(0.25 * 1.1**2), pytest.approx(0.25 * 1.2**2), 44)
  assert "--config.model.resolution=44" in phi2.flags
  assert by_name["width_2"].flags == ("--config.model.width=0.5",)
  assert by_name["depth_3"].flags == ("--config.model.depth=0.75",)
  assert by_name["resolution_1.5"].flags == ("--config.model.resolution=48",)
  # width×1 is the base again: listed, not trained twice, pointing at phi_0's workdir.
  assert by_name["width_1"].same_as == "phi_0"
  assert by_name["width_1"].workdir == "/sweeps/s/phi_0"
  assert [r.name for r in sweep.to_train(runs)] == [
      "phi_0", "phi_1", "phi_2", "width_2", "depth_3", "resolution_1.5"]
  # Predicted sizes are the ones training builds: the run's config through convnet.create.
  config = sweep.load_config(DEMO, sweep.override_flags(TINY) + list(phi2.flags))
  model, size = convnet.create(config.model, num_classes=10)
  assert size.resolution == 44
  assert phi2.params == costs.count_module_params(model, 44)
  assert phi2.multiply_adds == costs.multiply_adds(model.network, 44, 10)


def test_efficientnet_params_from_the_spec_are_exact():
  for name, params in (("b0", 5_288_548), ("b3", 12_233_232), ("b7", 66_347_960)):
    assert costs.count_params(registry.variant_network(name), 1000) == params
  network = registry.build("efficientnet", 0.3, 0.7)
  assert costs.count_params(network, 0) == costs.count_module_params(
      convnet.ConvNet(network, num_classes=0), 32)


def test_grid_candidates_obey_the_constraint():
  ranges = sweep.parse_grid("alpha:1.0:2.0:0.05,beta:1.0:2.0:0.05,gamma:1.0:2.0:0.05")
  candidates = sweep.grid(ranges, tolerance=0.1)
  assert len(candidates) == 109
  for c in candidates:
    assert min(c.alpha, c.beta, c.gamma) >= 1.0
    assert abs(c.alpha * c.beta**2 * c.gamma**2 - 2.0) <= 0.1 + 1e-9
  assert any(math.isclose(c.alpha, 1.2) and math.isclose(c.beta, 1.1)
             and math.isclose(c.gamma, 1.15) for c in candidates)
  narrow = sweep.grid(sweep.parse_grid("alpha:1.1:1.3:0.05,beta:1.0:1.2:0.05,"
                                       "gamma:1.1:1.2:0.05"), tolerance=0.05)
  # e.g. 1.25·1.1²·1.15² = 2.0003; the paper's (1.2, 1.1, 1.15) gives 1.92: outside 0.05.
  assert {(c.alpha, c.beta, c.gamma) for c in narrow} == {
      (1.15, 1.1, 1.2), (1.15, 1.15, 1.15), (1.15, 1.2, 1.1), (1.25, 1.05, 1.2),
      (1.25, 1.1, 1.15), (1.25, 1.15, 1.1)}


def test_grid_runs_are_phi_1_and_share_the_paper_triple_with_phi_1():
  runs = sweep.expand(B0, "/s", phis=[1], num_classes=1000, grid_ranges=sweep.parse_grid(
      "alpha:1.15:1.25:0.05,beta:1.05:1.15:0.05,gamma:1.1:1.2:0.05"), tolerance=0.1)
  grid = [r for r in runs if r.kind == "grid"]
  assert grid and all("--config.model.phi=1" in r.flags for r in grid)
  paper = next(r for r in grid if (r.alpha, r.beta, r.gamma) == (1.2, 1.1, 1.15))
  assert paper.same_as == "phi_1"


@pytest.mark.parametrize("text, message", [
    ("alpha:1:1.4:0.05,beta:1:1.4:0.05", "alpha, beta and gamma"),
    ("alpha:0.9:1.4:0.05,beta:1:1.4:0.05,gamma:1:1.4:0.05", ">= 1"),
    ("alpha:1:1.4:0.05,beta:1:1.4:0.1,gamma:1:1.4:0.05", "one STEP"),
    ("alpha:1:x:0.05,beta:1:1.4:0.05,gamma:1:1.4:0.05", "non-numeric"),
    ("delta:1:1.4:0.05", "expected alpha"),
])
def test_bad_grid(text, message):
  with pytest.raises(ValueError, match=f"--grid.*{message}"):
    sweep.parse_grid(text)


def test_bad_input_names_the_flag():
  with pytest.raises(ValueError, match="--override='num_epochs=3'"):
    expand(overrides=["num_epochs=3"], phis=[1])
  with pytest.raises(ValueError, match="config.model.widht"):
    expand(overrides=["config.model.widht=2"], phis=[1])
  with pytest.raises(ValueError, match="--config: no config file"):
    expand(config="configs/nope.py", phis=[1])
  with pytest.raises(ValueError, match="--phi"):
    expand(phis=[float("nan")])
  with pytest.raises(ValueError, match="--width"):
    expand(widths=[0])
  with pytest.raises(ValueError, match="nothing to sweep"):
    expand()
  with pytest.raises(ValueError, match="run phi_-5.*total stride"):
    expand(phis=[-5])


def two_runs():
  return sweep.to_train(expand(sweep_dir="gs://b/s", phis=[0], widths=[2]))


def test_tpu_commands_round_robin_and_exact():
  commands = sweep.tpu_commands(two_runs() * 2, "configs/demo.py", ["config.num_epochs=3"],
                                tpu_names=["a", "b"], zone="us-central2-b",
                                repo_dir="efficientnet-jax", project="proj")
  assert [c.tpu for c in commands] == ["a", "b", "a", "b"]
  assert commands[1].shell() == (
      "gcloud compute tpus tpu-vm ssh b --zone=us-central2-b --project=proj --worker=all "
      "--command='cd efficientnet-jax && python -m efficientnet_jax.main --distributed "
      "--config=configs/demo.py --workdir=gs://b/s/width_2 --config.num_epochs=3 "
      "--config.model.width=0.5'")
  for c in commands:
    assert tuple(shlex.split(c.shell())) == c.argv
  with pytest.raises(ValueError, match="--zone"):
    sweep.tpu_commands(two_runs(), DEMO, [], tpu_names=["a"], zone="", repo_dir="r")


def fake_executable(directory, name, body):
  path = directory / name
  path.write_text("#!/bin/bash\n" + body)
  path.chmod(0o755)


def test_tpu_backend_runs_slices_in_parallel_in_order(tmp_path, monkeypatch):
  fake_executable(tmp_path, "gcloud", 'echo "ARGS $*"; [[ "$*" != *width_2* ]]\n')
  monkeypatch.setenv("PATH", f"{tmp_path}:{os.environ['PATH']}")
  runs = two_runs()
  commands = sweep.tpu_commands(runs + runs, DEMO, [], tpu_names=["a", "b"], zone="z",
                                repo_dir="r")
  lines = []
  failures = sweep.run_tpu(commands, echo=lines.append)
  assert failures == ["width_2", "width_2"]  # the fake gcloud fails those
  for tpu, run in (("a", "phi_0"), ("b", "width_2")):  # round-robin: a gets runs 0 and 2
    mine = [l for l in lines if l.startswith(f"[{tpu}/{run}] ARGS")]
    assert len(mine) == 2 and all(f"--workdir=gs://b/s/{run}" in l for l in mine)
    assert "--worker=all" in mine[0] and "--distributed" in mine[0]


def test_slurm_script_selects_the_run_of_its_array_task(tmp_path, monkeypatch):
  runs = sweep.to_train(expand(sweep_dir=str(tmp_path / "sweep"), phis=[0], widths=[2]))
  script = sweep.slurm_script(runs, "configs/demo.py", ["config.num_epochs=3"],
                              job_name="sw", nodes=2, gpus_per_node=4, repo_dir=str(tmp_path),
                              log_dir=str(tmp_path / "sweep"), partition="gpu",
                              time_limit="01:00:00", max_parallel=1)
  for line in ("#SBATCH --array=0-1%1", "#SBATCH --nodes=2", "#SBATCH --ntasks-per-node=1",
               "#SBATCH --gpus-per-node=4", "#SBATCH --partition=gpu",
               "#SBATCH --time=01:00:00", f"#SBATCH --output={tmp_path}/sweep/slurm-%A_%a.out",
               'srun python -m efficientnet_jax.main --distributed "${ARGS[@]}"'):
    assert line in script.splitlines()
  path = tmp_path / "sweep.sbatch"
  path.write_text(script)
  fake_executable(tmp_path, "srun", 'printf "%s\\n" "$@"\n')
  env = dict(os.environ, PATH=f"{tmp_path}:{os.environ['PATH']}", SLURM_ARRAY_TASK_ID="1")
  out = subprocess.run(["bash", str(path)], env=env, capture_output=True, text=True, check=True)
  assert out.stdout.splitlines() == [
      "python", "-m", "efficientnet_jax.main", "--distributed", "--config=configs/demo.py",
      f"--workdir={tmp_path}/sweep/width_2", "--config.num_epochs=3",
      "--config.model.width=0.5"]
  env["SLURM_ARRAY_TASK_ID"] = "2"
  assert subprocess.run(["bash", str(path)], env=env, capture_output=True).returncode == 1


def test_local_backend_trains_once_and_resumes(tmp_path):
  # A stand-in for `python -m efficientnet_jax.main`: logs one eval to the workdir.
  fake_executable(tmp_path, "python", textwrap.dedent("""\
      for a in "$@"; do case $a in --workdir=*) w=${a#--workdir=};; esac; done
      echo "trained $w" >> "$(dirname "$w")/calls"
      echo '{"step": 3, "eval_top1": 0.5, "eval_top5": 0.9}' >> "$w/metrics.jsonl"
      """))
  runs = expand(sweep_dir=str(tmp_path / "s"), phis=[0], widths=[1, 2])
  lines = []
  python = str(tmp_path / "python")
  assert sweep.run_local(runs, DEMO, TINY, python=python, echo=lines.append) == []
  calls = (tmp_path / "s" / "calls").read_text().splitlines()
  assert calls == [f"trained {tmp_path}/s/phi_0", f"trained {tmp_path}/s/width_2"]
  done = json.loads((tmp_path / "s" / "width_2" / sweep.DONE_FILE).read_text())
  assert done["eval"]["eval_top1"] == 0.5 and "--config.model.width=0.5" in done["args"]
  sweep.run_local(runs, DEMO, TINY, python=python, echo=lines.append)
  assert len((tmp_path / "s" / "calls").read_text().splitlines()) == 2
  assert lines[-2:] == ["[1/2] phi_0: already done, skipped",
                        "[2/2] width_2: already done, skipped"]
  # Different arguments (more epochs) train again; a failing run is reported.
  failures = sweep.run_local(runs, DEMO, TINY + ["config.num_epochs=9"], python="false",
                             echo=lines.append)
  assert failures == ["phi_0", "width_2"]


def test_cli_dry_run_prints_the_runs_and_script():
  out = subprocess.run(
      [os.path.join(os.path.dirname(sys.executable), "efficientnet-sweep"), f"--config={DEMO}",
       "--sweep_dir=/shared/s",
       "--phi=0", "--width=2", "--num_classes=10", "--backend=slurm", "--nodes=2",
       "--dry-run", *[f"--override={o}" for o in TINY]],
      cwd=REPO, capture_output=True, text=True, check=True).stdout
  assert "| width_2 | width | 2 | 0.500 | 0.250 | 32 |" in out
  assert "#SBATCH --array=0-1" in out and "#SBATCH --nodes=2" in out
  assert "/shared/s/width_2 --config.model.width=0.25" in out


def test_any_family_is_a_base():
  """EfficientNetV2-S has no φ formula: φ and the grid scale its own row, and its
  evaluation size (384) moves with its training size (300)."""
  v2 = ["config.model.family=efficientnetv2", "config.model.variant=v2_s"]
  runs = expand(B0, overrides=TINY + v2, phis=[0, 1], resolutions=[0.5])
  phi0, phi1, half = runs
  assert phi1.flags == ("--config.model.width=0.275", "--config.model.depth=0.3",
                        "--config.model.resolution=344", "--config.model.eval_resolution=440")
  assert (phi0.family, phi0.resolution, phi1.resolution) == ("efficientnetv2", 300, 344)
  assert "--config.model.resolution=300" in phi0.flags  # not rounded to a multiple of 4
  assert half.flags == ("--config.model.resolution=152", "--config.model.eval_resolution=192")
  config = sweep.load_config(B0, sweep.override_flags(TINY + v2) + list(phi1.flags))
  network = registry.network_of(config.model)
  assert phi1.multiply_adds == costs.multiply_adds(network, 440, 10)  # at the eval size
  assert phi1.params == costs.count_params(network, 10)
  lite = expand(overrides=TINY + ["config.model.family=efficientnet_lite",
                                  "config.model.variant=lite0"], depths=[2])
  assert lite[0].flags == ("--config.model.depth=0.5",) and lite[0].family == (
      "efficientnet_lite")


# --- Sweeps that fail in part: the other runs finish, one outcome table, a rerun retries. ---

SWEEP = os.path.join(os.path.dirname(sys.executable), "efficientnet-sweep")


def test_exit_statuses_are_described():
  assert [sweep.describe_exit(c) for c in (0, 3, -9, 137, 143, None)] == [
      "0", "3", "-9 (SIGKILL)", "137 (SIGKILL)", "143 (SIGTERM)", ""]


def tiny_training(data_dir):
  """--override values that train the demo network 4 steps and evaluate once."""
  return TINY + [f"config.data_dir={data_dir}", "config.num_train_steps=4",
                 "config.batch_size=16", "config.eval_batch_size=64",
                 "config.eval_every_epochs=1000", "config.log_every_steps=2",
                 "config.checkpoint_every_steps=4", "config.input.shuffle_buffer=256"]


def table_rows(text):
  """{run: [outcome, exit status, top-1, log]} of the outcome table in `text`."""
  rows = {}
  for line in text.splitlines():
    cells = [c.strip() for c in line.strip().strip("|").split("|")]
    if len(cells) == len(sweep.OUTCOME_HEADER) and cells[0] not in ("run", "---"):
      rows[cells[0]] = cells[1:]
  return rows


def test_local_sweep_with_a_killed_run_finishes_the_others_and_retries_it(data_dir,
                                                                         tmp_path):
  """Two real tiny trainings; width_2's first launch is SIGKILLed (a stand-in `python`
  kills itself before starting main.py), phi_0 still trains; the table names the failure
  and its log, the exit status is 1; the same command again trains width_2 only."""
  launches = tmp_path / "launches"
  fake_executable(tmp_path, "python", textwrap.dedent(f"""\
      for a in "$@"; do case $a in --workdir=*) w=${{a#--workdir=}};; esac; done
      echo "$w" >> {launches}
      if [[ $w == */width_2 && ! -e {tmp_path}/killed_once ]]; then
        touch {tmp_path}/killed_once; kill -9 $$
      fi
      exec {sys.executable} "$@"
      """))
  sweep_dir = tmp_path / "s"
  command = [SWEEP, f"--config={DEMO}", f"--sweep_dir={sweep_dir}", "--phi=0", "--width=2",
             "--num_classes=10", f"--python={tmp_path / 'python'}",
             *[f"--override={o}" for o in tiny_training(data_dir)]]
  first = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=600)
  assert first.returncode == 1, first.stderr[-3000:]
  rows = table_rows(first.stdout)
  log = f"{sweep_dir}/width_2/train.log"
  assert rows["width_2"] == ["FAILED", "-9 (SIGKILL)", "", log], first.stdout
  assert rows["phi_0"][:2] == ["done", "0"] and float(rows["phi_0"][2]) > 0, first.stdout
  assert "1 of 2 runs failed (width_2); rerun the same command" in first.stderr
  status = json.loads((sweep_dir / "width_2" / sweep.STATUS_FILE).read_text())
  assert status == {"exit_status": -9, "log": log}
  assert not (sweep_dir / "width_2" / sweep.DONE_FILE).exists()
  phi_metrics = sweep_dir / "phi_0" / "metrics.jsonl"
  phi_mtime = phi_metrics.stat().st_mtime_ns

  second = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=600)
  assert second.returncode == 0, second.stderr[-3000:]
  rows = table_rows(second.stdout)
  assert rows["phi_0"][0] == "skipped (done before)", second.stdout
  assert rows["width_2"][:2] == ["done", "0"] and float(rows["width_2"][2]) > 0
  assert launches.read_text().splitlines() == [
      f"{sweep_dir}/phi_0", f"{sweep_dir}/width_2", f"{sweep_dir}/width_2"]
  assert phi_metrics.stat().st_mtime_ns == phi_mtime  # not trained again
  # --status reads the same outcomes back from the workdirs, for any backend.
  status = subprocess.run([SWEEP, f"--sweep_dir={sweep_dir}", "--status"], cwd=REPO,
                          capture_output=True, text=True)
  assert status.returncode == 0, status.stderr[-2000:]
  assert {r: v[0] for r, v in table_rows(status.stdout).items()} == {
      "phi_0": "done", "width_2": "done"}


def test_local_outcomes_with_a_stand_in_trainer(tmp_path):
  """Exit 0 without an evaluation is a failure too; a failed run is relaunched, a done one
  is not, and its stale status is gone while it runs."""
  fake_executable(tmp_path, "python", textwrap.dedent("""\
      for a in "$@"; do case $a in --workdir=*) w=${a#--workdir=};; esac; done
      echo "$w" >> "$(dirname "$w")/calls"
      test -e "$w/sweep_status.json" && exit 7   # a stale status must be gone by now
      case $w in */width_2) exit 0;; esac        # "succeeds" without evaluating
      echo '{"step": 3, "eval_top1": 0.25}' >> "$w/metrics.jsonl"
      """))
  runs = expand(sweep_dir=str(tmp_path / "s"), phis=[0], widths=[2])
  outcomes = sweep.train_local(runs, DEMO, TINY, python=str(tmp_path / "python"),
                               echo=lambda line: None)
  assert [(o.name, o.status, o.exit_status, o.top1, o.note) for o in outcomes] == [
      ("phi_0", sweep.DONE, 0, 0.25, ""),
      ("width_2", sweep.FAILED, 0, None, "no evaluation logged")]
  assert sweep.outcome_table(outcomes)[1][:3] == (
      "width_2", "FAILED: no evaluation logged", "0")
  again = sweep.train_local(runs, DEMO, TINY, python=str(tmp_path / "python"),
                            echo=lambda line: None)
  assert [o.status for o in again] == [sweep.SKIPPED, sweep.FAILED]
  assert again[1].exit_status == 0  # not 7: the earlier status was removed before launch
  assert (tmp_path / "s" / "calls").read_text().splitlines() == [
      f"{tmp_path}/s/phi_0", f"{tmp_path}/s/width_2", f"{tmp_path}/s/width_2"]


def test_slurm_tasks_record_their_exit_status_and_a_summary_job_prints_the_table(
    tmp_path, monkeypatch):
  """The generated script run for each array task with a stand-in `srun` (width_2 fails
  with 3, depth_2's task never runs), then the summary job's command as sbatch is given it."""
  sweep_dir = tmp_path / "sweep"
  fake_executable(tmp_path, "srun", textwrap.dedent("""\
      for a in "$@"; do case $a in --workdir=*) w=${a#--workdir=};; esac; done
      echo "task output for $w"
      case $w in */width_2) exit 3;; esac
      echo '{"step": 3, "eval_top1": 0.5}' >> "$w/metrics.jsonl"
      """))
  fake_executable(tmp_path, "sbatch", f'echo "$@" >> {tmp_path}/sbatch_calls\n'
                                      'echo "Submitted batch job 41"\n')
  monkeypatch.setenv("PATH", f"{tmp_path}:{os.environ['PATH']}")
  command = [SWEEP, f"--config={DEMO}", f"--sweep_dir={sweep_dir}", "--phi=0", "--width=2",
             "--depth=2", "--num_classes=10", "--backend=slurm", f"--repo_dir={REPO}",
             f"--python={sys.executable}", *[f"--override={o}" for o in TINY]]
  submitted = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
  assert submitted.returncode == 0, submitted.stderr[-2000:]
  assert "outcome table job" in submitted.stdout and "Submitted batch job 41" in submitted.stdout
  array_call, summary_call = (tmp_path / "sbatch_calls").read_text().splitlines()
  assert array_call == f"{sweep_dir}/sweep.sbatch"
  assert summary_call.startswith("--dependency=afterany:41 --job-name=efficientnet-sweep-"
                                 "summary --nodes=1 --ntasks=1 "
                                 f"--output={sweep_dir}/sweep-summary.out --wrap=cd ")

  env = dict(os.environ, SLURM_ARRAY_JOB_ID="41")
  codes = []
  for task in (0, 1):  # depth_2 (task 2) has not run yet
    env["SLURM_ARRAY_TASK_ID"] = str(task)
    done = subprocess.run(["bash", str(sweep_dir / "sweep.sbatch")], env=env,
                          capture_output=True, text=True)
    codes.append(done.returncode)
    assert done.stdout.startswith("task output for"), done.stderr
  assert codes == [0, 3]
  assert json.loads((sweep_dir / "width_2" / sweep.STATUS_FILE).read_text()) == {
      "exit_status": 3, "log": f"{sweep_dir}/slurm-41_1.out"}

  # The summary job's command, as sbatch --wrap would run it.
  wrapped = summary_call[summary_call.index("--wrap=") + len("--wrap="):]
  summary = subprocess.run(["bash", "-c", wrapped], capture_output=True, text=True)
  assert summary.returncode == 1, summary.stderr[-2000:]
  assert table_rows(summary.stdout) == {
      "phi_0": ["done", "0", "50.00", f"{sweep_dir}/slurm-41_0.out"],
      "width_2": ["FAILED", "3", "", f"{sweep_dir}/slurm-41_1.out"],
      "depth_2": ["unfinished", "", "", ""]}
  assert ("1 of 3 runs failed (width_2), 1 unfinished (depth_2); rerun the same command"
          in summary.stderr)


def test_tpu_backend_reports_failed_runs_in_the_same_table(tmp_path, monkeypatch):
  fake_executable(tmp_path, "gcloud", 'echo "ran on $5"; [[ "$*" != *width_2* ]] || exit 5\n')
  monkeypatch.setenv("PATH", f"{tmp_path}:{os.environ['PATH']}")
  sweep_dir = tmp_path / "s"
  done = subprocess.run(
      [SWEEP, f"--config={DEMO}", f"--sweep_dir={sweep_dir}", "--phi=0", "--width=2",
       "--depth=2", "--num_classes=10", "--backend=tpu", "--tpu_names=a,b", "--zone=z",
       *[f"--override={o}" for o in TINY]], cwd=REPO, capture_output=True, text=True)
  assert done.returncode == 1, done.stderr[-2000:]
  rows = table_rows(done.stdout)
  assert rows == {"phi_0": ["done", "0", "", f"{sweep_dir}/phi_0.log"],
                  "width_2": ["FAILED", "5", "", f"{sweep_dir}/width_2.log"],
                  "depth_2": ["done", "0", "", f"{sweep_dir}/depth_2.log"]}
  assert (sweep_dir / "width_2.log").read_text() == "ran on b\n"
  assert (sweep_dir / "depth_2.log").read_text() == "ran on a\n"  # after phi_0 on slice a
  assert "1 of 3 runs failed (width_2)" in done.stderr
