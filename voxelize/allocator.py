"""Keep freed large buffers in the process instead of returning them to the OS (glibc malloc).

glibc serves allocations above its mmap threshold (adaptive, up to 32 MiB) with fresh ``mmap``s and
trims freed heap memory back to the OS, so a loop that allocates the same large temporary each
iteration page-faults it in anew every time: on the 2-core benchmark VM a fresh 20 MB buffer cost
6.3 ms against 0.25 ms reused. Raising both thresholds keeps such buffers; the price is a resident
set that stays at its high-water mark. The environment variables ``MALLOC_MMAP_THRESHOLD_`` and
``MALLOC_TRIM_THRESHOLD_`` do the same but must be set before the process starts; this does it from
inside, for the command-line tools. It lives in the lowest package so that every tool can call it.
"""
from __future__ import annotations

import ctypes
import ctypes.util

_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # mallopt parameters (malloc.h)
_THRESHOLD = 2**30  # 1 GiB: every temporary of these pipelines stays below it

_applied: str | None = None


def keep_freed_memory() -> str:
    """Raise glibc's mmap and trim thresholds to 1 GiB; returns a short description of what holds
    (``'kept (mallopt)'``, or why not: another C library, or glibc refused)."""
    global _applied
    if _applied is None:
        name = ctypes.util.find_library("c")
        try:
            libc = ctypes.CDLL(name) if name else None
            mallopt = libc.mallopt if libc is not None else None
        except (OSError, AttributeError):
            mallopt = None
        if mallopt is None:
            _applied = "default (no glibc mallopt)"
        elif mallopt(_M_MMAP_THRESHOLD, _THRESHOLD) == 1 and mallopt(_M_TRIM_THRESHOLD, _THRESHOLD) == 1:
            _applied = f"kept (mallopt mmap/trim threshold {_THRESHOLD >> 20} MiB)"
        else:
            _applied = "default (mallopt refused)"
    return _applied


def malloc_setting() -> str:
    """What :func:`keep_freed_memory` did in this process, or 'default'."""
    return _applied or "default"
