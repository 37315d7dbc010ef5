"""Completes STOPPING campaigns whose stop grace ran out.

The deadlines live in the database, so they survive a restart: after one, every overdue
campaign is completed at once.
"""

from __future__ import annotations

import logging

from ..domain.campaigns import Campaigns
from .background import Repeating

log = logging.getLogger(__name__)


class StopTimer(Repeating):
    name = "stop-timer"

    def __init__(self, campaigns: Campaigns, *, max_sleep: float = 1.0) -> None:
        super().__init__(retry_delay=max_sleep)
        self._campaigns = campaigns
        # New deadlines are found by looking again at least this often.
        self._max_sleep = max_sleep

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
