"""How the processes that make batches reuse freed memory (glibc malloc).

Every clip allocates and frees the same few hundred kB buffers (decoded frames, resized frames,
the stacked clip) and every batch a few MB. With glibc's defaults such buffers are mapped from
the kernel and handed back on free (``mmap`` above a threshold that adapts, heap top trimmed
beyond 2x that), so the next clip takes page faults on all of them again: on this project's
2-core VM that was ~330,000 faults per 640 clips and a third of a clip's CPU time.
:func:`retain_freed` keeps freed memory for reuse instead (``M_MMAP_THRESHOLD`` at its 32 MiB
maximum, ``M_TRIM_THRESHOLD`` = ``M_TOP_PAD`` = the budget): each process then holds up to that
many MiB of freed memory beyond what it uses. Measured by ``python -m ppsn.benchmark pipeline
--compare retain_freed_mb=0,64``.

Called in each Grain worker at start-up, and in the main process when an iterator starts: it
makes the batches itself (``num_workers=0``) or receives them (in place from a worker's ring,
:mod:`ppsn.data.handoff`, or Grain's way, which maps new memory per batch; a 25-segment test
video is 15.6 MB). Elsewhere than glibc (macOS, musl) it does nothing and says so once.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging

log = logging.getLogger(__name__)

_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_THRESHOLD = -1, -2, -3  # <malloc.h>
_MMAP_THRESHOLD_MAX = 32 * 2**20  # glibc's cap on 64-bit (HEAP_MAX_SIZE / 2)
_applied: int | None = None


def _mallopt():
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or None)
        fn = libc.mallopt
    except (OSError, AttributeError):
        return None
    fn.argtypes, fn.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    return fn


def retain_freed(mb: int) -> bool:
    """Keep up to ``mb`` MiB of freed memory in this process for reuse (0: glibc's defaults,
    untouched). Returns whether the allocator took the setting; idempotent per value."""
    global _applied
    if mb < 0:
        raise ValueError(f"data.retain_freed_mb must be >= 0, got {mb}")
    if mb == 0 or _applied == mb:
        return mb == _applied
    mallopt = _mallopt()
    if mallopt is None:
        log.info("data.retain_freed_mb=%d ignored: this C library has no mallopt", mb)
        _applied = mb
        return False
    budget = min(mb * 2**20, 2**31 - 1)
    ok = all(mallopt(param, value) == 1 for param, value in (
        (_M_MMAP_THRESHOLD, _MMAP_THRESHOLD_MAX), (_M_TRIM_THRESHOLD, budget),
        (_M_TOP_PAD, budget)))
    if not ok:
        log.warning("data.retain_freed_mb=%d: mallopt refused a setting", mb)
    _applied = mb
    return ok
