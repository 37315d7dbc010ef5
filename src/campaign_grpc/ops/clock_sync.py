"""Keeps the database clock sampled, in the background (see storage.db_clock)."""

from __future__ import annotations

from ..storage.db_clock import DatabaseClock
from .background import Repeating

# Seconds between samples. Between two, only the monotonic clock's drift adds to the error:
# some 15 µs a second.
SYNC_INTERVAL_S = 15.0
# Samples taken at start, before serving: the best of a few is seldom a slow one.
FIRST_SAMPLES = 4


class ClockSync(Repeating):
    name = "clock-sync"

    def __init__(self, clock: DatabaseClock, *, interval_s: float = SYNC_INTERVAL_S) -> None:
        # A failed sample leaves the clock running on the last good one until the next.
        super().__init__(retry_delay=interval_s)
        self._clock = clock
        self._interval_s = interval_s

    async def first(self, samples: int = FIRST_SAMPLES) -> None:
        """Samples the clock before anything reads it for a deadline or a cut-off."""
        for _ in range(samples):
            await self._clock.sync()

    async def step(self) -> float:
        await self._clock.sync()
        return self._interval_s
