"""A step repeated in the background of the event loop until the server stops."""

from __future__ import annotations

import asyncio
import logging

log = logging.getLogger(__name__)


class Repeating:
    """Runs step() again and again, sleeping as long as it says; a failed step is logged and
    retried after retry_delay, so that a database outage never ends the task."""

    name = "repeating"

    def __init__(self, *, retry_delay: float) -> None:
        self._retry_delay = retry_delay
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=self.name)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def step(self) -> float:
        """Does one round of the work; returns the seconds to sleep before the next."""
        raise NotImplementedError

    async def _run(self) -> None:
        while True:
            try:
                delay = await self.step()
            except Exception:
                log.warning("%s failed; retrying", self.name, exc_info=True)
                delay = self._retry_delay
            await asyncio.sleep(delay)
