"""Removes events older than the retention from the log, in the background.

Each batch is one short job of the writer, so writes queue behind a batch at most, never
behind the whole compaction. A stream that asks to resume from a removed revision is told so
(see watch.Hub), and starts again from a snapshot.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from ..storage.store import Store
from ..storage.writer import Writer
from .background import Repeating

log = logging.getLogger(__name__)


class Compactor(Repeating):
    name = "log-compaction"

    def __init__(
        self,
        store: Store,
        writer: Writer,
        clock: Callable[[], int],
        *,
        retention_s: float,
        interval_s: float,
        batch: int = 500,
    ) -> None:
        super().__init__(retry_delay=interval_s)
        self._store = store
        self._writer = writer
        self._clock = clock
        self._retention_us = int(retention_s * 1_000_000)
        self._interval_s = interval_s
        self._batch = batch

    async def step(self) -> float:
        removed = await self.compact()
        if removed:
            log.info("removed %d events older than the retention from the log", removed)
        return self._interval_s

    async def compact(self) -> int:
        """Removes every event older than the retention, a batch at a time; returns how many."""
        older_than = self._clock() - self._retention_us
        total = 0
        while True:
            removed = await self._writer.run(lambda: self._store.compact(older_than, self._batch))
            total += removed
            if removed < self._batch:
                return total
