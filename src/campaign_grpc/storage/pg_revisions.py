"""PostgreSQL: the log's revisions are given as a transaction commits.

Every replica takes the log's next revisions from one counter, the meta row "revision", which
stays locked from the moment a transaction takes its numbers until it commits: revisions then
commit in order, and the log has no gap. Taken first in the transaction, as on SQLite, the lock
was held across each of the transaction's round trips. A replica on a slow path held it for
many of its round trips each batch, and the whole fleet's writes slowed with it (see
bench/faults.py); a replica cut off while holding it stopped every replica's writes until
PostgreSQL gave up on its session.

Here a transaction writes its events with provisional revisions, negative numbers that no other
open transaction uses (its backend's pid picks the range). Its last statements, sent with its
writes and its COMMIT in one pipeline (one round trip, see pg_deferred), take the counter,
renumber what it wrote and notify the other replicas: the lock is held while PostgreSQL runs
them, never across the network.

When the connection is lost with the COMMIT sent, the transaction may or may not have
committed. resolve() finds out on a new connection: it ends the old session if PostgreSQL has
not yet (so that its transaction is decided), then asks pg_xact_status.
"""

from __future__ import annotations

import enum
import logging
import time
from dataclasses import dataclass, replace
from typing import Any

import peewee as pw

from ..domain.types import Campaign, Event

log = logging.getLogger(__name__)

# The provisional revisions one transaction may take: far more than any batch writes.
SPAN = 1 << 24


def provisional_base(backend_pid: int) -> int:
    """The revision before a transaction's first provisional one: its backend's range, which
    no other open transaction shares (PostgreSQL's pids are unique among live sessions)."""
    return -(backend_pid + 1) * SPAN


@dataclass(frozen=True, slots=True)
class Pending:
    """A transaction whose events carry provisional revisions after base."""

    base: int
    count: int
    # pg_current_xact_id() and pg_backend_pid() of its session: how to learn its outcome.
    xid: int
    backend_pid: int

    def final(self, revision: int, head_before: int) -> int:
        """The revision that replaces a provisional one once the counter stood at
        head_before; any other revision is left as it is."""
        if self.base < revision <= self.base + self.count:
            return revision - self.base + head_before
        return revision


def commit_statements(pending: Pending, channel: str) -> list[tuple[str, dict[str, int]]]:
    """What a transaction that logged events sends after its writes, before its COMMIT: the
    counter taken (the first statement, whose result is the counter's new value), the
    revisions renumbered, the other replicas notified. The same text every time, so that
    PostgreSQL prepares each statement once."""
    n, lo, hi, base = pending.count, pending.base + 1, pending.base + pending.count, pending.base
    params = {"n": n, "lo": lo, "hi": hi, "base": base}
    head_before = "(SELECT value - %(n)s FROM meta WHERE key = 'revision')"

    def final(column: str) -> str:
        return (
            f"{column} = CASE WHEN {column} BETWEEN %(lo)s AND %(hi)s "
            f"THEN {column} - %(base)s + {head_before} ELSE {column} END"
        )

    revisions = ", ".join(final(c) for c in ("revision", "stop_revision", "body_revision"))
    statements = (
        "UPDATE meta SET value = value + %(n)s WHERE key = 'revision' RETURNING value",
        f"UPDATE event SET {revisions} WHERE revision BETWEEN %(lo)s AND %(hi)s",
        f"UPDATE campaign SET {revisions}, {final('actions_wire_body')} "
        "WHERE revision BETWEEN %(lo)s AND %(hi)s",
        f"UPDATE campaign_body SET {final('revision')}, {final('superseded_at')} "
        "WHERE superseded_at BETWEEN %(lo)s AND %(hi)s",
        # Delivered at commit, and not at all should it roll back (see pg_notify).
        f"SELECT pg_notify('{channel}', value::text) FROM meta WHERE key = 'revision'",
    )
    return [(sql, params) for sql in statements]


def renumbered(
    events: list[Event], read: list[Campaign], pending: Pending, head_before: int
) -> list[Event]:
    """The events with their final revisions; the campaigns they carry, and those read in
    the transaction (which the callers may be answered with), are given theirs in place."""
    out: list[Event] = []
    touched: dict[int, Campaign] = {id(c): c for c in read}
    for e in events:

        def final(revision: int) -> int:
            return pending.final(revision, head_before)

        if e.campaign is not None:
            touched[id(e.campaign)] = e.campaign
        out.append(
            replace(
                e,
                revision=final(e.revision),
                stop_revision=final(e.stop_revision),
                body_revision=final(e.body_revision),
            )
        )
    for c in touched.values():
        c.revision = pending.final(c.revision, head_before)
        c.stop_revision = pending.final(c.stop_revision, head_before)
        c.body_revision = pending.final(c.body_revision, head_before)
    return out


class Outcome(enum.Enum):
    COMMITTED = "committed"
    NOT_COMMITTED = "not committed"
    UNKNOWN = "unknown"


def resolve(
    db: pw.Database, pending: Pending, first: Event, *, within: float
) -> tuple[Outcome, int]:
    """Whether the transaction committed, learned on a new connection; with the counter's
    value before its revisions when it did. UNKNOWN when the database cannot tell within
    that many seconds (it cannot be reached, say)."""
    deadline = time.monotonic() + within
    try:
        # A session PostgreSQL has not seen go yet still holds its transaction open: ending it
        # decides the transaction (its COMMIT, if it arrived, ran first). Only that session:
        # the pid must still be running that transaction (backend_xid is its 32-bit xid).
        _execute(
            db,
            "SELECT pg_terminate_backend(pid, %s) FROM pg_stat_activity "
            "WHERE pid = %s AND backend_xid::text = %s",
            (max(1, int(within * 1000)), pending.backend_pid, str(pending.xid % 2**32)),
        )
        while True:
            row = _execute(db, "SELECT pg_xact_status(%s::xid8)", (str(pending.xid),)).fetchone()
            status = None if row is None else row[0]
            if status == "committed":
                return Outcome.COMMITTED, _head_before(db, pending, first)
            if status == "aborted":
                return Outcome.NOT_COMMITTED, 0
            if time.monotonic() >= deadline:
                log.warning("transaction %d is %s still: outcome unknown", pending.xid, status)
                return Outcome.UNKNOWN, 0
            time.sleep(0.05)
    except Exception as exc:
        log.warning("could not learn whether transaction %d committed: %s", pending.xid, exc)
        return Outcome.UNKNOWN, 0


def _execute(db: pw.Database, sql: str, params: tuple[object, ...]) -> Any:
    return db.execute_sql(sql, params)  # type: ignore[no-untyped-call]


def _head_before(db: pw.Database, pending: Pending, first: Event) -> int:
    """The counter before the committed transaction's revisions: found by its first event,
    which its campaign's version names alone (every event makes a new version)."""
    row = _execute(
        db,
        "SELECT revision FROM event WHERE customer_id = %s AND campaign_id = %s AND version = %s",
        (first.customer_id, first.campaign_id, first.version),
    ).fetchone()
    if row is None:
        raise LookupError(f"the first event of transaction {pending.xid} is not in the log")
    return int(row[0]) - (first.revision - pending.base)
