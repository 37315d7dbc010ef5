"""The writer's transaction in progress: the events it logged (its journal, which the writer
hands to the watch once it commits, see writer.Journal), and on PostgreSQL the writes it
keeps for the one message that commits (see pg_deferred and pg_revisions).

Write methods of the store are only called inside the writer's transaction, so a domain
operation composed of several of them is atomic.
"""

from __future__ import annotations

from typing import Any

import peewee as pw
import psycopg

from ..domain.types import Campaign, Event
from . import pg_revisions
from ._base import StoreBase
from .identity import database_changed
from .pg_deferred import DeferredWrites, compare_and_set
from .pg_notify import CHANNEL
from .prepared import Prepared, as_peewee_errors, param


class Transaction(StoreBase):
    def _prepare_transaction(self) -> None:
        M = self.t.meta
        # The events written by the writer's transaction in progress (see writer.Journal).
        self._journal: list[Event] = []
        # The log's revision when that transaction began: its events take the next ones, and
        # the counter is written once, at its end (journal_begin, journal_end).
        self._revision_at_begin: int | None = None
        # The revision, and in the same statement the epoch, which every write checks.
        epoch = M.alias("epoch")
        head_and_epoch = M.select(
            M.value, epoch.select(epoch.value).where(epoch.key == "epoch")
        ).where(M.key == "revision")
        # On PostgreSQL the counter is taken, not locked, at the start (see pg_revisions),
        # and the transaction's id is read with it, to learn its outcome should the commit's
        # reply be lost.
        if self._postgresql:
            head_and_epoch = head_and_epoch.select_extend(pw.fn.pg_current_xact_id().cast("text"))
        self._lock_revision = Prepared(self.db, head_and_epoch)
        # The transaction in progress, on PostgreSQL: its provisional revisions; and whether
        # the message that commits it went out without an answer.
        self._pending: pg_revisions.Pending | None = None
        self._commit_sent = False
        self._read_in_transaction: list[Campaign] = []
        # On PostgreSQL a write transaction's writes wait here for its last message.
        self._deferred = DeferredWrites()
        self._deferring = False
        self._marks: list[tuple[int, int]] = []
        self._set_revision = Prepared(self.db, M.update(value=param(0)).where(M.key == "revision"))

    # -- the journal (see writer.Journal) --------------------------------------------

    def journal_begin(self) -> None:
        """First in every write transaction (see writer.Journal).

        Reads the revision row. On SQLite, BEGIN IMMEDIATE holds the file's one write lock:
        no other writer can move the counter before this transaction ends, so its events
        count on from here in memory. On PostgreSQL the transaction only reads until its
        end: its writes, its events under provisional revisions, wait for the message that
        takes the counter and commits (see pg_deferred and pg_revisions).
        """
        row = self._lock_revision.one()
        assert row is not None, "the schema is not migrated"
        revision, epoch = int(row[0]), None if row[1] is None else int(row[1])
        self._commit_sent = False
        # Nothing is decided on a database the server has not recognised yet: the hub looks
        # at the log at once, and once it has (streams ended, caches dropped), the retry
        # writes.
        why = self.identity.mismatch(epoch, revision)
        if why:
            self.identity.on_mismatch()
            raise database_changed(why)
        if self._postgresql:
            pid = self.db.connection().info.backend_pid
            base = pg_revisions.provisional_base(pid)
            self._pending = pg_revisions.Pending(base, 0, int(row[2]), pid)
            revision = base
            self._deferred.clear()
            self._deferring = True
        self._revision_at_begin = revision

    def journal_defers_writes(self) -> bool:
        """Whether the transaction in progress writes nothing before its end (PostgreSQL):
        a write that fails then needs no savepoint to take it back."""
        return self._deferring

    def journal_end(self) -> None:
        """Last in a write transaction, after the writes that rolled back: stores the
        counter. On PostgreSQL it also commits: one message gives the events their
        revisions, tells the other replicas and commits (see pg_revisions)."""
        if self._pending is None:
            if self._journal:
                self._set_revision.execute(self._journal[-1].revision)
            return
        if not self._journal and not self._deferred.statements:
            return  # nothing written: Peewee's COMMIT ends the transaction
        pending = self._pending = pg_revisions.Pending(
            self._pending.base, len(self._journal), self._pending.xid, self._pending.backend_pid
        )
        tail = pg_revisions.commit_statements(pending, CHANNEL) if pending.count else []
        connection = self.db.connection()
        self._commit_sent = True
        with as_peewee_errors:
            # One pipeline, one round trip: the writes (prepared statements, their values
            # bound), the counter taken, COMMIT. A statement that fails (a compare-and-set
            # that found another version) makes PostgreSQL skip the rest, COMMIT included.
            # The writes are not prepared, their shapes being many; the counter's statements
            # always are. A pipeline that aborts before a PREPARE it carried ran leaves
            # psycopg believing in a prepared statement that does not exist: such a
            # connection is closed, so that the pool makes a new one.
            try:
                with connection.pipeline():
                    for sql, params in self._deferred.statements:
                        connection.execute(sql, params, prepare=False)
                    counter = [connection.execute(sql, p, prepare=True) for sql, p in tail]
                    connection.execute("COMMIT", prepare=False)
            except psycopg.errors.DatabaseError as refused:
                if refused.sqlstate is not None:
                    connection.close()
                raise
            row = counter[0].fetchone() if counter else (pending.base + pending.count,)
        self._commit_sent = False
        assert row is not None
        self._journal = pg_revisions.renumbered(
            self._journal, self._read_in_transaction, pending, int(row[0]) - pending.count
        )

    def journal_commit_unanswered(self) -> bool:
        """Whether this transaction's commit went out and its answer never came."""
        return self._commit_sent

    def journal_resolve(self, within: float) -> bool | None:
        """After journal_commit_unanswered: whether the transaction committed (its journal
        then holds the final revisions), None when the database cannot tell."""
        pending, self._commit_sent = self._pending, False
        if pending is None or not self._journal:
            return None
        outcome, head_before = pg_revisions.resolve(
            self.db, pending, self._journal[0], within=within
        )
        if outcome is pg_revisions.Outcome.COMMITTED:
            self._journal = pg_revisions.renumbered(
                self._journal, self._read_in_transaction, pending, head_before
            )
            return True
        return False if outcome is pg_revisions.Outcome.NOT_COMMITTED else None

    def journal_mark(self) -> int:
        self._marks.append((len(self._journal), self._deferred.mark() if self._deferring else 0))
        return len(self._marks) - 1

    def journal_rollback(self, mark: int) -> None:
        events, deferred = self._marks[mark]
        del self._journal[events:]
        if self._deferring:
            self._deferred.rollback(deferred)
        del self._marks[mark:]

    def journal_take(self) -> list[Event]:
        events, self._journal = self._journal, []
        self._revision_at_begin, self._pending, self._commit_sent = None, None, False
        self._read_in_transaction = []
        self._deferred.clear()
        self._deferring = False
        self._marks = []
        return events

    # -- the transaction's writes, and what it read --------------------------------------

    def _write(self, statement: Prepared, *args: Any) -> None:
        """Runs a write now, or on PostgreSQL keeps it for the message that commits."""
        if self._deferring:
            self._deferred.add(statement.sql, statement.bind(args))
        else:
            statement.execute(*args)

    def write(self, statement: Prepared, *args: Any) -> None:
        """A write of another table in the writer's transaction (see leases.py)."""
        self._write(statement, *args)

    def write_checked(self, statement: Prepared, *args: Any) -> None:
        """A write that must change a row, else the row moved on since it was read: on
        PostgreSQL checked at commit (see pg_deferred). SQLite's writer holds the file's
        lock from its first read, so what it read is still there."""
        if self._deferring:
            self._deferred.add(compare_and_set(statement.sql), statement.bind(args))
        else:
            statement.execute(*args)

    def written_row(self, key: Any) -> tuple[bool, Any]:
        """Whether this transaction wrote the row of key, and how, while its writes wait
        for its end (PostgreSQL); (False, None) when they are made at once."""
        return self._deferred.row(key) if self._deferring else (False, None)

    def written_rows(self) -> list[tuple[Any, Any]]:
        return self._deferred.rows() if self._deferring else []

    def wrote_row(self, key: Any, row: Any) -> None:
        if self._deferring:
            self._deferred.wrote_row(key, row)

    def _write_query(self, query: Any) -> None:
        if self._deferring:
            self._deferred.add(*query.sql())
        else:
            query.execute()

    def _in_transaction(self, c: Campaign) -> Campaign:
        """c, read by the writer. On PostgreSQL its version is what the row held when read,
        which a write of it must find still there; and it may carry provisional revisions of
        this transaction's own writes, which it is given the final ones of at commit."""
        if self._deferring:
            self._deferred.was_read((c.customer_id, c.id), c.version)
            self._read_in_transaction.append(c)
        return c
