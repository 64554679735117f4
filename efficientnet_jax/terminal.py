"""What a person sees on the terminal: progress bars and short summaries.

A command calls `quiet_output(log_file)` once, early: absl's INFO lines
(and every other Python logger's) then go to `log_file` only, the terminal keeps
warnings, errors, `progress` bars (tqdm, drawn only on a terminal) and the lines given
to `say`. With `--verbose` a command skips it and the terminal shows every log line, as
before; so does library code that no command set up (a notebook, a test): there
`progress` draws nothing and `say` logs at INFO.
"""

from __future__ import annotations

import contextlib
import logging as python_logging
import os
import sys
from typing import Iterable, Iterator, Optional

from absl import logging
import tqdm

_quiet = False
_log_file: Optional[str] = None


VERBOSE_HELP = "Every log line on the terminal, instead of progress bars and summaries."


def quiet_output(log_file: Optional[str] = None) -> None:
  """Log lines to `log_file` (appended; None: not kept), only warnings and errors to
  stderr."""
  global _quiet, _log_file
  _quiet, _log_file = True, log_file
  logging.get_absl_handler().setLevel(python_logging.WARNING)
  if log_file is None:
    return
  os.makedirs(os.path.dirname(os.path.abspath(log_file)), exist_ok=True)
  handler = python_logging.FileHandler(log_file)
  handler.setFormatter(logging.PythonFormatter())
  python_logging.getLogger().addHandler(handler)


@contextlib.contextmanager
def native_stderr_into_log() -> Iterator[None]:
  """With quiet output, the process's stderr (file descriptor 2) goes into the log file
  (or nowhere) inside the block. Import TensorFlow in it: its C++ library prints notices (oneDNN)
  straight to stderr while loading, before any log level applies."""
  if not _quiet:
    yield
    return
  sys.stderr.flush()
  saved = os.dup(2)
  with open(_log_file or os.devnull, "a") as log:
    os.dup2(log.fileno(), 2)
  try:
    yield
  finally:
    sys.stderr.flush()
    os.dup2(saved, 2)
    os.close(saved)


def add_log_filter(log_filter: python_logging.Filter) -> None:
  """`log_filter` on every log destination, the terminal's and the log file's."""
  logging.get_absl_handler().addFilter(log_filter)
  for handler in python_logging.getLogger().handlers:
    handler.addFilter(log_filter)


def is_quiet() -> bool:
  return _quiet


def progress(iterable: Optional[Iterable] = None, *, total: Optional[float] = None,
             desc: Optional[str] = None, unit: str = "it", initial: int = 0,
             leave: bool = True, enabled: bool = True) -> tqdm.tqdm:
  """A tqdm bar with rate and ETA on stderr, drawn when output is quiet, `enabled` (e.g.
  on process 0 only) and stderr is a terminal; otherwise a bar that draws nothing (the
  same calls work)."""
  return tqdm.tqdm(iterable, total=total, desc=desc, unit=unit, initial=initial,
                   leave=leave, dynamic_ncols=True, file=sys.stderr,
                   disable=None if _quiet and enabled else True)  # None: off unless a tty


def say(message: str) -> None:
  """A line for the person at the terminal (above any bar), also in the log."""
  logging.info("%s", message)
  if _quiet:
    tqdm.tqdm.write(message, file=sys.stdout)
