"""The console commands of pyproject's [project.scripts], one module each.

Each command runs its module as `python -m efficientnet_jax.commands.NAME` would, so
that absl's `--help` shows that module's docstring and flags (absl lists the flags of
the `__main__` module, which a console script's wrapper would otherwise be).
"""

from __future__ import annotations

import dataclasses
import runpy


@dataclasses.dataclass(frozen=True)
class Command:
  module: str

  def __call__(self) -> None:
    runpy.run_module(self.module, run_name="__main__", alter_sys=True)


train = Command("efficientnet_jax.main")
convert = Command("efficientnet_jax.commands.convert")
evaluate = Command("efficientnet_jax.commands.evaluate")
predict = Command("efficientnet_jax.commands.predict")
tables = Command("efficientnet_jax.commands.tables")
sweep = Command("efficientnet_jax.commands.sweep")
grid_search = Command("efficientnet_jax.commands.grid_search")
latency = Command("efficientnet_jax.commands.latency")
benchmark = Command("efficientnet_jax.commands.benchmark")
accelerator_table = Command("efficientnet_jax.commands.accelerator_table")
profile = Command("efficientnet_jax.commands.profile")
benchmark_input = Command("efficientnet_jax.commands.benchmark_input")
prepare_imagenet = Command("efficientnet_jax.commands.prepare_imagenet")
export = Command("efficientnet_jax.commands.export")
plot = Command("efficientnet_jax.commands.plot")
