"""The caches of campaigns read: aged in the background, dropped all at once when told.

A cache bounded in bytes still holds its budget for as long as nobody reads: aging it every
interval lets what is not read leave within two intervals, so that a server back to idle
after a burst of large reads does not keep them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..storage.versions import VersionCache
from .background import Repeating

# What nobody read for 10 to 20 seconds leaves the caches.
AGE_EVERY_S = 10.0


class Caches(Repeating):
    name = "cache-aging"

    def __init__(
        self, caches: Sequence[VersionCache[Any]], *, every_s: float = AGE_EVERY_S
    ) -> None:
        super().__init__(retry_delay=every_s)
        self._caches = tuple(caches)
        self._every_s = every_s

    async def step(self) -> float:
        # What they let go is given back to the system by the memory trim (ops.memory).
        for cache in self._caches:
            cache.age()
        return self._every_s

    def clear(self) -> None:
        for cache in self._caches:
            cache.clear()

    @property
    def bytes(self) -> int:
        return sum(cache.bytes for cache in self._caches)
