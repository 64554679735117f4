"""Transparent huge pages for the host memory XLA's CPU runtime allocates every step.

XLA on CPU allocates a step's temporary buffers (about 120 MiB per image for a B0 train
step) through malloc, and glibc maps big blocks afresh each time: with 4 KiB pages the
kernel then zeroes and faults them in page by page, which measured as ~40% of a B0 train
step on the 2-core CPU (system time; see README "Performance"). glibc ≥ 2.35's tunable
`glibc.malloc.hugetlb=1` asks for transparent huge pages instead. Tunables are read at
process start only, hence the re-exec. Opt out with GLIBC_TUNABLES=glibc.malloc.hugetlb=0.
"""

from __future__ import annotations

import os
import sys

HUGETLB_TUNABLE = "glibc.malloc.hugetlb"


def reexec_with_transparent_hugepages() -> None:
  """Restarts this process (same PID and arguments) with the tunable set, once, on Linux.

  Call it first thing, before any work: nothing survives the exec.
  """
  tunables = os.environ.get("GLIBC_TUNABLES", "")
  if not sys.platform.startswith("linux") or HUGETLB_TUNABLE in tunables:
    return
  os.environ["GLIBC_TUNABLES"] = ":".join(filter(None, [tunables, f"{HUGETLB_TUNABLE}=1"]))
  sys.stdout.flush()
  sys.stderr.flush()
  # orig_argv keeps `-m efficientnet_jax.main` or the console script's path as run.
  os.execv(sys.executable, sys.orig_argv)
