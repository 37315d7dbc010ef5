"""The caches of campaigns read: aged in the background, dropped all at once when told.

A cache bounded in bytes still holds its budget for as long as nobody reads: aging it every
interval lets what is not read leave within two intervals, so that a server back to idle
after a burst of large reads does not keep them.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from ..storage.versions import VersionCache
from .background import Repeating

# What nobody read for 10 to 20 seconds leaves the caches.
AGE_EVERY_S = 10.0
# What an aging must let go for the memory to be given back at once.
RELEASED_BYTES = 4 * 1024 * 1024


class Caches(Repeating):
    name = "cache-aging"

    def __init__(
        self,
        caches: Sequence[VersionCache[Any]],
        *,
        every_s: float = AGE_EVERY_S,
        released: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        """released() runs after an aging that let RELEASED_BYTES or more go: the memory
        trim (ops.memory) gives them back to the system, which its margin alone would not
        for a few dozen megabytes: without it, much more of a burst of large reads stays in
        the server's memory after it (see bench/big.py, which checks the RSS after its
        load)."""
        super().__init__(retry_delay=every_s)
        self._caches = tuple(caches)
        self._every_s = every_s
        self._released = released

    async def step(self) -> float:
        before = self.bytes
        for cache in self._caches:
            cache.age()
        if self._released is not None and before - self.bytes >= RELEASED_BYTES:
            await self._released()
        return self._every_s

    def clear(self) -> None:
        for cache in self._caches:
            cache.clear()

    @property
    def bytes(self) -> int:
        return sum(cache.bytes for cache in self._caches)
