"""How the database threads report a database that fails."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

import pytest

from campaign_grpc.storage import db_errors
from campaign_grpc.storage.connect import close_database, open_database
from campaign_grpc.storage.read_lanes import Readers


def test_an_outage_logs_one_traceback_and_a_line_for_each_failure(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(db_errors, "_last_traceback", -db_errors.TRACEBACK_EVERY_S)
    caplog.set_level(logging.ERROR, logger="campaign_grpc.storage.db_errors")
    errors = [db_errors.database_error(OSError("connection refused")) for _ in range(50)]

    assert {e.code for e in errors} == {"UNAVAILABLE"}
    assert {e.reason for e in errors} == {"DATABASE_UNAVAILABLE"}
    assert len(caplog.records) == 50
    assert [r for r in caplog.records if r.exc_info] == caplog.records[:1]
    assert all("connection refused" in r.getMessage() for r in caplog.records)


def burn(seconds: float) -> str:
    """A read that keeps the CPU busy (a page of large campaigns decoded, say)."""
    deadline = time.thread_time() + seconds
    while time.thread_time() < deadline:
        pass
    return "heavy"


async def test_a_quick_read_does_not_wait_behind_heavy_ones(sqlite_url: str) -> None:
    db = open_database(sqlite_url)
    readers = Readers(db, 1)
    try:

        def heavy() -> str:
            return burn(0.02)

        def quick() -> str:
            return "quick"

        await readers.run(heavy)  # learnt: this call site's reads are heavy
        finished: list[str] = []

        async def read(fn: Callable[[], str]) -> None:
            finished.append(await readers.run(fn))

        # Four heavy reads queued first: on one queue the quick one would be answered last.
        await asyncio.gather(*(read(heavy) for _ in range(4)), read(quick))
        assert finished[0] == "quick"
    finally:
        readers.close()
        close_database(db)


async def test_reads_of_a_bulk_operation_never_hold_up_quick_ones_from_the_first(
    sqlite_url: str,
) -> None:
    db = open_database(sqlite_url)
    readers = Readers(db, 1, bulk=("snapshot",))
    try:

        class Store:
            def snapshot(self) -> str:
                return burn(0.05)

        store = Store()
        finished: list[str] = []

        async def read(fn: Callable[[], str]) -> None:
            finished.append(await readers.run(fn))

        # Never run before, and eight at once, as watchers reconnecting to a new server.
        await asyncio.gather(*(read(lambda: store.snapshot()) for _ in range(8)), read(str))
        assert finished[0] == ""
    finally:
        readers.close()
        close_database(db)
