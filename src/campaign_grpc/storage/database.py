"""Opening a database by URL, and running work on it off the event loop.

Writes go through one thread that commits every write waiting at that moment in one
transaction (group commit), where a write that fails takes back its own changes and no
other's, and answers each caller only after the commit. Reads run on a small pool of
threads, each with its own connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import functools
import logging
import os
import queue
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, Protocol, TypeVar
from urllib.parse import urlsplit

import peewee as pw
from playhouse.postgres_ext import PooledPsycopg3Database

from ..domain.errors import CampaignError, Unavailable

log = logging.getLogger(__name__)

T = TypeVar("T")


class UnsupportedDatabase(ValueError):
    pass


def open_database(url: str, *, sqlite_synchronous: str = "FULL", pool_size: int = 8) -> pw.Database:
    """A database by URL: sqlite:///FILE, or postgresql://[USER@]HOST[:PORT]/NAME[?PARAMS]."""
    parts = urlsplit(url)
    if parts.scheme == "sqlite":
        path = url[len("sqlite:///") :] if url.startswith("sqlite:///") else ""
        if not path:
            raise UnsupportedDatabase(f"a SQLite URL names a file: sqlite:///FILE, got {url!r}")
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        _switch_to_wal(path)
        return pw.SqliteDatabase(
            path,
            pragmas={
                "journal_mode": "wal",
                "synchronous": sqlite_synchronous,
                "busy_timeout": 10_000,
                "cache_size": -32_000,
                "temp_store": "memory",
            },
            check_same_thread=False,
        )
    if parts.scheme in ("postgresql", "postgres"):
        return _open_postgresql(url, pool_size)
    raise UnsupportedDatabase(f"unsupported database URL scheme {parts.scheme!r}")


def _switch_to_wal(path: str, within: float = 10.0) -> None:
    """Puts the file in WAL mode once, before any connection of ours sets its pragmas.

    The switch needs the file to itself, and SQLite refuses it at once, without waiting on
    busy_timeout, to a process that races another doing the same (two servers starting
    together on a new file): retry it briefly. The mode is stored in the file, so the
    connections' own journal_mode pragma is then a no-op.
    """
    deadline = time.monotonic() + within
    while True:
        try:
            with contextlib.closing(sqlite3.connect(path, timeout=within)) as conn:
                conn.execute("PRAGMA journal_mode=wal").fetchone()
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.02)


def _open_postgresql(url: str, pool_size: int) -> pw.Database:
    # libpq parses the URL (host, port, user, password, sslmode, options...), so every
    # parameter a PostgreSQL user knows works unchanged.
    from psycopg.conninfo import conninfo_to_dict

    try:
        params = conninfo_to_dict(url)
    except Exception as exc:
        raise UnsupportedDatabase(f"not a PostgreSQL URL: {url!r}: {exc}") from None
    name = params.pop("dbname", None)
    if not name:
        raise UnsupportedDatabase(f"a PostgreSQL URL names a database: {url!r}")
    # Each database thread keeps one connection; the pool caps how many a server holds and
    # makes a thread that finds none free wait for one instead of failing at once.
    db: pw.Database = PooledPsycopg3Database(
        name, max_connections=pool_size, timeout=30, autoconnect=True, **params
    )
    return db


def is_sqlite(db: pw.Database) -> bool:
    return isinstance(db, pw.SqliteDatabase)


def is_postgresql(db: pw.Database) -> bool:
    return isinstance(db, pw.PostgresqlDatabase)


def _system(db: pw.Database) -> str:
    """The database's name as OpenTelemetry's db.system attribute has it."""
    return "sqlite" if is_sqlite(db) else "postgresql"


@dataclass(slots=True)
class _Job(Generic[T]):
    fn: Callable[[], T]
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[T]
    outcome: tuple[bool, Any] = field(default=(False, None))
    # With tracing: the span of the call that submitted the job, and when it did (ns).
    parent: object | None = None
    queued_ns: int = 0


class BatchTracing(Protocol):
    """Spans of the database work done for traced calls (see ops.tracing.Tracing)."""

    def capture(self) -> object | None:
        """The current call's span, to make children of; None when it is not traced."""
        ...

    def batch_spans(
        self,
        parents: Sequence[object | None],
        *,
        queued_ns: Sequence[int],
        started_ns: int,
        ended_ns: int,
        name: str,
        attributes: dict[str, Any],
    ) -> None: ...


