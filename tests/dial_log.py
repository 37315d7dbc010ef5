"""What dialers of one test process did: each campaign's dial intervals per dialer, checked
for overlap as the processes' logs are (dial_intervals)."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

from campaign_grpc_client.v1 import campaign_pb2 as pb
from dial_intervals import Stretch, overlaps


@dataclass
class Interval:
    dialer: str
    campaign_id: str
    start: float
    end: float | None = None


@dataclass
class DialLog:
    intervals: list[Interval] = field(default_factory=list)

    def open(self, dialer: str, campaign_id: str, at: float | None = None) -> None:
        if self.current(dialer, campaign_id) is None:
            self.intervals.append(
                Interval(dialer, campaign_id, time.monotonic() if at is None else at)
            )

    def close(self, dialer: str, campaign_id: str, at: float | None = None) -> None:
        found = self.current(dialer, campaign_id)
        if found is not None:
            found.end = time.monotonic() if at is None else at

    def close_all(self, dialer: str, at: float | None = None) -> None:
        """The dialer died: its calls ended with it."""
        for i in self.intervals:
            if i.dialer == dialer and i.end is None:
                i.end = time.monotonic() if at is None else at

    def current(self, dialer: str, campaign_id: str) -> Interval | None:
        for i in self.intervals:
            if i.dialer == dialer and i.campaign_id == campaign_id and i.end is None:
                return i
        return None

    def dialing(self, campaign_id: str) -> list[str]:
        return [i.dialer for i in self.intervals if i.campaign_id == campaign_id and i.end is None]

    def overlaps(self) -> list[tuple[Stretch, Stretch]]:
        """Pairs of stretches of one campaign, of two dialers, that share a moment."""
        now = time.monotonic()
        return overlaps(
            [
                Stretch(i.dialer, i.campaign_id, 0, i.start, now if i.end is None else i.end)
                for i in self.intervals
            ]
        )


class RecordingCalls:
    """A dialer's calls that only record: dial opens an interval, drain closes it."""

    def __init__(self, log: DialLog, dialer: str, drain_s: float = 0.0) -> None:
        self.log = log
        self.dialer = dialer
        self.drain_s = drain_s
        self.dials: list[str] = []

    async def dial(self, campaign: pb.WatchStatusResponse) -> None:
        self.dials.append(campaign.campaign_id)
        self.log.open(self.dialer, campaign.campaign_id)

    async def drain(self, campaign_id: str) -> None:
        if self.drain_s and self.log.current(self.dialer, campaign_id) is not None:
            await asyncio.sleep(self.drain_s)
        self.log.close(self.dialer, campaign_id)
