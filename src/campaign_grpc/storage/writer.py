"""The one thread that owns every write.

It commits every write waiting at that moment in one transaction (group commit), where a
write that fails takes back its own changes and no other's, and answers each caller only
after the commit.
"""

from __future__ import annotations

import enum
import functools
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import peewee as pw

from ..domain.errors import CampaignError, Unavailable
from .batching import BatchingThreads, BatchTracing, Job, fail, refused_for_file
from .connect import db_system, is_sqlite, milliseconds
from .connections import cancel_statements, connection_lost, drop_connection
from .db_errors import (
    CONFLICT_ATTEMPTS,
    CONFLICTS,
    conflict_error,
    database_error,
    first_failure,
    sqlstate,
)
from .sqlite_file import SqliteFile

log = logging.getLogger(__name__)


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


class Writer(BatchingThreads):
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
        super().__init__("db-writer", 1, max_batch, tracing, db_system(db))

    def _run_batch(self, jobs: list[Job[Any]]) -> Callable[[], None] | None:
        refused = refused_for_file(self._db, jobs)
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
        self, jobs: list[Job[Any]], *, savepoints: bool, may_retry: bool, conflicts: int = 0
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
            exc = first_failure(failure)
            unanswered = journal.journal_commit_unanswered()
            lost = connection_lost(self._db)
            retry = may_retry and not committing and not unanswered and lost
            drop_connection(self._db)
            if unanswered and lost:
                return self._after_unanswered_commit(jobs, exc)
            journal.journal_take()
            if retry:
                log.info("the database connection was lost; running the writes again")
                return _Again.CONNECTION_LOST
            state = sqlstate(exc)
            if state in CONFLICTS:
                if conflicts + 1 < CONFLICT_ATTEMPTS:
                    log.info("another replica's writes came first (%s); on fresh reads", state)
                    return _Again.CONFLICT
                exc = conflict_error(exc)
            error = database_error(exc)
            fail(jobs, error)
            self._failed(error)
            return []
        if isinstance(self._db, SqliteFile) and not self._db.committed_in_place():
            # Deleted or replaced while the batch ran: what it committed went into a file
            # that is no longer the database, and must not be acknowledged, nor announced.
            journal.journal_take()
            drop_connection(self._db)
            error = database_error(
                Unavailable(
                    f"the database file {self._db.path} was replaced or removed while this "
                    "write committed: it may be lost; retry",
                    reason="DATABASE_FILE_REPLACED",
                )
            )
            fail(jobs, error)
            self._failed(error)
            return []
        return journal.journal_take()

    def _after_unanswered_commit(self, jobs: list[Job[Any]], exc: BaseException) -> list[Any]:
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
        fail(jobs, error)
        self._failed(error)
        return []

    def _within_lock_budget(self, jobs: list[Job[Any]]) -> list[Job[Any]]:
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
            fail(late, database_error(_queued_past_lock_budget(budget)))
        # The batch waits as long as its most hurried job may: every statement of the
        # transaction, its commit included, may be the one that waits.
        self._batch_deadline = min((job.queued_at for job in left), default=now) + budget
        if left and isinstance(self._db, SqliteFile):
            # A pragma of the connection, set for every batch (it costs microseconds): a
            # connection opened anew starts from the configured value.
            ms = milliseconds(self._batch_deadline - now)
            self._db.connection().execute(f"PRAGMA busy_timeout = {int(ms)}")
        return left

    def _lowered_lock_wait(self) -> str | None:
        """PostgreSQL: the statement that lowers the transaction's lock_timeout to what is
        left of the batch's budget, when that is shorter than the session's."""
        budget = self._lock_budget
        if budget is None:
            return None
        left = milliseconds(self._batch_deadline - time.monotonic())
        return f"SET LOCAL lock_timeout = {left}" if left < milliseconds(budget) else None

    def _failed(self, error: CampaignError) -> None:
        # A database that changed is recognised within moments, and is no reason to turn
        # load away; any other failure is.
        if error.reason != "DATABASE_CHANGED":
            self.last_failure = WriteFailure(time.monotonic(), error.reason)

    def _run_jobs(self, jobs: list[Job[Any]], *, savepoints: bool) -> bool:
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
        drop_connection(self._db)

    def _cancel_statements(self) -> None:
        cancel_statements(self._db)


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


def _queued_past_lock_budget(budget: float) -> CampaignError:
    return Unavailable(
        f"this write waited {budget:g} s behind writes held up by another session's locks; "
        "nothing was written, retry later",
        reason="DATABASE_LOCK_TIMEOUT",
    )
