"""Opening a database by URL, and running work on it off the event loop.

Writes go through one thread that commits every write waiting at that moment in one
transaction (group commit), each in its own savepoint, and answers each caller only after
the commit. Reads run on a small pool of threads, each with its own connection.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, TypeVar
from urllib.parse import urlsplit

import peewee as pw

from .errors import CampaignError, Unavailable

log = logging.getLogger(__name__)

T = TypeVar("T")


class UnsupportedDatabase(ValueError):
    pass


def open_database(url: str, *, sqlite_synchronous: str = "FULL") -> pw.Database:
    parts = urlsplit(url)
    if parts.scheme == "sqlite":
        path = url[len("sqlite:///") :] if url.startswith("sqlite:///") else ""
        if not path:
            raise UnsupportedDatabase(f"a SQLite URL names a file: sqlite:///FILE, got {url!r}")
        Path(path).parent.mkdir(parents=True, exist_ok=True)
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
    raise UnsupportedDatabase(f"unsupported database URL scheme {parts.scheme!r}")


def is_sqlite(db: pw.Database) -> bool:
    return isinstance(db, pw.SqliteDatabase)


@dataclass(slots=True)
class _Job(Generic[T]):
    fn: Callable[[], T]
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[T]
    outcome: tuple[bool, Any] = field(default=(False, None))


def _resolve(future: asyncio.Future[Any], ok: bool, value: Any) -> None:
    if future.done():
        return
    if ok:
        future.set_result(value)
    else:
        future.set_exception(value)


def database_error(exc: BaseException) -> CampaignError:
    log.error("database error: %s", exc, exc_info=exc)
    return Unavailable("the database is not available; retry later", reason="DATABASE_UNAVAILABLE")


class Writer:
    """One thread that owns every write, committing the writes waiting together."""

    def __init__(
        self,
        db: pw.Database,
        *,
        max_batch: int = 256,
        on_commit: Callable[[], None] | None = None,
    ) -> None:
        self._db = db
        self._max_batch = max_batch
        self.on_commit = on_commit
        self._jobs: queue.SimpleQueue[_Job[Any] | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="db-writer", daemon=True)
        self._thread.start()

    async def run(self, fn: Callable[[], T]) -> T:
        loop = asyncio.get_running_loop()
        job: _Job[T] = _Job(fn, loop, loop.create_future())
        self._jobs.put(job)
        return await job.future

    def close(self) -> None:
        self._jobs.put(None)
        self._thread.join()

    def _run(self) -> None:
        while True:
            first = self._jobs.get()
            if first is None:
                break
            batch = [first]
            stop = False
            while len(batch) < self._max_batch:
                try:
                    job = self._jobs.get_nowait()
                except queue.Empty:
                    break
                if job is None:
                    stop = True
                    break
                batch.append(job)
            self._commit(batch)
            if stop:
                break
        if not self._db.is_closed():
            self._db.close()

    def _commit(self, batch: list[_Job[Any]]) -> None:
        # A caller that gave up before its turn is not written at all.
        live = [job for job in batch if not job.future.cancelled()]
        if not live:
            return
        try:
            with self._db.atomic(*self._begin_args()):
                for job in live:
                    try:
                        with self._db.atomic():
                            job.outcome = (True, job.fn())
                    except CampaignError as exc:
                        job.outcome = (False, exc)
                    except pw.PeeweeException:
                        raise
                    except Exception as exc:  # our bug: the caller sees INTERNAL
                        job.outcome = (False, exc)
        except Exception as exc:
            error = database_error(exc)
            for job in live:
                job.outcome = (False, error)
            self._reconnect()
        else:
            if self.on_commit is not None:
                self.on_commit()
        for job in live:
            ok, value = job.outcome
            job.loop.call_soon_threadsafe(_resolve, job.future, ok, value)

    def _begin_args(self) -> tuple[str, ...]:
        # IMMEDIATE takes SQLite's write lock up front, so that processes sharing the
        # file queue on busy_timeout instead of failing to upgrade a read lock.
        return ("IMMEDIATE",) if is_sqlite(self._db) else ()

    def _reconnect(self) -> None:
        try:
            if not self._db.is_closed():
                self._db.close()
        except Exception:  # the connection is broken already
            log.debug("closing a broken connection failed", exc_info=True)


class Readers:
    """A pool of threads for reads; each thread keeps its own connection."""

    def __init__(self, db: pw.Database, threads: int) -> None:
        self._db = db
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="db-reader")

    async def run(self, fn: Callable[[], T]) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, self._call, fn)

    def _call(self, fn: Callable[[], T]) -> T:
        try:
            return fn()
        except CampaignError:
            raise
        except pw.PeeweeException as exc:
            if not self._db.is_closed():
                self._db.close()
            raise database_error(exc) from exc

    def close(self) -> None:
        self._pool.shutdown(wait=True)
        # Each reader thread's connection closes with its thread-local state.
