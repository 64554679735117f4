"""Where a step's time goes: per-operation time of ours (XLA) and timm (PyTorch), by kind.

Ours: the compiled step runs under `jax.profiler`; XLA's CPU runtime records one event per
executed operation (an HLO instruction, usually a fusion), named as in the optimised HLO.
Each instruction is put in a category from what it computes (a convolution's window and
feature groups, a dot's operands) and from the Flax module path in its metadata
(`.../se/...`, `..._bn/...`, `jit(silu)`, the `optimizer` and `ema` scopes of the train
step). Parameter copies XLA adds (to keep the old state for the non-finite guard, or for
a layout) and anything unnamed count as "other". A fusion that mixes kinds (XLA fuses
BN's normalisation with the activation, say) counts where its root instruction comes from.
XLA runs independent operations on both threads at once, so ours can sum to more than
the step's wall time.

timm: `torch.profiler` over the same number of steps; each operator call is put in a
category by name and shapes (a convolution by its weight: depthwise when it has one input
channel per group, squeeze-excite when its input is 1×1 spatially), counted with
everything it calls; the optimizer's step and zero_grad are their own ranges. Autograd
runs the backward on its own thread, and its operators are counted there.

Times are summed over the operations' own durations (milliseconds per step); "other" is
the step's measured wall time less the categorised operations (never below zero), so a
column adds up to the step time unless operations overlapped on threads.
"""

from __future__ import annotations

import collections
import glob
import re
import tempfile
import time
from typing import Any, Callable, Iterable

CATEGORIES = ("1×1 conv", "k×k conv", "depthwise", "BN", "activation", "squeeze-excite",
              "optimizer/EMA", "other")

# --- ours: the optimised HLO ---------------------------------------------------------------

_COMPUTATION = re.compile(r"^(?:ENTRY )?%?([\w.\-]+) \(.*\{$")
_INSTRUCTION = re.compile(r"^\s*(?:ROOT )?%?([\w.\-]+) = (.*)$")
_OPCODE = re.compile(r"\b([a-z][a-z0-9\-]*)\(")
_CALLS = re.compile(r"(?:calls|to_apply|body|condition)=%?([\w.\-]+)")
_OP_NAME = re.compile(r'op_name="([^"]*)"')


def _hlo_instructions(hlo_text: str) -> tuple[dict[str, str], dict[str, list[str]]]:
  """(instruction name → its line, computation name → its instruction names)."""
  lines, computations, current = {}, collections.defaultdict(list), None
  for line in hlo_text.splitlines():
    header = _COMPUTATION.match(line)
    if header:
      current = header.group(1)
      continue
    instruction = _INSTRUCTION.match(line)
    if instruction and current:
      lines[instruction.group(1)] = instruction.group(2)
      computations[current].append(instruction.group(1))
  return lines, computations


def _opcode(rhs: str) -> str:
  match = _OPCODE.search(rhs)
  return match.group(1) if match else ""


def _op_name(rhs: str) -> str:
  match = _OP_NAME.search(rhs)
  return match.group(1) if match else ""


def _category_of_line(rhs: str) -> str | None:
  """The category a compute-defining instruction (convolution, dot) fixes, else None."""
  opcode = _opcode(rhs)
  op_name = _op_name(rhs)
  if opcode == "convolution":
    if "/se/" in op_name:
      return "squeeze-excite"
    groups = re.search(r"feature_group_count=(\d+)", rhs)
    if groups and int(groups.group(1)) > 1:
      return "depthwise"
    window = re.search(r"window=\{size=([\dx]+)", rhs)
    return "1×1 conv" if not window or set(window.group(1).split("x")) == {"1"} else "k×k conv"
  if opcode == "dot":
    if "/se/" in op_name:
      return "squeeze-excite"
    return "other" if "/classifier/" in op_name else "1×1 conv"
  return None


def _category_of_op_name(op_name: str) -> str:
  """The category of an elementwise/reduction instruction from the module path."""
  if "/optimizer/" in op_name or "/ema/" in op_name:
    return "optimizer/EMA"
  if "/se/" in op_name:
    return "squeeze-excite"
  if "depthwise_conv" in op_name:
    return "depthwise"
  if re.search(r"_bn/|/BatchNorm", op_name):
    return "BN"
  if re.search(r"\b(silu|swish|relu6?|hard_swish|gelu)\b", op_name):  # jax.nn's jit names
    return "activation"
  return "other"


def categorise_hlo(hlo_text: str) -> dict[str, str]:
  """Instruction name → category, for every instruction of the optimised HLO."""
  lines, computations = _hlo_instructions(hlo_text)

  def called(rhs: str, seen: set[str]) -> Iterable[str]:
    for computation in _CALLS.findall(rhs):
      if computation in seen:
        continue
      seen.add(computation)
      for name in computations.get(computation, ()):
        yield lines[name]
        yield from called(lines[name], seen)

  categories = {}
  for name, rhs in lines.items():
    found = [c for c in map(_category_of_line, [rhs, *called(rhs, set())]) if c]
    if found:  # the heaviest kind inside wins: a convolution's fusion is a convolution
      categories[name] = min(found, key=CATEGORIES.index)
    else:
      categories[name] = _category_of_op_name(_op_name(rhs))
  return categories


