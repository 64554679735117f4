"""`metrics.jsonl`: one JSON object per logged step, for anyone without TensorBoard.

Written through etils.epath, so a `gs://` workdir works too. Object stores cannot append,
so the (small) file is rewritten whole at each write.

`flatten_config` is the one flat form of a config ('model.variant': 'b0', …): what
TensorBoard's hparams record and what a resumed run's config is compared by.
"""

from __future__ import annotations

import errno
import json
import os
from typing import Any, Mapping

from etils import epath
import ml_collections


class DiskFullError(OSError):
  """No space left on the device (or quota exceeded) while writing `filename`: nothing
  already written is lost; free space and rerun the same command to resume."""

  def __init__(self, filename: str, what: str, cause: OSError | None = None):
    reason = os.strerror(cause.errno) if cause is not None and cause.errno else "disk full"
    super().__init__(errno.ENOSPC,
                     f"no space left to write {what} ({reason}): free space on the disk "
                     "that holds it and run the same command again to resume", filename)


def is_disk_full(error: BaseException) -> bool:
  """True for ENOSPC / EDQUOT, also when wrapped (`raise … from`, Orbax's async errors)."""
  seen = set()
  while error is not None and id(error) not in seen:
    seen.add(id(error))
    if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
      return True
    if "No space left on device" in str(error) or "Disk quota exceeded" in str(error):
      return True  # a C++ layer (TensorStore) reports it as text
    error = error.__cause__ or error.__context__
  return False


class JsonlWriter:
  """Appends {"step": N, ...metrics} lines to <workdir>/metrics.jsonl (visible at once)."""

  def __init__(self, workdir: str, filename: str = "metrics.jsonl"):
    self.path = epath.Path(workdir) / filename
    self.path.parent.mkdir(parents=True, exist_ok=True)
    self._text = self.path.read_text() if self.path.exists() else ""

  def write(self, step: int, metrics: Mapping[str, Any]) -> None:
    record = {"step": int(step), **{k: _plain(v) for k, v in metrics.items()}}
    text = self._text + json.dumps(record) + "\n"
    # Written beside, then moved over it: a run killed mid-write (or a full disk) leaves the
    # old file whole (a cut-short file would lose every earlier record).
    partial = self.path.parent / (self.path.name + ".partial")
    try:
      partial.write_text(text)
      partial.replace(self.path)
    except OSError as e:
      if not is_disk_full(e):
        raise
      try:
        partial.unlink(missing_ok=True)  # gives back the space the partial copy took
      except OSError:
        pass
      raise DiskFullError(os.fspath(self.path), "the metrics log", e) from e
    self._text = text


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
