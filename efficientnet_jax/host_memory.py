"""glibc malloc settings for the host memory XLA's CPU runtime allocates every step.

XLA on CPU allocates a step's temporary buffers (about 120 MiB per image for a B0 train
step) through malloc, and by default glibc maps such big blocks afresh with mmap on every
step and unmaps them after: the kernel then zeroes and faults them in 4 KiB page by page,
which measured as 40–70% of a B0 train step's CPU time on the 2-core test machine. These
tunables keep freed memory in the process for reuse (no mmap for big blocks, one arena,
never trimmed) and back it with transparent huge pages: B0 training at batch 32 went from
10.5 to 19.7 images/s (README "Performance"). The cost is that the process keeps its
peak memory. Tunables are read at process start only, hence the re-exec; a process that
already has GLIBC_TUNABLES set is left alone (`GLIBC_TUNABLES= python -m ...` opts out).
"""

from __future__ import annotations

import os
import sys

TUNABLES = ("glibc.malloc.hugetlb=1",             # madvise transparent huge pages
            "glibc.malloc.mmap_max=0",             # big blocks from the heap, not mmap
            "glibc.malloc.trim_threshold=68719476736",  # never give the heap back
            "glibc.malloc.arena_max=1")            # one heap, so every thread reuses it


def reexec_with_fast_malloc() -> None:
  """Restarts this process (same PID and arguments) with `TUNABLES`, once, on Linux.

  Call it first thing, before any work: nothing survives the exec.
  """
  if not sys.platform.startswith("linux") or "GLIBC_TUNABLES" in os.environ:
    return
  os.environ["GLIBC_TUNABLES"] = ":".join(TUNABLES)
  sys.stdout.flush()
  sys.stderr.flush()
  # orig_argv keeps `-m efficientnet_jax.main` or the console script's path as run.
  os.execv(sys.executable, sys.orig_argv)
