"""Results that several test files need, made once per test session.

Under xdist the workers share them: they live in the parent of the workers' base temp
directories, and a file lock makes the other workers wait while one builds them.
"""

from __future__ import annotations

import fcntl
import os
import pathlib
from typing import Callable

import pytest


def shared_once(tmp_path_factory: pytest.TempPathFactory, name: str,
                build: Callable[[pathlib.Path], None]) -> pathlib.Path:
  """`<session dir>/name`, made by `build(path)` by the first test that asks for it.

  Callers must not change what is there: copy it first.
  """
  base = tmp_path_factory.getbasetemp()
  root = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base
  path, done = root / name, root / f"{name}.done"
  with open(root / f"{name}.lock", "w") as lock:
    fcntl.flock(lock, fcntl.LOCK_EX)
    if not done.exists():
      build(path)
      done.touch()
  return path