def _resolve_all(jobs: list[_Job[Any]], first: Callable[[], None] | None = None) -> None:
    if first is not None:
        try:
            first()
        except Exception:  # our bug; the callers must hear back all the same
            log.exception("after a batch of database work")
    for job in jobs:
        if job.future.done():  # the caller gave up meanwhile
            continue
        ok, value = job.outcome
        if ok:
            job.future.set_result(value)
        else:
            job.future.set_exception(value)


# An outage fails every call: one traceback in this many seconds tells the cause, and the
# rest of the failures get a line each (still counted, see metrics), not a traceback each.
TRACEBACK_EVERY_S = 10.0
_last_traceback = -TRACEBACK_EVERY_S


def database_error(exc: BaseException) -> CampaignError:
    global _last_traceback
    now = time.monotonic()
    if now - _last_traceback >= TRACEBACK_EVERY_S:
        _last_traceback = now
        log.error("database error: %s", exc, exc_info=exc)
    else:
        log.error("database error: %s (traceback logged within %.0f s)", exc, TRACEBACK_EVERY_S)
    return Unavailable("the database is not available; retry later", reason="DATABASE_UNAVAILABLE")


def _no_wakeup_preemption() -> None:
    """Puts the calling thread under Linux's SCHED_BATCH: its fair share of the CPU as before,
    but woken by the event loop, it no longer preempts it.

    Preempted right after handing a batch over, the loop sat descheduled holding the GIL,
    which the woken thread needed first thing: each read cost two more context switches.
    Measured on two cores under 16 concurrent GetCampaign calls: 9% more calls a second and
    7% less CPU for each. No privilege is needed; elsewhere, or refused, nothing changes.
    """
    if not hasattr(os, "SCHED_BATCH"):
        return
    try:
        os.sched_setscheduler(threading.get_native_id(), os.SCHED_BATCH, os.sched_param(0))
    except OSError as exc:
        log.debug("database threads keep the default scheduling policy: %s", exc)


class _BatchingThreads:
    """Threads that take every job waiting at once, run them, and answer them together.

    One wake-up of the event loop per batch instead of per job keeps the hand-off between
    threads cheap under load, which is when it matters.
    """

    # What a traced job's span of the batch's work is called.
    span_name = "db.batch"

    def __init__(
        self,
        name: str,
        threads: int,
        max_batch: int,
        tracing: BatchTracing | None = None,
        system: str = "",
    ) -> None:
        self._max_batch = max_batch
        self._tracing = tracing
        self._system = system
        self._jobs: queue.SimpleQueue[list[_Job[Any]] | None] = queue.SimpleQueue()
        # Jobs submitted during the current turn of each event loop, handed over together.
        self._submitting: dict[asyncio.AbstractEventLoop, list[_Job[Any]]] = {}
        self._threads = [
            threading.Thread(target=self._loop, name=f"{name}-{i}", daemon=True)
            for i in range(threads)
        ]
        for thread in self._threads:
            thread.start()

    async def run(self, fn: Callable[[], T]) -> T:
        loop = asyncio.get_running_loop()
        job: _Job[T] = _Job(fn, loop, loop.create_future())
        if self._tracing is not None:
            job.parent = self._tracing.capture()
            job.queued_ns = time.time_ns()
        # Each hand-over to a waiting thread costs a wake-up and a fight for the GIL: the
        # calls that arrive in one turn of the loop are handed over as one batch at its end.
        submitting = self._submitting.get(loop)
        if submitting is None:
            submitting = self._submitting[loop] = []
            loop.call_soon(self._submit, loop)
        submitting.append(job)
        return await job.future

    def _submit(self, loop: asyncio.AbstractEventLoop) -> None:
        self._jobs.put(self._submitting.pop(loop))

    def close(self) -> None:
        for _ in self._threads:
            self._jobs.put(None)
        for thread in self._threads:
            thread.join()

    def _loop(self) -> None:
        _no_wakeup_preemption()
        try:
            self._serve()
        finally:
            self._thread_done()

    def _serve(self) -> None:
        while True:
            first = self._jobs.get()
            if first is None:
                return
            batch = list(first)
            stop = False
            while len(batch) < self._max_batch:
                try:
                    jobs = self._jobs.get_nowait()
                except queue.Empty:
                    break
                if jobs is None:
                    stop = True
                    break
                batch += jobs
            # A caller that gave up before its turn is not run at all.
            live = [job for job in batch if not job.future.cancelled()]
            if live:
                # One wake-up of each loop per batch: what the batch leaves to do on the loop
                # (see Writer.on_commit) travels with the answers, once.
                started_ns = time.time_ns() if self._tracing is not None else 0
                then = self._run_batch(live)
                if self._tracing is not None:
                    then = self._traced(live, then, started_ns)
                by_loop: dict[asyncio.AbstractEventLoop, list[_Job[Any]]] = {}
                for job in live:
                    by_loop.setdefault(job.loop, []).append(job)
                for loop, jobs in by_loop.items():
                    if not loop.is_closed():
                        loop.call_soon_threadsafe(_resolve_all, jobs, then)
                        then = None
            if stop:
                return

    def _run_batch(self, jobs: list[_Job[Any]]) -> Callable[[], None] | None:
        """Runs the jobs, setting each one's outcome; returns what to run on the callers'
        event loop before they are answered, if anything."""
        raise NotImplementedError

    def _batch_attributes(self, jobs: list[_Job[Any]]) -> dict[str, Any]:
        return {"db.system": self._system, "db.batch.size": len(jobs)}

    def _traced(
        self, jobs: list[_Job[Any]], then: Callable[[], None] | None, started_ns: int
    ) -> Callable[[], None]:
        """then, and the spans of the batch's traced jobs: made on the event loop with the
        answers, as no more work for the database thread."""
        tracing, ended_ns = self._tracing, time.time_ns()
        assert tracing is not None
        attributes = self._batch_attributes(jobs)

        def spans_then() -> None:
            tracing.batch_spans(
                [job.parent for job in jobs],
                queued_ns=[job.queued_ns for job in jobs],
                started_ns=started_ns,
                ended_ns=ended_ns,
                name=self.span_name,
                attributes=attributes,
            )
            if then is not None:
                then()

        return spans_then

    def _thread_done(self) -> None:
        """Runs on each thread as it ends: a connection is its thread's own to close."""


