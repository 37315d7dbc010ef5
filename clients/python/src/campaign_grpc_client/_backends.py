"""The primitives the asyncio client and its generated blocking twin differ in (see _async).

Each AsyncX here is written as a twin of the blocking X that tools/unasync.py puts in its
place, with the same methods; _silence holds the watch's AsyncWatchdog and Watchdog.
"""

from __future__ import annotations

import asyncio
import threading

Event = threading.Event


class AsyncEvent:
    """threading.Event's twin for an asyncio watch's closed flag, set from the watch's loop.

    wait() sleeps its whole timeout, then says whether the flag is set: aclose() cannot stop
    a watch in the middle of its sleep between reconnects, which ends it at the next check.
    """

    def __init__(self) -> None:
        self._set = False

    def set(self) -> None:
        self._set = True

    def is_set(self) -> bool:
        return self._set

    async def wait(self, timeout: float) -> bool:
        await asyncio.sleep(timeout)
        return self._set
