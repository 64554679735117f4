"""Stopping cleanly when the machine is taken away: SIGTERM ends training after a save.

SIGTERM (preemption of a TPU VM, SLURM's notice) lets the current step finish; the loop
then writes a checkpoint and raises `Preempted`, and the same command resumes. With
several processes, JAX's preemption service catches the signal and picks one step at which
all of them stop (through Orbax's `reached_preemption`).
"""

from __future__ import annotations

import signal
import threading

import jax
import orbax.checkpoint as ocp


class Preempted(Exception):
  """Training stopped on SIGTERM after saving a checkpoint; rerun the command to resume."""


class PreemptionWatch:
  """While entered, tells the loop whether to stop after a step (`requested(step)`).

  A single process catches SIGTERM itself (the handler it replaced is put back on exit);
  several processes ask `checkpoints`, which asks JAX's preemption service.
  """

  def __init__(self, checkpoints: ocp.CheckpointManager):
    self.checkpoints = checkpoints
    self.multi_process = jax.process_count() > 1
    self.sigterm = threading.Event()
    self.previous_handler = None

  def __enter__(self) -> "PreemptionWatch":
    if not self.multi_process:
      self.previous_handler = signal.signal(signal.SIGTERM, lambda *_: self.sigterm.set())
    return self

  def __exit__(self, *exc_info) -> None:
    if self.previous_handler is not None:
      signal.signal(signal.SIGTERM, self.previous_handler)

  def requested(self, step: int) -> bool:
    """True when training must stop after `step` (the same step on every process)."""
    if self.multi_process:
      return self.checkpoints.reached_preemption(step)
    return self.sigterm.is_set()