class Journal(Protocol):
    """What a transaction wrote that others should hear of once it commits.

    journal_begin runs first in every write transaction, before any job; journal_end last,
    after the jobs that rolled back; journal_take after the transaction, committed or not.
    """

    def journal_begin(self) -> None: ...
    def journal_end(self) -> None: ...
    def journal_mark(self) -> int: ...
    def journal_rollback(self, mark: int) -> None: ...
    def journal_take(self) -> list[Any]: ...


class _NoJournal:
    def journal_begin(self) -> None:
        pass

    def journal_end(self) -> None:
        pass

    def journal_mark(self) -> int:
        return 0

    def journal_rollback(self, mark: int) -> None:
        pass

    def journal_take(self) -> list[Any]:
        return []


class Writer(_BatchingThreads):
    """One thread that owns every write, committing the writes waiting together.

    After each commit, on_commit receives what the journal collected from the writes that
    committed (the rolled-back ones' entries are dropped with their savepoint), on the event
    loop of the batch's callers (of one of them, should they come from several), just before
    they hear back.
    """

    span_name = "db.transaction"

    def __init__(
        self,
        db: pw.Database,
        *,
        max_batch: int = 256,
        journal: Journal | None = None,
        on_commit: Callable[[list[Any]], None] | None = None,
        tracing: BatchTracing | None = None,
    ) -> None:
        self._db = db
        self._journal: Journal = journal or _NoJournal()
        self.on_commit = on_commit
        # A job that fails leaves the batch's other writes standing. On SQLite a failed
        # statement undoes only itself, so a job that fails before writing anything (every
        # refusal by a domain rule) needs no savepoint: the writes are counted instead, and
        # the rare failure that comes after a write runs the whole batch again with one
        # savepoint per job. On PostgreSQL a failed statement spoils the transaction.
        self._count_writes = is_sqlite(db)
        super().__init__("db-writer", 1, max_batch, tracing, _system(db))

    def _run_batch(self, jobs: list[_Job[Any]]) -> Callable[[], None] | None:
        # A connection lost before COMMIT was sent leaves nothing written, so the batch runs
        # once more on a new one: a connection that died while idle (the database restarted
        # meanwhile) fails no call. One lost at COMMIT is not retried: that commit may stand.
        savepoints, may_retry = not self._count_writes, True
        while True:
            outcome = self._try_batch(jobs, savepoints=savepoints, may_retry=may_retry)
            if outcome is _Again.WROTE_THEN_FAILED:
                savepoints = True  # with them, it cannot happen again
            elif outcome is _Again.CONNECTION_LOST:
                may_retry = False
            else:
                break
        if outcome and self.on_commit is not None:
            return functools.partial(self.on_commit, outcome)
        return None

    def _try_batch(
        self, jobs: list[_Job[Any]], *, savepoints: bool, may_retry: bool
    ) -> list[Any] | _Again:
        """Runs the batch in one transaction: what the journal collected once it committed,
        or why it should run again."""
        journal = self._journal
        committing = False
        try:
            with self._db.atomic(*self._begin_args()):
                journal.journal_begin()
                if not self._run_jobs(jobs, savepoints=savepoints):
                    raise _WroteThenFailed
                journal.journal_end()
                committing = True
        except _WroteThenFailed:
            journal.journal_take()
            return _Again.WROTE_THEN_FAILED
        except Exception as exc:
            journal.journal_take()
            retry = may_retry and not committing and _connection_lost(self._db)
            _drop_connection(self._db)
            if retry:
                log.info("the database connection was lost; running the writes again")
                return _Again.CONNECTION_LOST
            error = database_error(exc)
            for job in jobs:
                job.outcome = (False, error)
            return []
        return journal.journal_take()

    def _run_jobs(self, jobs: list[_Job[Any]], *, savepoints: bool) -> bool:
        """Runs the jobs, each in a savepoint or with its writes counted; without savepoints,
        False as soon as one fails after writing (the batch must then run again)."""
        journal, execute = self._journal, self._db.execute_sql
        connection = None if savepoints else self._db.connection()
        for job in jobs:
            mark = journal.journal_mark()
            if connection is None:
                # Plain statements, one name for every job: Peewee's atomic() costs several
                # times as much, a fresh uuid and a context object for each write.
                execute("SAVEPOINT job")
            else:
                written = connection.total_changes
            try:
                job.outcome = (True, job.fn())
            except pw.PeeweeException:
                raise
            except Exception as exc:  # a domain error, or our bug (INTERNAL)
                if connection is None:
                    execute("ROLLBACK TO SAVEPOINT job")
                elif connection.total_changes != written:
                    return False
                journal.journal_rollback(mark)
                job.outcome = (False, exc)
            if connection is None:
                execute("RELEASE SAVEPOINT job")
        return True

    def _begin_args(self) -> tuple[str, ...]:
        # IMMEDIATE takes SQLite's write lock up front, so that processes sharing the
        # file queue on busy_timeout instead of failing to upgrade a read lock.
        return ("IMMEDIATE",) if is_sqlite(self._db) else ()

    def _thread_done(self) -> None:
        _drop_connection(self._db)


