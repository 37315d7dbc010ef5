"""Threads for reads, each with its own connection, in two lanes: quick reads and heavy ones."""

from __future__ import annotations

import time
from collections.abc import Callable, Collection
from typing import Any, TypeVar

import peewee as pw

from ..domain.errors import CampaignError
from .batching import BatchingThreads, BatchTracing, Job, refused_for_file
from .connect import db_system
from .connections import cancel_statements, connection_lost, drop_connection
from .db_errors import database_error
from .sqlite_file import SqliteFile

T = TypeVar("T")


# A call site whose reads average this much CPU is heavy: its reads go to the bulk lane.
HEAVY_READ_S = 0.005


class _ReadCosts:
    """Which reads are heavy: those of the operations declared bulk (see Readers), and those
    from a call site (the code of the function handed to Readers.run) whose reads have
    averaged HEAVY_READ_S of CPU time or more, which catches what nobody declared (a count
    of every campaign, say) after a few of its reads."""

    def __init__(self, bulk: Collection[str]) -> None:
        self._bulk = tuple(bulk)
        self._average: dict[Any, float] = {}
        self._declared: dict[Any, bool] = {}

    @staticmethod
    def site(fn: Callable[[], Any]) -> Any:
        code = getattr(fn, "__code__", None) or getattr(
            getattr(fn, "__func__", None), "__code__", None
        )
        return code if code is not None else type(fn)

    def heavy(self, site: Any) -> bool:
        declared = self._declared.get(site)
        if declared is None:
            # The domain hands its reads over as closures that call one store operation,
            # `lambda: self._store.list_page(...)`: the operation's name is in the code's.
            names = (*getattr(site, "co_names", ()), getattr(site, "co_name", ""))
            declared = self._declared[site] = any(n.startswith(self._bulk) for n in names)
        return declared or self._average.get(site, 0.0) >= HEAVY_READ_S

    def add(self, site: Any, seconds: float) -> None:
        # Each thread writes its own sites' averages mostly; a race loses one sample.
        before = self._average.get(site)
        self._average[site] = seconds if before is None else 0.8 * before + 0.2 * seconds


# SQLite's page cache of the bulk read thread's connection. Large campaigns are read through
# it once in a while, and it keeps what passed through until the connection closes: with the
# others' size it held most of it after a burst of them.
BULK_PAGE_CACHE_KIB = 2_000


class _ReadLane(BatchingThreads):
    span_name = "db.read"

    def __init__(
        self,
        db: pw.Database,
        costs: _ReadCosts,
        name: str,
        threads: int,
        max_batch: int,
        page_cache_kib: int | None = None,
        tracing: BatchTracing | None = None,
    ) -> None:
        self._db = db
        self._costs = costs
        self._page_cache_kib = page_cache_kib
        super().__init__(name, threads, max_batch, tracing, db_system(db))

    def _loop(self) -> None:
        if self._page_cache_kib is not None and isinstance(self._db, SqliteFile):
            self._db.use_page_cache(self._page_cache_kib)
        super()._loop()

    def _thread_done(self) -> None:
        drop_connection(self._db)

    def _cancel_statements(self) -> None:
        cancel_statements(self._db)

    def _run_batch(self, jobs: list[Job[Any]]) -> None:
        if refused_for_file(self._db, jobs) is not None:
            return
        costs, clock = self._costs, time.thread_time
        for job in jobs:
            started = clock()
            job.outcome = self._read(job.fn)
            costs.add(costs.site(job.fn), clock() - started)

    def _read(self, fn: Callable[[], Any], *, may_retry: bool = True) -> tuple[bool, Any]:
        try:
            return (True, fn())
        except CampaignError as exc:
            return (False, exc)
        except pw.PeeweeException as exc:
            # A read is safe to repeat: one whose connection turns out lost (it died while
            # idle, the database restarted meanwhile) runs once more on a new connection.
            retry = may_retry and connection_lost(self._db)
            drop_connection(self._db)
            if retry:
                return self._read(fn, may_retry=False)
            return (False, database_error(exc))
        except Exception as exc:  # our bug: the caller sees INTERNAL
            return (False, exc)


class Readers:
    """Threads for reads, in two lanes; each thread keeps its own connection.

    A read that costs the CPU a lot (a page of the largest campaigns: tens of milliseconds of
    decoding and encoding; a snapshot of hundreds of them, seconds) must not make the quick
    ones wait behind it, as one queue did: four walks of such pages under way held up another
    customer's GetCampaign (see docs/performance.md), and with eight snapshots under way
    health checks timed out. Reads go to the quick lane; heavy ones (see
    _ReadCosts: the operations named in bulk, whose names start so, from the first, and any
    whose reads turn out dear) to the bulk lane, a thread of its own.
    """

    def __init__(
        self,
        db: pw.Database,
        threads: int,
        *,
        max_batch: int = 64,
        bulk_threads: int = 1,
        bulk: Collection[str] = (),
        tracing: BatchTracing | None = None,
    ) -> None:
        self._costs = _ReadCosts(bulk)
        self._quick = _ReadLane(db, self._costs, "db-reader", threads, max_batch, tracing=tracing)
        self._bulk = _ReadLane(
            db,
            self._costs,
            "db-bulk-reader",
            bulk_threads,
            max_batch,
            BULK_PAGE_CACHE_KIB,
            tracing=tracing,
        )

    async def run(self, fn: Callable[[], T]) -> T:
        lane = self._bulk if self._costs.heavy(_ReadCosts.site(fn)) else self._quick
        return await lane.run(fn)

    def close(self, within: float | None = None) -> bool:
        deadline = None if within is None else time.monotonic() + within
        quick = self._quick.close(within)
        rest = None if deadline is None else max(0.5, deadline - time.monotonic())
        return self._bulk.close(rest) and quick
