"""Time by the database's clock: microseconds since the epoch, the same on every replica.

Replicas compare the times they write: one stamps a stop deadline that another's stop timer
finds due; one stamps events that another's compaction finds old. On each replica's own
wall clock, one replica's error moved them all: 90 s ahead, it completed the others' stops
as soon as they began; 25 h ahead, it deleted the whole log. So on PostgreSQL these times
come from the database server's clock, which all replicas share; the local wall clock only
decides what the log lines say about it.

Reading the clock is no query: a sample of PostgreSQL's clock_timestamp() says what the
database's clock read at about the midpoint of its round trip, and from there the clock
advances with the monotonic clock, which a step of the wall clock does not move. As NTP
does, of the recent samples the one with the least possible error is believed: that is half
its round trip, plus what the monotonic clock may have drifted since it was taken.
"""

from __future__ import annotations

import collections
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import peewee as pw

log = logging.getLogger(__name__)

# Microseconds since the epoch, the database's clock_timestamp(): the real time while the
# statement runs, not the start of the transaction as now() would be.
CLOCK_QUERY = "SELECT (extract(epoch FROM clock_timestamp()) * 1000000)::bigint"
# Samples the best is chosen from: at one sample every 15 s, the last two minutes.
WINDOW = 8
# How fast the monotonic clock may drift from the database's, as NTP assumes (15 ppm): an
# older sample's error grows by this much a second.
DRIFT_NS_PER_S = 15_000
# A local wall clock further from the database's than this is worth a warning.
SKEW_WARNING_S = 1.0


@dataclass(frozen=True, slots=True)
class Sample:
    """One reading of the database's clock, between two readings of the monotonic clock."""

    sent_ns: int  # time.monotonic_ns() before the query was sent
    database_us: int  # the database's clock while the query ran
    received_ns: int  # time.monotonic_ns() once its answer was in

    @property
    def round_trip_ns(self) -> int:
        return self.received_ns - self.sent_ns

    @property
    def offset_ns(self) -> int:
        """What to add to the monotonic clock to read the database's."""
        return self.database_us * 1000 - (self.sent_ns + self.received_ns) // 2

    def error_ns(self, now_ns: int) -> int:
        """How far from the database's clock this sample may put it, at monotonic now_ns."""
        age_s = max(0, now_ns - self.received_ns) / 1e9
        return self.round_trip_ns // 2 + int(age_s * DRIFT_NS_PER_S)


def read_clock(db: pw.Database) -> Sample:
    """Samples the database's clock; blocks, so it runs on a database thread."""
    peewee: Any = db  # Peewee's stubs leave these two untyped
    # Connected first, so that the round trip is the query's alone.
    peewee.connection()
    sent = time.monotonic_ns()
    row = peewee.execute_sql(CLOCK_QUERY).fetchone()
    received = time.monotonic_ns()
    return Sample(sent, int(row[0]), received)


class DatabaseClock:
    """Microseconds since the epoch by the database's clock, once sync() has sampled it.

    Until then it reads the local wall clock. Calls from any thread; syncs from the loop.
    """

    def __init__(
        self,
        sample: Callable[[], Awaitable[Sample]],
        *,
        window: int = WINDOW,
        skew_warning_s: float = SKEW_WARNING_S,
        wall_ns: Callable[[], int] = time.time_ns,
        monotonic_ns: Callable[[], int] = time.monotonic_ns,
    ) -> None:
        self._sample = sample
        self._samples: collections.deque[Sample] = collections.deque(maxlen=window)
        self._skew_warning_us = int(skew_warning_s * 1_000_000)
        self._wall_ns = wall_ns
        self._monotonic_ns = monotonic_ns
        self._offset_ns = wall_ns() - monotonic_ns()
        self._believed: Sample | None = None
        # The skew last warned about; None while the wall clock agrees with the database's.
        self._skew_reported_us: int | None = None

    def __call__(self) -> int:
        return (self._monotonic_ns() + self._offset_ns) // 1000

    @property
    def synced(self) -> bool:
        return self._believed is not None

    @property
    def error_us(self) -> int | None:
        """How far this clock may be from the database's now; None before the first sample."""
        if self._believed is None:
            return None
        return self._believed.error_ns(self._monotonic_ns()) // 1000

    @property
    def skew_us(self) -> int:
        """How far the local wall clock is ahead of the database's (behind: negative)."""
        return self._wall_ns() // 1000 - self()

    async def sync(self) -> Sample:
        """Takes one sample and believes the best of the recent ones; returns the sample."""
        sample = await self._sample()
        self._samples.append(sample)
        now = self._monotonic_ns()
        best = min(self._samples, key=lambda s: s.error_ns(now))
        # A replaced sample may move the clock back by a few milliseconds at most: the two
        # differ by no more than their errors.
        self._offset_ns = best.offset_ns
        self._believed = best
        self._report_skew()
        return sample

    def _report_skew(self) -> None:
        skew = self.skew_us
        reported = self._skew_reported_us
        if abs(skew) <= self._skew_warning_us:
            if reported is not None:
                log.info(
                    "the local wall clock agrees with the database's again (%+.3f s)", skew / 1e6
                )
                self._skew_reported_us = None
            return
        if reported is None or abs(skew - reported) > self._skew_warning_us:
            log.warning(
                "the local wall clock is %.3f s %s the database's; stop deadlines, the log's "
                "retention and the times written follow the database's clock",
                abs(skew) / 1e6,
                "ahead of" if skew > 0 else "behind",
            )
            self._skew_reported_us = skew
