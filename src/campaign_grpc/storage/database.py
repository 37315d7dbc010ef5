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
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, Protocol, TypeVar, cast
from urllib.parse import quote, urlsplit

import peewee as pw
from playhouse.postgres_ext import PooledPsycopg3Database

from ..domain.errors import CampaignError, Unavailable

log = logging.getLogger(__name__)

T = TypeVar("T")


class UnsupportedDatabase(ValueError):
    pass


def open_database(
    url: str,
    *,
    sqlite_synchronous: str = "FULL",
    pool_size: int = 8,
    lock_timeout: float = 5.0,
    statement_timeout: float = 30.0,
    stall_timeout: float = 5.0,
) -> pw.Database:
    """A database by URL: sqlite:///FILE, or postgresql://[USER@]HOST[:PORT]/NAME[?PARAMS].

    lock_timeout bounds how long a statement waits for a lock another session holds (on
    SQLite the file's write lock); statement_timeout how long a PostgreSQL statement runs;
    stall_timeout how long a PostgreSQL session lives on, on either side, once the other side
    is gone or silent (see _session_options).
    """
    parts = urlsplit(url)
    if parts.scheme == "sqlite":
        path = url[len("sqlite:///") :] if url.startswith("sqlite:///") else ""
        if not path:
            raise UnsupportedDatabase(f"a SQLite URL names a file: sqlite:///FILE, got {url!r}")
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        _switch_to_wal(path)
        return SqliteFile(
            path,
            pragmas={
                "journal_mode": "wal",
                "synchronous": sqlite_synchronous,
                "busy_timeout": _ms(lock_timeout),
                "cache_size": -32_000,
                "temp_store": "memory",
            },
            check_same_thread=False,
        )
    if parts.scheme in ("postgresql", "postgres"):
        return _open_postgresql(url, pool_size, lock_timeout, statement_timeout, stall_timeout)
    raise UnsupportedDatabase(f"unsupported database URL scheme {parts.scheme!r}")


def _ms(seconds: float) -> int:
    return max(1, round(seconds * 1000))


FileId = tuple[int, int]


def _file_id(path: str) -> FileId | None:
    """The device and inode of the file at path; None when there is none."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return (st.st_dev, st.st_ino)


class SqliteFile(pw.SqliteDatabase):
    """SQLite on one file, whose connections remember which file they opened.

    SQLite goes on reading and writing a file that was deleted, or replaced by another (a
    backup put in its place), through the connections it has open: writes are acknowledged
    into a file that no longer exists. Each batch of database work first checks the file
    at the path against the one its thread's connection has open (file_problem), and a
    write batch checks again once it has committed (committed_in_place).
    """

    def __init__(self, path: str, **kwargs: Any) -> None:
        self.path = path
        # mode=rw: a file that has gone is an error, not a new, empty database.
        super().__init__(f"file:{quote(path)}?mode=rw", uri=True, **kwargs)

    def _connect(self) -> Any:
        opened = _file_id(self.path)
        conn = super()._connect()  # type: ignore[misc]  # Peewee's stubs omit it
        state = self._thread_state()
        state.file = opened
        page_cache_kib = getattr(state, "page_cache_kib", None)
        if page_cache_kib is not None:
            conn.execute(f"PRAGMA cache_size = -{int(page_cache_kib)}")
        return conn

    def use_page_cache(self, kib: int) -> None:
        """The page cache of this thread's connections, from the next one opened on."""
        self._thread_state().page_cache_kib = kib

    def _thread_state(self) -> Any:
        """Peewee's state of this thread's connection, where the file it opened is kept."""
        return cast(Any, self)._state

    def _open_file(self) -> FileId | None:
        return getattr(self._thread_state(), "file", None) if not self.is_closed() else None

    def file_problem(self) -> CampaignError | None:
        """Why this thread cannot use the database file now, if it cannot. A connection to a
        file no longer at the path is closed, so that the next statement opens the one there
        now; whether that is the same database the log's identity tells (see identity.py)."""
        now = _file_id(self.path)
        if now is None:
            _drop_connection(self)
            return Unavailable(
                f"the database file {self.path} is gone; restore it, or restart the server "
                "to make a new one",
                reason="DATABASE_FILE_MISSING",
            )
        opened = self._open_file()
        if opened is not None and opened != now:
            log.warning("the database file %s was replaced; opening the new one", self.path)
            _drop_connection(self)
        return None

    def committed_in_place(self) -> bool:
        """Whether the file this thread's connection committed to is still the one at the
        path."""
        opened = self._open_file()
        return opened is None or opened == _file_id(self.path)


