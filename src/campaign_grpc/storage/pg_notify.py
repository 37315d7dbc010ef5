"""PostgreSQL LISTEN/NOTIFY: how a replica hears at once that another one wrote to the log.

A write transaction that logged events sends NOTIFY on CHANNEL; PostgreSQL delivers it to
every listening session only when the transaction commits. The payload is no more than a
hint: a listener reads the log itself, which stays the truth, so a notification lost while
a listener reconnects delays an event until the next poll and never loses it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import psycopg

log = logging.getLogger(__name__)

CHANNEL = "campaign_events"


class Listener:
    """One autocommit session that LISTENs on CHANNEL and calls wake(revision) for each
    notification, with the revision it announces (0 when it cannot tell).

    It runs on the event loop with psycopg's asyncio connection: waiting for a notification
    is I/O, not database work that could block the loop.
    """

    def __init__(self, url: str, wake: Callable[[int], None], *, retry_delay: float = 1.0) -> None:
        self._url = url
        self._wake = wake
        self._retry_delay = retry_delay
        self._task: asyncio.Task[None] | None = None
        # Set once the first LISTEN is in place: a test or a caller can wait for it.
        self.listening = asyncio.Event()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="pg-listener")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _run(self) -> None:
        while True:
            try:
                await self._listen()
            except (psycopg.Error, OSError):
                log.warning(
                    "listening for log notifications failed; the poll carries on, "
                    "retrying in %.1f s",
                    self._retry_delay,
                    exc_info=True,
                )
            await asyncio.sleep(self._retry_delay)

    async def _listen(self) -> None:
        async with await psycopg.AsyncConnection.connect(self._url, autocommit=True) as conn:
            await conn.execute(f"LISTEN {CHANNEL}")
            self.listening.set()
            # Whatever was committed while this session was not listening is read now.
            self._wake(0)
            async for notification in conn.notifies():
                self._wake(_revision(notification.payload))


def _revision(payload: str) -> int:
    try:
        return int(payload)
    except ValueError:
        return 0
