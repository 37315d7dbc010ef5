"""Threads that run database work handed over from the event loop, a batch at a time."""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, TypeVar

import peewee as pw

from ..domain.errors import CampaignError
from .db_errors import database_error
from .scheduling import no_wakeup_preemption
from .sqlite_file import SqliteFile

log = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass(slots=True)
class Job(Generic[T]):
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


def _resolve_all(jobs: list[Job[Any]], first: Callable[[], None] | None = None) -> None:
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


def refused_for_file(db: pw.Database, jobs: list[Job[Any]]) -> CampaignError | None:
    """Fails the jobs when the database file is gone (see sqlite_file.SqliteFile); with what."""
    problem = db.file_problem() if isinstance(db, SqliteFile) else None
    if problem is None:
        return None
    error = database_error(problem)
    fail(jobs, error)
    return error


def fail(jobs: list[Job[Any]], error: CampaignError) -> None:
    for job in jobs:
        job.outcome = (False, error)


class BatchingThreads:
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
        self._jobs: queue.SimpleQueue[list[Job[Any]] | None] = queue.SimpleQueue()
        # Jobs submitted during the current turn of each event loop, handed over together.
        self._submitting: dict[asyncio.AbstractEventLoop, list[Job[Any]]] = {}
        self._threads = [
            threading.Thread(target=self._loop, name=f"{name}-{i}", daemon=True)
            for i in range(threads)
        ]
        for thread in self._threads:
            thread.start()

    async def run(self, fn: Callable[[], T]) -> T:
        loop = asyncio.get_running_loop()
        job: Job[T] = Job(fn, loop, loop.create_future())
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
        no_wakeup_preemption()
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
                # (see writer.Writer.on_commit) travels with the answers, once.
                started_ns = time.time_ns() if self._tracing is not None else 0
                then = self._run_batch(live)
                if self._tracing is not None:
                    then = self._traced(live, then, started_ns)
                by_loop: dict[asyncio.AbstractEventLoop, list[Job[Any]]] = {}
                for job in live:
                    by_loop.setdefault(job.loop, []).append(job)
                for loop, jobs in by_loop.items():
                    if not loop.is_closed():
                        loop.call_soon_threadsafe(_resolve_all, jobs, then)
                        then = None
            if stop:
                return

    def _run_batch(self, jobs: list[Job[Any]]) -> Callable[[], None] | None:
        """Runs the jobs, setting each one's outcome; returns what to run on the callers'
        event loop before they are answered, if anything."""
        raise NotImplementedError

    def _batch_attributes(self, jobs: list[Job[Any]]) -> dict[str, Any]:
        return {"db.system": self._system, "db.batch.size": len(jobs)}

    def _traced(
        self, jobs: list[Job[Any]], then: Callable[[], None] | None, started_ns: int
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
