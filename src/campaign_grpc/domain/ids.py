"""Identifiers the service assigns: UUIDs of version 7 (RFC 9562), ordered by time.

Random (version 4) ids scatter every insert across the indexes keyed by id, so each new
campaign dirties its own index pages, and each commit writes and syncs them all. Ids that
grow with time land at the end of those indexes, next to each other.
"""

from __future__ import annotations

import os
import time


def new_id() -> str:
    """A canonical lowercase UUID: 48 bits of Unix milliseconds, then 74 random bits."""
    # Bytes rather than one 128-bit integer: a create draws three ids on the writer, and
    # integer arithmetic and formatting cost much more.
    b = bytearray((time.time_ns() // 1_000_000).to_bytes(6, "big"))
    b += os.urandom(10)
    b[6] = 0x70 | (b[6] & 0x0F)  # version 7
    b[8] = 0x80 | (b[8] & 0x3F)  # variant 0b10
    h = b.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"
