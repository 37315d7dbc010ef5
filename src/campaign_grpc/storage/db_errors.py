"""What a call is told when its database work fails, and the failure logged (and so counted)."""

from __future__ import annotations

import logging
import sqlite3
import time

import peewee as pw

from ..domain.errors import CampaignError, Unavailable

log = logging.getLogger(__name__)

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


def first_failure(exc: BaseException) -> BaseException:
    """The failure a transaction's ROLLBACK covered: SQLite rolls back by itself on some
    errors (a full disk, an I/O error), and the ROLLBACK that follows then fails with "no
    transaction is active", which says nothing of why; on PostgreSQL a commit the database
    refused closes its connection (see Store.journal_end), and the ROLLBACK then fails with
    "the connection is closed"."""
    covering = ("no transaction is active", "the connection is closed")
    while any(text in str(exc) for text in covering) and exc.__context__ is not None:
        exc = exc.__context__
    return exc


# What a batch that another session's writes came before meets at commit: a campaign moved on
# from the version read (pg_deferred's serialization failure), a deadlock, a unique index
# taken meanwhile. Nothing was written: the batch runs again on fresh reads, up to
# CONFLICT_ATTEMPTS times in all.
_SERIALIZATION, _DEADLOCK, _UNIQUE = "40001", "40P01", "23505"
CONFLICTS = frozenset((_SERIALIZATION, _DEADLOCK, _UNIQUE))
CONFLICT_ATTEMPTS = 4


def sqlstate(exc: BaseException) -> str | None:
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


def conflict_error(exc: BaseException) -> BaseException:
    """What the writes of a batch that kept meeting others' are told: nothing was written,
    and clients retry UNAVAILABLE with backoff."""
    return Unavailable(
        f"the campaigns kept changing through other writers while these writes were made "
        f"({CONFLICT_ATTEMPTS} attempts); nothing was written, retry",
        reason="DATABASE_CONFLICT",
    )
