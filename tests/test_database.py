"""How the database threads report a database that fails."""

from __future__ import annotations

import logging

import pytest

from campaign_grpc.storage import database


def test_an_outage_logs_one_traceback_and_a_line_for_each_failure(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(database, "_last_traceback", -database.TRACEBACK_EVERY_S)
    caplog.set_level(logging.ERROR, logger="campaign_grpc.storage.database")
    errors = [database.database_error(OSError("connection refused")) for _ in range(50)]

    assert {e.code for e in errors} == {"UNAVAILABLE"}
    assert {e.reason for e in errors} == {"DATABASE_UNAVAILABLE"}
    assert len(caplog.records) == 50
    assert [r for r in caplog.records if r.exc_info] == caplog.records[:1]
    assert all("connection refused" in r.getMessage() for r in caplog.records)