def _refused_for_file(db: pw.Database, jobs: list[_Job[Any]]) -> CampaignError | None:
    """Fails the jobs when the database file is gone (see SqliteFile); with what."""
    problem = db.file_problem() if isinstance(db, SqliteFile) else None
    if problem is None:
        return None
    error = database_error(problem)
    _fail(jobs, error)
    return error


def _first_failure(exc: BaseException) -> BaseException:
    """The failure a transaction's ROLLBACK covered: SQLite rolls back by itself on some
    errors (a full disk, an I/O error), and the ROLLBACK that follows then fails with "no
    transaction is active", which says nothing of why; on PostgreSQL a commit the database
    refused closes its connection (see Store.journal_end), and the ROLLBACK then fails with
    "the connection is closed"."""
    covering = ("no transaction is active", "the connection is closed")
    while any(text in str(exc) for text in covering) and exc.__context__ is not None:
        exc = exc.__context__
    return exc


def _fail(jobs: list[_Job[Any]], error: CampaignError) -> None:
    for job in jobs:
        job.outcome = (False, error)


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


def _session_options(lock_timeout: float, statement_timeout: float, stall_timeout: float) -> str:
    """The settings every session of the service starts with, after the URL's own options,
    which they override.

    Every session waits for a lock, and runs a statement, for a bounded time: a write stuck
    behind another session's lock (an operator's open transaction, say) fails and is retried
    by its client instead of holding the writer, and every write behind it, forever.

    And PostgreSQL ends a session whose client is gone or stalled within stall_timeout: one
    left idle in its transaction (idle_in_transaction_session_timeout), one whose replies go
    unacknowledged (tcp_user_timeout), one whose peer went silent (TCP keepalives). Its
    defaults keep such a session, and the row locks of its open transaction, for two hours:
    a replica cut off from the database held up every other replica's writes to the
    campaigns it had locked for as long.
    """
    stall_s = max(1, round(stall_timeout))
    probe_s = max(1, stall_s // 3)
    return " ".join(
        f"-c {name}={value}"
        for name, value in (
            ("lock_timeout", _ms(lock_timeout)),
            ("statement_timeout", _ms(statement_timeout)),
            ("idle_in_transaction_session_timeout", _ms(stall_timeout)),
            ("tcp_user_timeout", _ms(stall_timeout)),
            ("tcp_keepalives_idle", probe_s),
            ("tcp_keepalives_interval", probe_s),
            ("tcp_keepalives_count", 3),
        )
    )


def _client_keepalives(stall_timeout: float) -> dict[str, Any]:
    """libpq's side of the same bound: a connection whose server is gone or silent breaks
    within stall_timeout, instead of a statement waiting on it for as long as the kernel
    retransmits (some 15 minutes)."""
    stall_s = max(1, round(stall_timeout))
    probe_s = max(1, stall_s // 3)
    return {
        # A connection being made counts too: libpq's floor is 2 s.
        "connect_timeout": max(2, stall_s),
        "keepalives": 1,
        "keepalives_idle": probe_s,
        "keepalives_interval": probe_s,
        "keepalives_count": 3,
        "tcp_user_timeout": _ms(stall_timeout),
    }


class PostgresDatabase(PooledPsycopg3Database):  # type: ignore[misc]  # untyped base
    """PostgreSQL through a pool of psycopg connections, where a write transaction may
    commit in its own last message (see pg_revisions): Peewee's COMMIT then has nothing
    left to do, and would only cost a round trip and a warning."""

    def commit(self) -> None:
        from psycopg.pq import TransactionStatus

        if not self.is_closed() and (
            self.connection().info.transaction_status == TransactionStatus.IDLE
        ):
            return
        super().commit()


def _open_postgresql(
    url: str, pool_size: int, lock_timeout: float, statement_timeout: float, stall_timeout: float
) -> pw.Database:
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
    options = _session_options(lock_timeout, statement_timeout, stall_timeout)
    params["options"] = f"{params.get('options', '')} {options}".strip()
    # The URL's own keepalive settings, if any, are the operator's and stay.
    params = {**_client_keepalives(stall_timeout), **params}
    # Each database thread keeps one connection; the pool caps how many a server holds and
    # makes a thread that finds none free wait for one instead of failing at once.
    db: pw.Database = PostgresDatabase(
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
    queued_at: float = field(default_factory=time.monotonic)


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


def _timed_out(exc: BaseException) -> CampaignError | None:
    """The error for a statement that gave up waiting: for another session's lock, or on
    PostgreSQL at statement_timeout. Either way its transaction rolled back whole, so the
    call is safe to repeat as it is: UNAVAILABLE, which clients retry with backoff, rather
    than ABORTED, which asks them to read again first and which no client retries."""
    # Peewee raises its own class of error while handling the driver's.
    cause = exc.__context__ if isinstance(exc, pw.PeeweeException) and exc.__context__ else exc
    state = getattr(cause, "sqlstate", None)
    text = str(cause)
    if state == "55P03" or (isinstance(cause, sqlite3.OperationalError) and "locked" in text):
        return Unavailable(
            "the database is locked by another session; nothing was written, retry later",
            reason="DATABASE_LOCK_TIMEOUT",
        )
    if state == "57014" and "statement timeout" in text:
        return Unavailable(
            "the database statement ran out of time; nothing was written, retry later",
            reason="DATABASE_STATEMENT_TIMEOUT",
        )
    return None


def database_error(exc: BaseException) -> CampaignError:
    """The error a call gets for a failed database operation, logged (and so counted, by
    its reason, see metrics)."""
    global _last_traceback
    error = exc if isinstance(exc, CampaignError) else _timed_out(exc)
    if error is not None:
        # Causes the message names in full: no traceback would say more.
        log.error(
            "database error: %s: %s", error.reason, error.message, extra={"reason": error.reason}
        )
        return error
    now = time.monotonic()
    extra = {"reason": "DATABASE_UNAVAILABLE"}
    if now - _last_traceback >= TRACEBACK_EVERY_S:
        _last_traceback = now
        log.error("database error: %s", exc, exc_info=exc, extra=extra)
    else:
        log.error(
            "database error: %s (traceback logged within %.0f s)",
            exc,
            TRACEBACK_EVERY_S,
            extra=extra,
        )
    return Unavailable("the database is not available; retry later", reason="DATABASE_UNAVAILABLE")


def _no_wakeup_preemption() -> None:
    """Puts the calling thread under Linux's SCHED_BATCH: its fair share of the CPU as before,
    but woken by the event loop, it no longer preempts it.

    Preempted right after handing a batch over, the loop sat descheduled holding the GIL,
    which the woken thread needed first thing: each read cost two more context switches.
    Under concurrent GetCampaign calls on two cores, it gave more calls a second for less CPU
    each (see bench/run.py). No privilege is needed; elsewhere, or refused, nothing changes.
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

    def close(self, within: float | None = None) -> bool:
        """Lets the threads finish the work they have; whether they all did. With within,
        the statements still running after that many seconds are cancelled (on PostgreSQL:
        on SQLite a wait for the file's lock ends at busy_timeout), and threads still busy
        a second later are left behind: a write stuck behind another session's lock must
        not hold a shutdown past its grace. What such a write did not commit rolls back
        when the process ends, and its caller was answered already."""
        for _ in self._threads:
            self._jobs.put(None)
        deadline = None if within is None else time.monotonic() + within
        for thread in self._threads:
            thread.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
        busy = [t for t in self._threads if t.is_alive()]
        if not busy:
            return True
        log.warning(
            "%s still running database work: cancelling it", ", ".join(t.name for t in busy)
        )
        self._cancel_statements()
        for thread in busy:
            thread.join(1.0)
        busy = [t for t in busy if t.is_alive()]
        if busy:
            log.warning("left behind: %s", ", ".join(t.name for t in busy))
        return not busy

    def _cancel_statements(self) -> None:
        """Cancels the statements running on the threads' connections, if it can."""

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
    def journal_commit_unanswered(self) -> bool: ...
    def journal_resolve(self, within: float) -> bool | None: ...
    def journal_defers_writes(self) -> bool: ...


class _NoJournal:
    def journal_begin(self) -> None:
        pass

    def journal_end(self) -> None:
        pass

    def journal_commit_unanswered(self) -> bool:
        return False

    def journal_resolve(self, within: float) -> bool | None:
        return None

    def journal_defers_writes(self) -> bool:
        return False

    def journal_mark(self) -> int:
        return 0

    def journal_rollback(self, mark: int) -> None:
        pass

    def journal_take(self) -> list[Any]:
        return []


@dataclass(frozen=True, slots=True)
class WriteFailure:
    at: float  # time.monotonic()
    reason: str


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
        lock_budget: float | None = None,
    ) -> None:
        self._db = db
        self._journal: Journal = journal or _NoJournal()
        # How long a write may wait for other sessions' locks, counted from when it was
        # handed to the writer, its wait behind earlier writes included. A statement's own
        # lock_timeout alone let a write queued behind one that waited it out wait as long
        # again: clients with a 10 s deadline saw DEADLINE_EXCEEDED instead of the reason.
        self._lock_budget = lock_budget
        # When the batch's budget ends (time.monotonic()).
        self._batch_deadline = 0.0
        self.on_commit = on_commit
        # A job that fails leaves the batch's other writes standing. On SQLite a failed
        # statement undoes only itself, so a job that fails before writing anything (every
        # refusal by a domain rule) needs no savepoint: the writes are counted instead, and
        # the rare failure that comes after a write runs the whole batch again with one
        # savepoint per job. On PostgreSQL a failed statement spoils the transaction.
        self._count_writes = is_sqlite(db)
        # The last batch that failed on the database's side (see server health).
        self.last_failure: WriteFailure | None = None
        super().__init__("db-writer", 1, max_batch, tracing, _system(db))

    def _run_batch(self, jobs: list[_Job[Any]]) -> Callable[[], None] | None:
        refused = _refused_for_file(self._db, jobs)
        if refused is not None:
            self._failed(refused)
            return None
        jobs = self._within_lock_budget(jobs)
        if not jobs:
            return None
        # A connection lost before COMMIT was sent leaves nothing written, so the batch runs
        # once more on a new one: a connection that died while idle (the database restarted
        # meanwhile) fails no call. One lost at COMMIT is not retried: that commit may stand.
        savepoints, may_retry, conflicts = not self._count_writes, True, 0
        while True:
            outcome = self._try_batch(
                jobs, savepoints=savepoints, may_retry=may_retry, conflicts=conflicts
            )
            if outcome is _Again.WROTE_THEN_FAILED:
                savepoints = True  # with them, it cannot happen again
            elif outcome is _Again.CONNECTION_LOST:
                may_retry = False
            elif outcome is _Again.CONFLICT:
                conflicts += 1
            else:
                break
        if outcome and self.on_commit is not None:
            return functools.partial(self.on_commit, outcome)
        return None

    def _try_batch(
        self, jobs: list[_Job[Any]], *, savepoints: bool, may_retry: bool, conflicts: int = 0
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
        except Exception as failure:
            exc = _first_failure(failure)
            unanswered = journal.journal_commit_unanswered()
            lost = _connection_lost(self._db)
            retry = may_retry and not committing and not unanswered and lost
            _drop_connection(self._db)
            if unanswered and lost:
                return self._after_unanswered_commit(jobs, exc)
            journal.journal_take()
            if retry:
                log.info("the database connection was lost; running the writes again")
                return _Again.CONNECTION_LOST
            state = _sqlstate(exc)
            if state in _CONFLICTS:
                if conflicts + 1 < CONFLICT_ATTEMPTS:
                    log.info("another replica's writes came first (%s); on fresh reads", state)
                    return _Again.CONFLICT
                exc = _conflict_error(exc)
            error = database_error(exc)
            _fail(jobs, error)
            self._failed(error)
            return []
        if isinstance(self._db, SqliteFile) and not self._db.committed_in_place():
            # Deleted or replaced while the batch ran: what it committed went into a file
            # that is no longer the database, and must not be acknowledged, nor announced.
            journal.journal_take()
            _drop_connection(self._db)
            error = database_error(
                Unavailable(
                    f"the database file {self._db.path} was replaced or removed while this "
                    "write committed: it may be lost; retry",
                    reason="DATABASE_FILE_REPLACED",
                )
            )
            _fail(jobs, error)
            self._failed(error)
            return []
        return journal.journal_take()

    def _after_unanswered_commit(self, jobs: list[_Job[Any]], exc: BaseException) -> list[Any]:
        """The connection went with the commit sent and unanswered: the writes may stand.
        The callers hear what the database says happened, learned on a new connection, or
        that nobody can tell yet, never "nothing was written" for writes that were."""
        journal = self._journal
        committed = journal.journal_resolve(within=UNANSWERED_COMMIT_WITHIN_S)
        if committed:
            log.warning("the commit's answer was lost; the database says it committed")
            return journal.journal_take()
        journal.journal_take()
        if committed is None:
            error = database_error(
                Unavailable(
                    "the database connection was lost as this write committed, and whether "
                    "it did is not known yet: it may have been written. Read the campaign "
                    "(its etag and revision) before writing again",
                    reason="COMMIT_OUTCOME_UNKNOWN",
                )
            )
        else:
            log.info("the commit's answer was lost; the database says it did not commit")
            error = database_error(exc)
        _fail(jobs, error)
        self._failed(error)
        return []

    def _within_lock_budget(self, jobs: list[_Job[Any]]) -> list[_Job[Any]]:
        """The jobs that may still wait for locks; those that waited their budget out behind
        others are failed as a lock timeout of their own would be. On SQLite the batch then
        waits for the file's lock no longer than its most hurried job may."""
        budget = self._lock_budget
        if budget is None:
            return jobs
        now = time.monotonic()
        left = [job for job in jobs if now - job.queued_at < budget]
        if len(left) < len(jobs):
            late = [job for job in jobs if now - job.queued_at >= budget]
            _fail(late, database_error(_queued_past_lock_budget(budget)))
        # The batch waits as long as its most hurried job may: every statement of the
        # transaction, its commit included, may be the one that waits.
        self._batch_deadline = min((job.queued_at for job in left), default=now) + budget
        if left and isinstance(self._db, SqliteFile):
            # A pragma of the connection, set for every batch (it costs microseconds): a
            # connection opened anew starts from the configured value.
            ms = _ms(self._batch_deadline - now)
            self._db.connection().execute(f"PRAGMA busy_timeout = {int(ms)}")
        return left

    def _lowered_lock_wait(self) -> str | None:
        """PostgreSQL: the statement that lowers the transaction's lock_timeout to what is
        left of the batch's budget, when that is shorter than the session's."""
        budget = self._lock_budget
        if budget is None:
            return None
        left = _ms(self._batch_deadline - time.monotonic())
        return f"SET LOCAL lock_timeout = {left}" if left < _ms(budget) else None

    def _failed(self, error: CampaignError) -> None:
        # A database that changed is recognised within moments, and is no reason to turn
        # load away; any other failure is.
        if error.reason != "DATABASE_CHANGED":
            self.last_failure = WriteFailure(time.monotonic(), error.reason)

    def _run_jobs(self, jobs: list[_Job[Any]], *, savepoints: bool) -> bool:
        """Runs the jobs, each in a savepoint, with its writes counted, or, where the journal
        defers every write to the end (PostgreSQL), with nothing to take back but what the
        journal kept; with counted writes, False as soon as one fails after writing (the
        batch must then run again)."""
        journal, execute = self._journal, self._db.execute_sql
        deferred = journal.journal_defers_writes()
        if deferred:
            savepoints = False
            lowered = self._lowered_lock_wait()
            if lowered is not None:
                execute(lowered)
        connection = None if savepoints or deferred else self._db.connection()
        for job in jobs:
            mark = journal.journal_mark()
            if savepoints:
                # Plain statements, one name for every job: Peewee's atomic() costs several
                # times as much, a fresh uuid and a context object for each write.
                execute("SAVEPOINT job")
            elif connection is not None:
                written = connection.total_changes
            try:
                job.outcome = (True, job.fn())
            except pw.PeeweeException:
                raise
            except Exception as exc:  # a domain error, or our bug (INTERNAL)
                if savepoints:
                    execute("ROLLBACK TO SAVEPOINT job")
                elif connection is not None and connection.total_changes != written:
                    return False
                journal.journal_rollback(mark)
                job.outcome = (False, exc)
            if savepoints:
                execute("RELEASE SAVEPOINT job")
        return True

    def _begin_args(self) -> tuple[str, ...]:
        # IMMEDIATE takes SQLite's write lock up front, so that processes sharing the
        # file queue on busy_timeout instead of failing to upgrade a read lock.
        return ("IMMEDIATE",) if is_sqlite(self._db) else ()

    def _thread_done(self) -> None:
        _drop_connection(self._db)

    def _cancel_statements(self) -> None:
        _cancel_statements(self._db)


def _cancel_statements(db: pw.Database) -> None:
    """Asks PostgreSQL to cancel what every connection in use is running (sqlite3 cannot
    end a wait for a lock: busy_timeout does)."""
    if not isinstance(db, PooledPsycopg3Database):
        return
    # Peewee's pool keeps the connections in use by key; psycopg's cancel_safe sends the
    # request over a connection of its own, so any thread may call it.
    for pooled in list(getattr(db, "_in_use", {}).values()):
        try:
            pooled.connection.cancel_safe(timeout=1.0)
        except Exception:
            log.debug("cancelling a statement failed", exc_info=True)


class _WroteThenFailed(Exception):
    """Rolls back a batch in which a job failed after writing (see Writer)."""


class _Again(enum.Enum):
    """Why a batch runs once more."""

    WROTE_THEN_FAILED = "a job failed after writing: again, with savepoints"
    CONNECTION_LOST = "the connection was lost before COMMIT: again, on a new one"
    CONFLICT = "another session's writes came first: again, on fresh reads"


# How long the writer asks the database, on a new connection, whether a commit whose answer
# was lost went through: PostgreSQL knows at once once the old session has ended, which
# resolve() brings about.
UNANSWERED_COMMIT_WITHIN_S = 5.0

# What a batch that another session's writes came before meets at commit: a campaign moved on
# from the version read (pg_deferred's serialization failure), a deadlock, a unique index
# taken meanwhile. Nothing was written: the batch runs again on fresh reads, up to
# CONFLICT_ATTEMPTS times in all.
_SERIALIZATION, _DEADLOCK, _UNIQUE = "40001", "40P01", "23505"
_CONFLICTS = frozenset((_SERIALIZATION, _DEADLOCK, _UNIQUE))
CONFLICT_ATTEMPTS = 4


def _queued_past_lock_budget(budget: float) -> CampaignError:
    return Unavailable(
        f"this write waited {budget:g} s behind writes held up by another session's locks; "
        "nothing was written, retry later",
        reason="DATABASE_LOCK_TIMEOUT",
    )


def _sqlstate(exc: BaseException) -> str | None:
    """The SQLSTATE of the failure, or of the one it happened while handling: a ROLLBACK
    on a connection closed after a refused commit (see Store.journal_end) fails too, and
    says nothing of why."""
    seen: BaseException | None = exc
    for _ in range(8):
        if seen is None:
            return None
        state = getattr(seen, "sqlstate", None)
        if isinstance(state, str):
            return state
        seen = seen.__context__
    return None


def _conflict_error(exc: BaseException) -> BaseException:
    """What the writes of a batch that kept meeting others' are told: nothing was written,
    and clients retry UNAVAILABLE with backoff."""
    return Unavailable(
        f"the campaigns kept changing through other writers while these writes were made "
        f"({CONFLICT_ATTEMPTS} attempts); nothing was written, retry",
        reason="DATABASE_CONFLICT",
    )


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


class _ReadLane(_BatchingThreads):
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
        super().__init__(name, threads, max_batch, tracing, _system(db))

    def _loop(self) -> None:
        if self._page_cache_kib is not None and isinstance(self._db, SqliteFile):
            self._db.use_page_cache(self._page_cache_kib)
        super()._loop()

    def _thread_done(self) -> None:
        _drop_connection(self._db)

    def _cancel_statements(self) -> None:
        _cancel_statements(self._db)

    def _run_batch(self, jobs: list[_Job[Any]]) -> None:
        if _refused_for_file(self._db, jobs) is not None:
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
            retry = may_retry and _connection_lost(self._db)
            _drop_connection(self._db)
            if retry:
                return self._read(fn, may_retry=False)
            return (False, database_error(exc))
        except Exception as exc:  # our bug: the caller sees INTERNAL
            return (False, exc)


class Readers:
    """Threads for reads, in two lanes; each thread keeps its own connection.

    A read that costs the CPU a lot (a page of the largest campaigns, to decode and encode; a
    snapshot of hundreds of them, far more) must not make the quick ones wait behind it, as
    one queue did: with a few walks of such pages under way, another customer's GetCampaign
    waited many times longer at the 99th percentile, and with several snapshots under way
    health checks timed out (see bench/big.py). Reads go to the quick lane; heavy ones (see
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