class _WroteThenFailed(Exception):
    """Rolls back a batch in which a job failed after writing (see Writer)."""


class _Again(enum.Enum):
    """Why a batch runs once more."""

    WROTE_THEN_FAILED = "a job failed after writing: again, with savepoints"
    CONNECTION_LOST = "the connection was lost before COMMIT: again, on a new one"


def close_database(db: pw.Database) -> None:
    """Closes the calling thread's connection and, for a pool, every idle connection in it."""
    _drop_connection(db)
    if isinstance(db, PooledPsycopg3Database):
        db.close_all()


def _connection_lost(db: pw.Database) -> bool:
    """Whether this thread's connection broke (its server or the network went away), as
    opposed to a statement failing on a sound connection or no connection being made."""
    if db.is_closed():
        return False
    return bool(getattr(db.connection(), "broken", False))  # psycopg's flag; SQLite has none


def _drop_connection(db: pw.Database) -> None:
    """Closes this thread's connection, broken or not; the next use opens a new one."""
    try:
        if not db.is_closed():
            db.close()
    except Exception:
        log.debug("closing a broken connection failed", exc_info=True)


class Readers(_BatchingThreads):
    """Threads for reads; each keeps its own connection."""

    span_name = "db.read"

    def __init__(
        self,
        db: pw.Database,
        threads: int,
        *,
        max_batch: int = 64,
        tracing: BatchTracing | None = None,
    ) -> None:
        self._db = db
        super().__init__("db-reader", threads, max_batch, tracing, _system(db))

    def _thread_done(self) -> None:
        _drop_connection(self._db)

    def _run_batch(self, jobs: list[_Job[Any]]) -> None:
        for job in jobs:
            job.outcome = self._read(job.fn)

    def _read(self, fn: Callable[[], Any], *, may_retry: bool = True) -> tuple[bool, Any]:
        try:
            return (True, fn())
        except CampaignError as exc:
            return (False, exc)
        except pw.PeeweeException as exc:
            # A read is safe to repeat: one whose connection turns out lost (it died while
            # idle, the database restarted meanwhile) runs once more on a new connection.
            retry = may_retry and _connection_lost(self._db)
            _drop_connection(self._db)
            if retry:
                return self._read(fn, may_retry=False)
            return (False, database_error(exc))
        except Exception as exc:  # our bug: the caller sees INTERNAL
            return (False, exc)