def _xla_op_times(trace_dir: str, module: str) -> dict[str, float]:
  """HLO instruction name → summed event seconds, from the profile written to trace_dir."""
  from jax.profiler import ProfileData
  times: dict[str, float] = collections.defaultdict(float)
  for path in glob.glob(f"{trace_dir}/**/*.xplane.pb", recursive=True):
    for plane in ProfileData.from_file(path).planes:
      for line in plane.lines:
        for event in line.events:
          stats = dict(event.stats)
          if "hlo_op" in stats and stats.get("hlo_module") == module:
            times[stats["hlo_op"]] += event.duration_ns * 1e-9
  return times


def profile_ours(step: Callable[[], Any], hlo_text: str,
                 steps: int) -> tuple[dict[str, float], float]:
  """(category → ms per step, wall ms per step) of `step` (already warm) run `steps` times."""
  import jax
  with tempfile.TemporaryDirectory() as trace_dir:
    jax.profiler.start_trace(trace_dir)
    start = time.perf_counter()
    for _ in range(steps):
      step()
    wall = (time.perf_counter() - start) / steps
    jax.profiler.stop_trace()
    module = re.match(r"HloModule ([\w.\-]+)", hlo_text).group(1)
    op_seconds = _xla_op_times(trace_dir, module)
  if not op_seconds:
    raise RuntimeError(f"the profile has no operations of the HLO module {module}")
  categories = categorise_hlo(hlo_text)
  per_step: dict[str, float] = collections.defaultdict(float)
  for op, seconds in op_seconds.items():
    per_step[categories.get(op, "other")] += 1e3 * seconds / steps
  return _with_other(per_step, 1e3 * wall), 1e3 * wall


# --- timm: torch.profiler -------------------------------------------------------------------

def _torch_category(event: Any) -> str | None:
  """The category of one PyTorch operator call, or None to look at what it calls."""
  name, shapes = event.name, event.input_shapes
  if name.startswith("Optimizer."):
    return "optimizer/EMA"
  if name in ("aten::convolution", "aten::convolution_backward"):
    data = shapes[1] if name == "aten::convolution_backward" else shapes[0]
    weight = shapes[2] if name == "aten::convolution_backward" else shapes[1]
    if len(data) == 4 and data[2:] == [1, 1]:
      return "squeeze-excite"
    if weight[1] == 1 and weight[0] > 1:
      return "depthwise"
    return "1×1 conv" if weight[2:] == [1, 1] else "k×k conv"
  if "batch_norm" in name:
    return "BN"
  if re.match(r"aten::(silu|relu|hardswish)", name):
    return "activation"
  if re.match(r"aten::(sigmoid|mean)", name):  # only squeeze-excite gates and pools so
    return "squeeze-excite"
  if name in ("aten::mul", "aten::mul_") and len(shapes) == 2 and len(shapes[1]) == 4 \
      and shapes[1][2:] == [1, 1] and shapes[0][2:] != [1, 1]:
    return "squeeze-excite"  # the gate's scale x · s
  return None


def profile_timm(step: Callable[[], Any], steps: int) -> tuple[dict[str, float], float]:
  """(category → ms per step, wall ms per step) of a warm timm `step` run `steps` times."""
  from torch import profiler
  with profiler.profile(activities=[profiler.ProfilerActivity.CPU],
                        record_shapes=True) as prof:
    start = time.perf_counter()
    for _ in range(steps):
      step()
    wall = (time.perf_counter() - start) / steps
  per_step: dict[str, float] = collections.defaultdict(float)

  def visit(event: Any) -> None:
    category = _torch_category(event)
    if category:
      per_step[category] += event.cpu_time_total / 1e3 / steps  # µs → ms
    else:
      for child in event.cpu_children:
        visit(child)

  for event in prof.events():
    if event.cpu_parent is None:
      visit(event)
  return _with_other(per_step, 1e3 * wall), 1e3 * wall


def _with_other(per_step: dict[str, float], wall_ms: float) -> dict[str, float]:
  """Every category; "other" is also the wall time no categorised operation accounts for."""
  named = sum(v for k, v in per_step.items() if k != "other")
  rest = max(wall_ms - named, per_step.get("other", 0.0))
  return {c: (rest if c == "other" else per_step.get(c, 0.0)) for c in CATEGORIES}


def to_markdown(columns: dict[str, tuple[dict[str, float], float]]) -> str:
  """One column per system: ms per step and share of its wall time, per category."""
  names = list(columns)
  lines = ["| category | " + " | ".join(f"{n} ms/step (share)" for n in names) + " |",
           "|---|" + "---|" * len(names)]
  for category in CATEGORIES:
    cells = [f"{per[category]:.1f} ({per[category] / wall:.0%})"
             for per, wall in columns.values()]
    lines.append(f"| {category} | " + " | ".join(cells) + " |")
  lines.append("| step (wall) | " + " | ".join(f"{wall:.1f}" for _, wall in columns.values())
               + " |")
  return "\n".join(lines)
