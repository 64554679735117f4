"""Sweep results: reading workdirs, the Table 2/3 and grid tables, Figures 3 and 8."""

import json
import os

import pytest

from efficientnet_jax.training import metrics_log
from efficientnet_jax.research import sweep_results, sweep

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEMO = os.path.join(REPO, "configs", "demo.py")
TINY = ["config.model.width=0.25", "config.model.depth=0.25",
        "config.model.resolution_multiple=4"]
TOP1 = {"phi_0": 0.80, "phi_1": 0.90, "width_2": 0.86, "depth_3": 0.84,
        "resolution_1.5": 0.88}


def write_run(workdir, config, evals):
  """A workdir as training leaves it: config.json and metrics.jsonl."""
  os.makedirs(workdir, exist_ok=True)
  with open(os.path.join(workdir, "config.json"), "w") as f:
    f.write(config.to_json_best_effort())
  writer = metrics_log.JsonlWriter(workdir)
  writer.write(10, {"loss": 1.0})
  for step, top1 in evals:
    writer.write(step, {"eval_top1": top1, "eval_top5": 1.0, "eval_loss": 0.5})


@pytest.fixture(scope="module")
def demo_sweep(tmp_path_factory):
  """A finished demo sweep (runs' files written by hand), plus one run not started."""
  sweep_dir = str(tmp_path_factory.mktemp("sweep"))
  runs = sweep.expand(DEMO, sweep_dir, overrides=TINY, num_classes=10, phis=[0, 1, 2],
                      widths=[1, 2], depths=[3], resolutions=[1.5])
  sweep.write_manifest(sweep_dir, runs, DEMO, TINY)
  for run in sweep.to_train(runs):
    if run.name in TOP1:  # phi_2 has not started
      config = sweep.load_config(DEMO, sweep.override_flags(TINY) + list(run.flags))
      write_run(run.workdir, config, [(50, 0.1), (100, TOP1[run.name])])
  return sweep_dir, runs


def test_load_reads_sizes_and_last_eval(demo_sweep):
  sweep_dir, runs = demo_sweep
  results = sweep_results.load(sweep_dir)
  assert [r.name for r in results.results] == [r.name for r in runs]
  for result, run in zip(results.results, runs):
    assert (result.params, result.multiply_adds, result.resolution) == (
        run.params, run.multiply_adds, run.resolution)
    expected = TOP1.get(run.same_as or run.name)
    assert result.top1 == expected
    assert result.step == (100 if expected else None)
  assert results.baseline().name == "phi_0"
  assert [r.name for r in results.curve("width")] == ["phi_0", "width_2"]
  assert [r.name for r in results.curve("phi")] == ["phi_0", "phi_1", "phi_2"]


def test_tables(demo_sweep):
  results = sweep_results.load(demo_sweep[0])
  rows = {row[0]: row for row in sweep_results.size_accuracy_rows(results)}
  assert rows["phi_0"][1:9] == ("baseline", "0.250", "0.250", 32, "126,822", "0.0005004",
                                "80.0", "100.0")
  assert rows["resolution_1.5"][1] == "r=1.5" and rows["phi_2"][7] == ""  # not trained yet
  table3 = sweep_results.table3_rows(results)
  # By cost; width_1 is phi_0's network, listed once.
  assert [(row[1], row[6]) for row in table3] == [
      ("baseline", "80.0"), ("d=3", "84.0"), ("w=2", "86.0"), ("φ=1", "90.0"),
      ("r=1.5", "88.0"), ("φ=2", "")]
  assert all(row[0] == "efficientnet" and row[7] == "" for row in table3)  # no paper rows


def test_figures(demo_sweep, tmp_path):
  results = sweep_results.load(demo_sweep[0])
  fig = sweep_results.compound_figure(results)
  ax = fig.axes[0]
  assert ax.get_xscale() == "log"
  assert "multiply-adds" in ax.get_xlabel() and "top-1" in ax.get_ylabel()
  assert [t.get_text() for t in ax.get_legend().get_texts()] == [
      "compound (φ)", "width only", "depth only", "resolution only"]
  by_label = {line.get_label(): line for line in ax.get_lines()}
  compound = by_label["compound (φ)"]  # phi_2 has no eval: two points
  runs = {r.name: r for r in results.results}
  assert "millions" in ax.get_xlabel()  # tiny networks: 0.5 to 1.9 million multiply-adds
  assert list(compound.get_xdata()) == [runs["phi_0"].multiply_adds / 1e6,
                                        runs["phi_1"].multiply_adds / 1e6]
  assert list(compound.get_ydata()) == pytest.approx([80.0, 90.0])
  assert list(by_label["depth only"].get_ydata()) == pytest.approx([80.0, 84.0])
  fig3 = sweep_results.single_dimension_figure(results)
  assert [a.get_title() for a in fig3.axes] == [
      "Scaling width only", "Scaling depth only", "Scaling resolution only"]
  assert all(a.get_xscale() == "log" and a.get_legend() for a in fig3.axes)

  markdown, figures = sweep_results.report(results, str(tmp_path))
  assert [os.path.basename(f) for f in figures] == [
      "figure3_single_dimension.png", "figure8_compound.png"]
  for path in figures:
    with open(path, "rb") as f:
      data = f.read()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20_000
  assert (tmp_path / "tables.md").read_text() == markdown
  assert "paper Table 3" in markdown and "grid" not in markdown


