"""Completes STOPPING campaigns whose stop grace ran out.

The deadlines live in the database, so they survive a restart: after one, every overdue
campaign is completed at once.
"""

from __future__ import annotations

import asyncio
import logging

from .campaigns import Campaigns

log = logging.getLogger(__name__)


class StopTimer:
    def __init__(self, campaigns: Campaigns, *, max_sleep: float = 1.0) -> None:
        self._campaigns = campaigns
        # New deadlines are found by looking again at least this often.
        self._max_sleep = max_sleep
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="stop-timer")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _run(self) -> None:
        while True:
            try:
                delay = await self.step()
            except Exception:
                log.warning("completing expired stops failed; retrying", exc_info=True)
                delay = self._max_sleep
            await asyncio.sleep(delay)

    async def step(self) -> float:
        """Completes what is due; returns how long to sleep before the next look."""
        deadline = await self._campaigns.next_stop_deadline()
        if deadline is not None and deadline <= self._campaigns.now():
            completed = await self._campaigns.expire_stops()
            log.info("stop grace expired for %d campaign(s)", completed)
            return 0.0
        if deadline is None:
            return self._max_sleep
        return min(self._max_sleep, (deadline - self._campaigns.now()) / 1_000_000)
