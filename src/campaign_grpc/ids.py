"""Identifiers the service assigns: UUIDs of version 7 (RFC 9562), ordered by time.

Random (version 4) ids scatter every insert across the indexes keyed by id, so each new
campaign dirties its own index pages, and each commit writes and syncs them all. Ids that
grow with time land at the end of those indexes, next to each other.
"""

from __future__ import annotations

import os
import time

_VERSION = 0x7 << 76
_VARIANT = 0b10 << 62


def new_id() -> str:
    """A canonical lowercase UUID: 48 bits of Unix milliseconds, then 74 random bits."""
    ms = time.time_ns() // 1_000_000
    rand = int.from_bytes(os.urandom(10), "big")
    rand_a, rand_b = (rand >> 62) & 0xFFF, rand & ((1 << 62) - 1)
    h = f"{(ms << 80) | _VERSION | (rand_a << 64) | _VARIANT | rand_b:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"