def test_plain_runs_a_named_variant_and_a_baseline_family(tmp_path):
  # No sweep.json: every subdirectory with a config.json, sized from it.
  b0 = sweep.load_config(os.path.join(REPO, "configs", "b0.py"))
  write_run(str(tmp_path / "b0"), b0, [(1000, 0.771)])
  net = sweep.load_config(DEMO)
  net.unlock()
  net.model.family = "mobilenetv2"  # as config.json holds it once config.model.family exists
  net.model.width, net.model.depth = 2.0, 1.0
  write_run(str(tmp_path / "mnv2_w2"), net, [(10, 0.5)])
  results = sweep_results.load(str(tmp_path), num_classes=1000)
  rows = {row[0]: row for row in sweep_results.size_accuracy_rows(results)}
  assert rows["b0"][5:] == ("5,288,548", "0.3858", "77.1", "100.0", "5.3M", "0.39", "77.1")
  assert rows["mnv2_w2"][5] == "11,258,088"  # MobileNetV2 ×2 wide, 1000 classes
  assert results.base is None and sweep_results.compound_figure(results) is None


def test_table3_beside_the_paper(tmp_path):
  base = sweep.load_config(DEMO)
  base.unlock()
  base.model.family = "mobilenetv2"
  base.model.width, base.model.depth, base.model.resolution = 1.0, 1.0, 224
  manifest = {"base": {"family": "mobilenetv2", "variant": "b0", "width": 1.0, "depth": 1.0,
                       "resolution": 224},
              "runs": [{"name": "base", "kind": "phi", "value": 0.0, "workdir": "base"},
                       {"name": "wide", "kind": "width", "value": 2.0, "workdir": "wide"}]}
  (tmp_path / "sweep.json").write_text(json.dumps(manifest))
  write_run(str(tmp_path / "base"), base, [(5, 0.7)])
  base.model.width = 2.0
  write_run(str(tmp_path / "wide"), base, [(5, 0.75)])
  results = sweep_results.load(str(tmp_path), num_classes=1000)
  assert sweep_results.table3_rows(results) == [
      ("mobilenetv2", "baseline", "1.000", "1.000", 224, "0.3008", "70.0", "baseline", "0.3",
       "72.0"),
      ("mobilenetv2", "w=2", "2.000", "1.000", 224, "1.137", "75.0", "w=2", "1.1", "76.4")]


def test_grid_report(tmp_path):
  runs = sweep.expand(DEMO, str(tmp_path), overrides=TINY, num_classes=10,
                      grid_ranges=sweep.parse_grid("alpha:1.1:1.3:0.1,beta:1.0:1.2:0.1,"
                                                   "gamma:1.0:1.2:0.1"), tolerance=0.3)
  sweep.write_manifest(str(tmp_path), runs, DEMO, TINY)
  top1 = [0.5 + 0.01 * i for i in range(len(runs))]
  for run, accuracy in zip(runs[:-1], top1):  # the last candidate is not evaluated
    config = sweep.load_config(DEMO, sweep.override_flags(TINY) + list(run.flags))
    write_run(run.workdir, config, [(9, accuracy)])
  results = sweep_results.load(str(tmp_path))
  ranked = sweep_results.grid_results(results)
  assert [r.name for r in ranked] == [r.name for r in runs[-2::-1]] + [runs[-1].name]
  best = sweep_results.best_grid(results)
  assert best.name == runs[-2].name
  rows = sweep_results.grid_rows(results)
  assert rows[0][0] == 1 and float(rows[0][4]) == pytest.approx(
      best.alpha * best.beta**2 * best.gamma**2, abs=1e-3)
  markdown, _ = sweep_results.report(results, str(tmp_path))
  assert f"Best: α={best.alpha:g}, β={best.beta:g}, γ={best.gamma:g}" in markdown


def test_baseline_sizes_for_the_paper_settings():
  rows = {(r[0], r[1]): r for r in sweep_results.baseline_size_rows()}
  assert rows[("resnet50", "baseline")][4:8] == (224, "25,557,032", "4.089", "4.1")
  assert rows[("mobilenetv1", "r=2")][4:7] == (448, "4,231,976", "2.272")
  assert rows[("mobilenetv2", "compound")][2:5] == ("1.210", "1.440", 296)


def test_missing_directory():
  with pytest.raises(ValueError, match="--sweep_dir=/nonexistent"):
    sweep_results.load("/nonexistent")
