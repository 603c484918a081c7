"""Process set-up for CPU training (call before JAX starts its threads)."""

from __future__ import annotations

import ctypes
import sys


def configure_malloc(enable: bool = True) -> dict[str, bool]:
  """Keep freed memory in the process (glibc): no page faults every step.

  Both XLA:CPU and PyTorch allocate their step's buffers afresh on every
  call (XLA one temp block of ~170 MB per device at B=128), and glibc hands
  blocks over 32 MB (and any block a worker thread's arena cannot hold)
  straight to ``mmap``/``munmap``: every step then page-faults all of it in
  again (measured: 20k faults and ~40 ms of kernel time per step at B=32,
  82k / 165 ms at B=128).  One arena, no ``mmap`` and no trimming make
  glibc reuse the same pages.  Call before JAX or torch start threads.
  Returns which settings glibc accepted.
  """
  if not enable or not sys.platform.startswith("linux"):
    return {}
  try:
    libc = ctypes.CDLL("libc.so.6")
  except OSError:
    return {}
  settings = {  # mallopt parameter numbers from <malloc.h>; values are ints.
      "arena_max=1": (-8, 1),
      "mmap_max=0": (-4, 0),
      "trim_threshold=2G": (-1, 2 ** 31 - 1),
      "top_pad=256M": (-2, 256 << 20),
  }
  return {k: bool(libc.mallopt(p, v)) for k, (p, v) in settings.items()}
