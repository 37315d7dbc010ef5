"""Gives memory freed after a burst back to the system.

A flood of calls (thousands of half-closed requests, a reconnect storm) makes grpc core and
Python allocate hundreds of megabytes that are freed once the calls end, but glibc keeps freed
pages in its heaps: after such an attack the server stayed at several times its memory for as
long as it ran. malloc_trim(0) returns the free pages, and quickly (see bench/abuse.py, which
checks the RSS after its attacks). It runs off
the event loop, and only when glibc holds a margin more free memory (mallinfo2) than at the
last trim (a trim gives the pages back but leaves them free in glibc's books), so that a
steady server, or one whose memory is in use, is not trimmed again and again.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import logging
import os
from collections.abc import Callable

from .background import Repeating

log = logging.getLogger(__name__)

# Free memory in glibc's heaps that makes a trim worth its pause.
MARGIN_BYTES = 32 * 1024 * 1024


class _MallInfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in (
            "arena",
            "ordblks",
            "smblks",
            "hblks",
            "hblkhd",
            "usmblks",
            "fsmblks",
            "uordblks",
            "fordblks",
            "keepcost",
        )
    ]


def resident_bytes() -> int:
    try:
        with open("/proc/self/statm", "rb") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def _glibc() -> tuple[Callable[[int], int], Callable[[], int]] | None:
    """malloc_trim, and a function of the free bytes glibc holds; None where not glibc 2.33+."""
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        libc = ctypes.CDLL(name)
        trim, info = libc.malloc_trim, libc.mallinfo2
    except (OSError, AttributeError):
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    info.argtypes = []
    info.restype = _MallInfo2

    def free_bytes() -> int:
        counts = info()
        return int(counts.fordblks) + int(counts.fsmblks)

    return trim, free_bytes


class MemoryTrimmer(Repeating):
    name = "memory-trim"

    def __init__(self, interval_s: float = 5.0, margin: int = MARGIN_BYTES) -> None:
        super().__init__(retry_delay=interval_s)
        self._interval_s = interval_s
        self._margin = margin
        glibc = _glibc()
        self._trim: Callable[[int], int] | None = glibc[0] if glibc else None
        self._free: Callable[[], int] | None = glibc[1] if glibc else None
        self._free_at_trim = 0
        self.trims = 0

    async def step(self) -> float:
        if self._trim is None or self._free is None:
            return self._interval_s
        free = self._free()
        if free > self._free_at_trim + self._margin:
            await self._trim_now(free)
        elif free < self._free_at_trim:
            # Reused since: a later burst is measured from here.
            self._free_at_trim = free
        return self._interval_s

    async def release(self) -> None:
        """Trims now, below the margin too: called when a cache has just let go of what it
        held (see ops.caches), which is known to be free."""
        if self._trim is not None and self._free is not None:
            await self._trim_now(self._free())

    async def _trim_now(self, free: int) -> None:
        assert self._trim is not None
        await asyncio.get_running_loop().run_in_executor(None, self._trim, 0)
        self.trims += 1
        self._free_at_trim = free
