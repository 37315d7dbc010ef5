"""Gives the campaigns an older release stored their actions' encoding, in the background.

List pages are made of that encoding (see storage.store.WireForm); a row without it is
decoded and encoded again for every page it is on, which for one of 1,000 actions costs the
interpreter dearly. Each batch is one short job of the writer, as the log's compaction is, so
a server upgraded onto a large database serves at once and writes queue behind a batch at
most, however long the whole takes.
"""

from __future__ import annotations

import logging

from ..storage.store import Store
from ..storage.writer import Writer
from .background import Repeating

log = logging.getLogger(__name__)


class ActionsEncoding(Repeating):
    name = "actions-encoding"

    def __init__(self, store: Store, writer: Writer, *, batch: int = 16) -> None:
        super().__init__(retry_delay=10.0)
        self._store = store
        self._writer = writer
        self._batch = batch
        self._after = 0
        self.done = False

    async def step(self) -> float:
        if not self.done and self._after == 0:
            self.done = await self._writer.run(self._store.actions_all_encoded)
        if self.done:
            return 3600.0
        after = await self._writer.run(
            lambda: self._store.encode_stored_actions(self._after, self._batch)
        )
        if after is None:
            self.done = True
            log.info("every stored campaign has its actions encoded for list pages")
            return 3600.0
        self._after = after
        return 0.0
