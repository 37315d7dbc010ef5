"""The log's timelines: which revisions a resume point from before a fork still names.

A promoted standby or a restored backup holds the log up to some revision, then goes on
from there with changes of its own: its revisions after that fork name other changes than
the ones clients received from the log before. The epoch (see identity.py) does not tell
them apart, as a physical copy copies it. So the log records its timelines: each starts at
a fork, the last revision it shares with the one before, and every message of a watch names
the timeline of its revision. A resume point of an earlier timeline is good up to the
first fork after it, and names nothing in this log beyond.

A new timeline starts when a server finds the database somewhere else than where the
current timeline was recorded (PostgreSQL: its cluster's system identifier, its WAL
timeline, which promotion and archive recovery move on, and the database's oid), or when
the watch hub finds the log went back or holds other changes (a SQLite file replaced by an
older copy). Each starts at the head, read while holding the revision row, so no write is
counted before its fork. A timeline started for nothing (two servers that both saw the
change) costs nothing: its fork is the head, and every revision up to it is shared.
"""

from __future__ import annotations

import functools
import logging
import secrets
import time
import weakref
from dataclasses import dataclass
from typing import Any, Protocol

import peewee as pw

from .connect import is_postgresql, is_sqlite
from .read_lanes import Readers

log = logging.getLogger(__name__)

# Every revision of the current timeline is in the log (as long as compaction kept it).
UNBOUNDED = 2**63 - 1
_TOKEN_DIGITS = 16


def _table(db: pw.Database) -> type[pw.Model]:
    """The table's model bound to db: one of its own per database, as in schema.py."""
    model = _tables.get(db)
    if model is None:

        class LogTimeline(pw.Model):
            seq = pw.BigAutoField()
            # The token clients hold: 16 hex digits of a random number.
            token = pw.CharField(max_length=_TOKEN_DIGITS, unique=True)
            # The last revision it shares with the timeline before it (0 for the first).
            forked_at = pw.BigIntegerField()
            # Where the database was when it started ("" on SQLite); see _place.
            place = pw.TextField()
            started_us = pw.BigIntegerField()

            class Meta:
                database = db
                table_name = "log_timeline"

        model = _tables[db] = LogTimeline
    return model


_tables: weakref.WeakKeyDictionary[pw.Database, type[pw.Model]] = weakref.WeakKeyDictionary()


def create_table(db: pw.Database) -> None:
    db.create_tables([_table(db)], safe=True)


def is_token(text: str) -> bool:
    return len(text) == _TOKEN_DIGITS and all(c in "0123456789abcdef" for c in text)


@dataclass(frozen=True, slots=True)
class Timeline:
    token: str
    forked_at: int


@dataclass(frozen=True, slots=True)
class Timelines:
    """The log's timelines, oldest first: the last one is the current one."""

    history: tuple[Timeline, ...]
    # Where the database is now, and where it was when the current timeline started.
    place: str = ""
    recorded_place: str = ""

    @property
    def current(self) -> Timeline:
        return self.history[-1]

    def shared_up_to(self, token: str) -> int | None:
        """The last revision of timeline token that is in this log too (UNBOUNDED: the
        current one), or None when token names none of this log's timelines."""
        for i, timeline in enumerate(self.history):
            if timeline.token == token:
                return min((t.forked_at for t in self.history[i + 1 :]), default=UNBOUNDED)
        return None


class TimelineSource(Protocol):
    async def read(self) -> Timelines: ...

    async def start(self, *, fork: bool) -> Timelines: ...


class LogTimelines:
    """read() and start() on the database threads."""

    def __init__(self, db: pw.Database, readers: Readers) -> None:
        self._db = db
        self._readers = readers

    async def read(self) -> Timelines:
        return await self._readers.run(lambda: read(self._db))

    async def start(self, *, fork: bool) -> Timelines:
        return await self._readers.run(lambda: start(self._db, fork=fork))


def read(db: pw.Database) -> Timelines:
    """The timelines as recorded, with the database's place now."""
    with db.atomic():
        return _read(db)


def start(db: pw.Database, *, fork: bool) -> Timelines:
    """Starts a timeline at the head when there is none yet, when the database's place is
    not the current timeline's, or when fork (the hub found another log); the timelines
    after it. A new one is written in a transaction that holds the revision row first, as a
    write does; finding nothing to do takes no lock (the hub looks every poll)."""
    if not fork:
        with db.atomic():
            now = _read(db)
        if _current(now):
            return now
    with db.atomic(*(("IMMEDIATE",) if is_sqlite(db) else ())):
        lock = "SELECT value FROM meta WHERE key = 'revision'"
        execute: Any = db.execute_sql
        row = execute(lock + (" FOR UPDATE" if is_postgresql(db) else "")).fetchone()
        head = 0 if row is None else int(row[0])
        now = _read(db)
        if not fork and _current(now):
            return now  # another server started it meanwhile
        _table(db).create(
            token=f"{secrets.randbits(63):0{_TOKEN_DIGITS}x}",
            forked_at=head,
            place=now.place,
            started_us=time.time_ns() // 1000,
        )
        return _read(db)


def _current(timelines: Timelines) -> bool:
    return bool(timelines.history) and timelines.recorded_place == timelines.place


def _read(db: pw.Database) -> Timelines:
    T: Any = _table(db)
    rows = list(T.select(T.token, T.forked_at, T.place).order_by(T.seq).tuples())
    history = tuple(Timeline(str(token), int(forked)) for token, forked, _ in rows)
    return Timelines(history, _place(db), str(rows[-1][2]) if rows else "")


def _place(db: pw.Database) -> str:
    """Where the database is: a copy of it made by pg_basebackup, once promoted or restored
    by archive recovery, writes on another WAL timeline; a pg_dump restored is in another
    cluster or under another database oid. SQLite tells nothing (its copies are whole
    files). The timeline is the one WAL is written on: pg_control_checkpoint() names the
    last checkpoint's, which after a promotion stays the old one until the next checkpoint
    (PostgreSQL 15: minutes later, at checkpoint_timeout)."""
    if not is_postgresql(db):
        return ""
    execute: Any = db.execute_sql
    try:
        # In a savepoint: a refusal leaves the transaction usable.
        with db.atomic():
            row = execute(
                "SELECT s.system_identifier, CASE WHEN pg_is_in_recovery() THEN c.timeline_id "
                "ELSE ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::int "
                "END, d.oid FROM pg_control_system() s, pg_control_checkpoint() c, "
                "pg_database d WHERE d.datname = current_database()"
            ).fetchone()
    except pw.ProgrammingError as exc:
        # A server that keeps these functions from its users (some managed services do):
        # forks are then found by the hub alone, as on SQLite.
        if type(exc.__context__).__name__ not in _REFUSALS:
            raise
        _refused(str(exc).splitlines()[0])
        return ""
    return "/".join(str(v) for v in row)


_REFUSALS = {"InsufficientPrivilege", "UndefinedFunction"}


@functools.cache
def _refused(why: str) -> None:
    log.warning(
        "the database does not say where it is (%s): a promoted standby or a restored copy "
        "is recognised only by a server that followed the log before, as on SQLite",
        why,
    )
