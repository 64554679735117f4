"""`metrics.jsonl`: one JSON object per logged step, for anyone without TensorBoard.

Written through etils.epath, so a `gs://` workdir works too. Object stores cannot append,
so the (small) file is rewritten whole at each write.

`flatten_config` is the one flat form of a config ('model.variant': 'b0', …): what
TensorBoard's hparams record and what a resumed run's config is compared by.
"""

from __future__ import annotations

import json
from typing import Any, Mapping

from etils import epath
import ml_collections


class JsonlWriter:
  """Appends {"step": N, ...metrics} lines to <workdir>/metrics.jsonl (visible at once)."""

  def __init__(self, workdir: str, filename: str = "metrics.jsonl"):
    self.path = epath.Path(workdir) / filename
    self.path.parent.mkdir(parents=True, exist_ok=True)
    self._text = self.path.read_text() if self.path.exists() else ""

  def write(self, step: int, metrics: Mapping[str, Any]) -> None:
    record = {"step": int(step), **{k: _plain(v) for k, v in metrics.items()}}
    self._text += json.dumps(record) + "\n"
    # Written beside, then moved over it: a run killed mid-write leaves the old file whole
    # (a cut-short file would lose every earlier record and break the next run's reads).
    partial = self.path.parent / (self.path.name + ".partial")
    partial.write_text(self._text)
    partial.replace(self.path)


def read(path: str) -> list[dict[str, Any]]:
  """All records of a metrics.jsonl file (or of <workdir>/metrics.jsonl)."""
  path = epath.Path(path)
  if path.is_dir():
    path = path / "metrics.jsonl"
  return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _plain(value: Any) -> Any:
  try:
    return float(value)
  except (TypeError, ValueError):
    return value


def flatten_config(config: ml_collections.ConfigDict | Mapping[str, Any]) -> dict[str, Any]:
  """{'model.variant': 'b0', 'input.mean_rgb': (…), …}: every leaf of a config (or of its
  JSON form) under its dotted key, values as they are."""
  flat = {}
  for key, value in config.items():
    if isinstance(value, (ml_collections.ConfigDict, dict)):
      flat.update({f"{key}.{k}": v for k, v in flatten_config(value).items()})
    else:
      flat[key] = value
  return flat


def hparams(config: ml_collections.ConfigDict) -> dict[str, Any]:
  """`flatten_config` with every value a scalar, as TensorBoard's hparams need (others as
  their str)."""
  return {k: v if isinstance(v, (int, float, str, bool)) else str(v)
          for k, v in flatten_config(config).items()}
