"""The console commands of pyproject's [project.scripts], one module each.

Each command runs its module as `python -m efficientnet_jax.commands.NAME` would, so
that absl's `--help` shows that module's docstring and flags (absl lists the flags of
the `__main__` module, which a console script's wrapper would otherwise be).
"""

from __future__ import annotations

import runpy


def _run(module: str) -> None:
  runpy.run_module(module, run_name="__main__", alter_sys=True)


def train() -> None:
  _run("efficientnet_jax.main")


def convert() -> None:
  _run("efficientnet_jax.commands.convert")


def evaluate() -> None:
  _run("efficientnet_jax.commands.evaluate")


def predict() -> None:
  _run("efficientnet_jax.commands.predict")


def tables() -> None:
  _run("efficientnet_jax.commands.tables")


def sweep() -> None:
  _run("efficientnet_jax.commands.sweep")


def grid_search() -> None:
  _run("efficientnet_jax.commands.grid_search")


def latency() -> None:
  _run("efficientnet_jax.commands.latency")


def benchmark() -> None:
  _run("efficientnet_jax.commands.benchmark")


def benchmark_input() -> None:
  _run("efficientnet_jax.commands.benchmark_input")


def prepare_imagenet() -> None:
  _run("efficientnet_jax.commands.prepare_imagenet")
