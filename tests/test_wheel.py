"""The package as a user installs it: the wheel built from this checkout, installed with
the pinned runtime requirements (and the [convert] extra) into a fresh venv outside the
checkout, trains a named config, predicts, evaluates, converts, prints the tables and
plots — with nothing of the checkout on its path."""

import json
import os
import shutil
import subprocess
import sys

from efficientnet_jax.training import metrics_log

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
UV = os.path.join(os.path.dirname(sys.executable), "uv")
# What `make demo` leaves out: the test and peer frameworks, the exporters. (keras is not
# among them: tensorflow requires it, and TensorBoard's hparams plugin, which clu's writer
# imports, subclasses tf.keras.callbacks.Callback.)
NOT_IN_THE_RUNTIME_SET = ("torch", "torchvision", "timm", "efficientnet-pytorch", "pytest",
                          "pytest-xdist", "jax2onnx", "onnxruntime", "ai-edge-litert")


def requirement_names(path):
  with open(path) as f:
    lines = [line.split("#")[0].strip() for line in f]
  return {line.split("==")[0].lower() for line in lines if line and not line.startswith("-")}


def test_the_runtime_requirements_leave_out_the_peer_frameworks():
  runtime = requirement_names(os.path.join(ROOT, "requirements.txt"))
  full = requirement_names(os.path.join(ROOT, "requirements-full.txt"))
  assert {"jax", "flax", "tensorflow-cpu", "tqdm", "matplotlib"} <= runtime
  assert not runtime & set(NOT_IN_THE_RUNTIME_SET)
  assert set(NOT_IN_THE_RUNTIME_SET) <= full
  assert not runtime & full  # the full set adds to the runtime set (-r), pins nothing twice


def uv_env() -> dict[str, str]:
  """The Makefile's uv settings: pip's extra indexes and wheel folders handed on."""
  extra = subprocess.run([sys.executable, "-m", "pip", "config", "get",
                          "global.extra-index-url"], capture_output=True, text=True).stdout
  env = dict(os.environ, UV_INDEX_STRATEGY="unsafe-best-match")
  if extra.strip():
    env["UV_EXTRA_INDEX_URL"] = extra.strip()
  if os.environ.get("PIP_FIND_LINKS"):
    env["UV_FIND_LINKS"] = os.environ["PIP_FIND_LINKS"]
  return env


def run(args, cwd, env=None, timeout=600):
  done = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True,
                        timeout=timeout)
  assert done.returncode == 0, f"{args}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
  return done.stdout


def write_timm_lite0(path):
  """Child process (torch stays out of this one): a timm efficientnet_lite0 state dict with
  random weights, as .safetensors."""
  run([sys.executable, "-c",
       "import sys, timm, torch; from safetensors.torch import save_file; "
       "torch.manual_seed(0); "
       "save_file(timm.create_model('efficientnet_lite0').state_dict(), sys.argv[1])",
       str(path)], cwd=ROOT)


def test_the_installed_wheel_works_without_the_checkout(tmp_path, data_dir):
  # The source as released: the package, its metadata and README (no stale build/ dirs).
  source = tmp_path / "source"
  source.mkdir()
  for name in ("pyproject.toml", "README.md"):
    shutil.copy(os.path.join(ROOT, name), source)
  shutil.copytree(os.path.join(ROOT, "efficientnet_jax"), source / "efficientnet_jax",
                  ignore=shutil.ignore_patterns("__pycache__"))
  env = uv_env()
  run([UV, "build", "--quiet", "--wheel", "--out-dir", str(tmp_path / "dist"), str(source)],
      cwd=tmp_path, env=env)
  [wheel] = (tmp_path / "dist").glob("efficientnet_jax-*.whl")

  venv = tmp_path / "venv"
  run([sys.executable, "-m", "venv", "--without-pip", str(venv)], cwd=tmp_path)
  python, bin_dir = str(venv / "bin" / "python"), venv / "bin"
  run([UV, "pip", "install", "--quiet", "--python", python,
       "-r", os.path.join(ROOT, "requirements.txt"),
       "--override", os.path.join(ROOT, "requirements-overrides.txt"), f"{wheel}[convert]"],
      cwd=tmp_path, env=env)
  installed = {line.split("==")[0].lower() for line in run(
      [UV, "pip", "freeze", "--python", python], cwd=tmp_path).split()}
  assert "efficientnet-jax" in installed and "h5py" in installed
  assert not installed & set(NOT_IN_THE_RUNTIME_SET), installed & set(NOT_IN_THE_RUNTIME_SET)

  # Commands run in a folder of their own, with no PYTHONPATH: the wheel is what imports.
  work = tmp_path / "user"
  work.mkdir()
  user_env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
  where = run([python, "-c", "import efficientnet_jax; print(efficientnet_jax.__file__)"],
              cwd=work, env=user_env)
  assert where.startswith(str(venv)), where

  # A named config (shipped in the package), trained for a few steps.
  workdir = work / "demo"
  summary = run([str(bin_dir / "efficientnet-train"), "--config=demo", f"--workdir={workdir}",
                 f"--config.data_dir={data_dir}", "--config.model.width=0.25",
                 "--config.model.depth=0.25", "--config.batch_size=16",
                 "--config.num_train_steps=6", "--config.eval_batch_size=120"],
                cwd=work, env=user_env)
  assert "Done in" in summary and f"{workdir}/train.log" in summary, summary
  [final] = [r for r in metrics_log.read(str(workdir)) if "eval_top1" in r]

  samples = sorted(str(p) for p in (workdir / "samples").glob("*.png"))
  assert len(samples) == 2
  predicted = run([str(bin_dir / "efficientnet-predict"), f"--weights={workdir}", *samples],
                  cwd=work, env=user_env)
  for sample in samples:
    assert sample in predicted
  assert len(predicted.splitlines()) == 2 * (1 + 5)  # each image and its top-5

  evaluated = run([str(bin_dir / "efficientnet-evaluate"), f"--weights={workdir}",
                   "--dataset=digits", "--split=test", f"--data_dir={data_dir}"],
                  cwd=work, env=user_env)
  results = json.loads(evaluated.splitlines()[-1])
  assert results["num_examples"] == 360 and results["top1"] == final["eval_top1"]

  timm_file = tmp_path / "efficientnet_lite0.safetensors"
  write_timm_lite0(timm_file)
  converted = work / "lite0"
  run([str(bin_dir / "efficientnet-convert"), str(timm_file), str(converted), "--format=timm",
       "--timm_name=efficientnet_lite0"], cwd=work, env=user_env)
  model = json.loads((converted / "model.json").read_text())["model"]
  assert (model["family"], model["variant"], model["num_classes"]) == (
      "efficientnet_lite", "lite0", 1000)

  tables = run([str(bin_dir / "efficientnet-tables")], cwd=work, env=user_env)
  assert "| efficientnet_lite | lite0 |" in tables and "4,652,008" in tables

  run([str(bin_dir / "efficientnet-plot"), str(workdir)], cwd=work, env=user_env)
  assert (workdir / "curves.png").stat().st_size > 10_000
