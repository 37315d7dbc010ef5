"""The campaign table: one campaign read or written by its key, and the few lookups the
domain's rules make (a request id, an outdial's holder, referrers, stops that are due)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import peewee as pw

from ..domain.errors import (
    Aborted,
    AlreadyExists,
    CampaignError,
    FailedPrecondition,
    PreconditionViolation,
)
from ..domain.types import Campaign, Status
from .pages import WireForm
from .pg_deferred import compare_and_set
from .prepared import Prepared, param
from .rows import (
    MUTABLE_COLUMNS,
    STATE_COLUMNS,
    CampaignRow,
    actions_to_json,
    decoded_size,
    row_key,
    to_campaign,
)
from .schema import BODY_COLUMNS
from .transaction import Transaction


def _conflict(exc: pw.IntegrityError, c: Campaign) -> CampaignError:
    """A unique index refused a write that raced one from another process.

    SQLite names the columns ("UNIQUE constraint failed: campaign.customer_id,
    campaign.outdial_id"), PostgreSQL the index ("campaign_live_outdial",
    "campaign_customer_id_request_id"): each holds the word looked for.
    """
    text = str(exc)
    if "outdial" in text:
        return FailedPrecondition(
            f"outdial {c.outdial_id} belongs to another live campaign",
            [PreconditionViolation("OUTDIAL_IN_USE", "outdial_id", "taken by a concurrent write")],
            reason="OUTDIAL_IN_USE",
        )
    if "request_id" in text:
        return Aborted(
            "a concurrent request with this request_id is in progress; retry",
            reason="CONCURRENT_REQUEST",
        )
    return AlreadyExists(f"campaign {c.id} already exists", metadata={"id": c.id})


def _mutable_values(c: Campaign, wire: WireForm | None) -> tuple[Any, ...]:
    """The values of MUTABLE_COLUMNS, in their order."""
    return (
        int(c.type),
        c.name,
        c.detail,
        int(c.status),
        c.service_level,
        int(c.end_handle),
        actions_to_json(c.actions),
        c.outplan_id,
        c.outdial_id,
        c.queue_id,
        c.next_campaign_id,
        c.tm_update,
        c.tm_delete,
        c.version,
        c.revision,
        c.stop_deadline,
        c.finishing,
        c.stop_revision,
        c.body_revision,
        int(c.last_reason),
        None if wire is None else wire.actions(c.actions),
        None if wire is None else c.body_revision,
    )


def _update(C: Any, columns: Sequence[str], *, checked: bool) -> Any:
    """An update of columns of a campaign, by its key; checked, only from the version read."""
    n = len(columns)
    where = (C.customer_id == param(n)) & (C.id == param(n + 1))
    if checked:
        where &= C.version == param(n + 2)
    return C.update({getattr(C, name): param(i) for i, name in enumerate(columns)}).where(where)


class CampaignTable(Transaction):
    """Reads (get) may share the Campaign objects they return between callers: treat them
    as read-only. Writes start from load(), which always reads afresh."""

    def _prepare_campaign_table(self) -> None:
        db, C, B = self.db, self.t.campaign, self.t.body
        by_key = (C.customer_id == param(0)) & (C.id == param(1))
        self._get = Prepared(db, C.select(*self._campaign_fields).where(by_key))
        self._get_by_request = Prepared(
            db,
            C.select(*self._campaign_fields).where(
                (C.customer_id == param(0)) & (C.request_id == param(1))
            ),
        )
        self._outdial_holder = Prepared(
            db,
            C.select(C.id)
            .where(
                (C.customer_id == param(0))
                & (C.outdial_id == param(1))
                # The partial index's own condition, as SQL text: SQLite uses a partial index only
                # when the query repeats its condition literally, not as a bound parameter.
                & (C.outdial_id != pw.SQL("''"))
                & (C.tm_delete.is_null())
                & (C.id != param(2))
            )
            .limit(1),
        )
        # On SQLite a statement refused by a unique index undoes only itself, so insert() may
        # be left to find a taken outdial: the transaction goes on, and the campaign holding
        # it can be looked up then. On PostgreSQL the refusal spoils the transaction.
        self.insert_refuses_taken_outdial = not self._postgresql
        self._id_taken = Prepared(db, C.select(C.seq).where(C.id == param(0)).limit(1))
        self._referrers = Prepared(
            db,
            C.select(C.id)
            .where(
                (C.customer_id == param(0))
                & (C.next_campaign_id == param(1))
                # As SQL text, like the partial index it must match (see outdial_holder).
                & (C.next_campaign_id != pw.SQL("''"))
                & (C.tm_delete.is_null())
                & (C.id != param(1))
            )
            .order_by(C.seq)
            .limit(param(2)),
        )
        body_fields = [getattr(B, name) for name in BODY_COLUMNS]
        self._supersede_body = Prepared(
            db,
            B.insert_from(
                C.select(
                    C.customer_id,
                    C.id,
                    C.body_revision,
                    param(0),
                    *[getattr(C, name) for name in BODY_COLUMNS],
                ).where((C.customer_id == param(1)) & (C.id == param(2))),
                [B.customer_id, B.campaign_id, B.revision, B.superseded_at, *body_fields],
            ),
        )
        inserted = [*self._campaign_fields[:-1], C.actions_wire, C.actions_wire_body, C.request_id]
        self._insert = Prepared(db, C.insert({f: param(i) for i, f in enumerate(inserted)}))
        self._save = Prepared(db, _update(C, MUTABLE_COLUMNS, checked=False))
        self._save_state = Prepared(db, _update(C, STATE_COLUMNS, checked=False))
        # On PostgreSQL the same, made at commit only where the row still holds the version
        # the transaction read (see pg_deferred).
        self._save_if = Prepared(db, _update(C, MUTABLE_COLUMNS, checked=True))
        self._save_state_if = Prepared(db, _update(C, STATE_COLUMNS, checked=True))
        # As SQL text, like the partial index it must match (see outdial_holder).
        stopping = C.status == pw.SQL(str(int(Status.STOPPING)))
        self._next_deadline = Prepared(db, C.select(pw.fn.MIN(C.stop_deadline)).where(stopping))
        self._due = Prepared(
            db,
            C.select(*self._campaign_fields)
            .where(stopping & (C.stop_deadline <= param(0)))
            .order_by(C.stop_deadline)
            .limit(param(1)),
        )

    # -- reads (any thread) -----------------------------------------------------------

    def _shared(self, row: CampaignRow) -> Campaign:
        if self.db.in_transaction():
            # Read by the writer, the row may be one of its own writes, which can still roll
            # back: sharing it would serve that version to readers long after it vanished.
            return self._in_transaction(to_campaign(row))
        return self.cache.get(row_key(row), lambda: (to_campaign(row), decoded_size(row)))

    def get(self, customer_id: str, campaign_id: str) -> Campaign | None:
        if self._deferring:
            return self.load(customer_id, campaign_id)
        row = self._get.one(customer_id, campaign_id)
        return None if row is None else self._shared(CampaignRow._make(row))

    def load(self, customer_id: str, campaign_id: str) -> Campaign | None:
        """A campaign of its own for the caller to change (writer thread). On PostgreSQL,
        as this transaction wrote it, if it did (its writes are made at commit)."""
        if self._deferring:
            written = self._deferred.read((customer_id, campaign_id))
            if written is not None:
                return self._in_transaction(written)
        row = self._get.one(customer_id, campaign_id)
        return None if row is None else self._in_transaction(to_campaign(CampaignRow._make(row)))

    def get_by_request(self, customer_id: str, request_id: str) -> Campaign | None:
        if self._deferring:
            written = self._deferred.by_request(customer_id, request_id)
            if written is not None:
                return self._in_transaction(written)
        row = self._get_by_request.one(customer_id, request_id)
        return None if row is None else self._in_transaction(to_campaign(CampaignRow._make(row)))

    def outdial_holder(self, customer_id: str, outdial_id: str, other_than: str) -> str | None:
        """The live campaign, other than other_than, that uses outdial_id."""
        if not outdial_id:
            return None
        if self._deferring:
            holder = self._deferred.outdial_holder(customer_id, outdial_id, other_than)
            if holder is not None:
                return holder
        row = self._outdial_holder.one(customer_id, outdial_id, other_than)
        return None if row is None else str(row[0])

    def id_taken(self, campaign_id: str) -> bool:
        """Whether a campaign of any customer has this id."""
        if self._deferring and self._deferred.holds_id(campaign_id):
            return True
        return self._id_taken.one(campaign_id) is not None

    def referrers(self, customer_id: str, campaign_id: str, limit: int) -> list[str]:
        """Live campaigns, other than itself, that name campaign_id as their next campaign."""
        return [str(row[0]) for row in self._referrers.all(customer_id, campaign_id, limit)]

    def next_stop_deadline(self) -> int | None:
        row = self._next_deadline.one()
        return None if row is None or row[0] is None else int(row[0])

    def due_stops(self, now: int, limit: int) -> list[Campaign]:
        return [to_campaign(CampaignRow._make(r)) for r in self._due.all(now, limit)]

    # -- writes (writer thread, inside its transaction) --------------------------------

    def _update_campaign(
        self, c: Campaign, plain: Prepared, checked: Prepared, values: Sequence[Any]
    ) -> None:
        """Updates c's row: on PostgreSQL at commit, and only from the version read."""
        if not self._deferring:
            plain.execute(*values, c.customer_id, c.id)
            return
        key = (c.customer_id, c.id)
        read = self._deferred.stored_version(key)
        if read is None:
            self._deferred.add(plain.sql, plain.bind((*values, c.customer_id, c.id)))
        else:
            self._deferred.add(
                compare_and_set(checked.sql), checked.bind((*values, c.customer_id, c.id, read))
            )
        self._deferred.wrote(c)

    def insert(self, c: Campaign, request_id: str) -> None:
        values = _mutable_values(c, self._wire)
        row = (c.customer_id, c.id, *values[:11], c.tm_create, *values[11:], request_id or None)
        if self._deferring:
            # A unique index that refuses it at commit (another replica took the id, the
            # outdial or the request id meanwhile) fails the message: the batch runs again
            # on fresh reads, which then find the holder.
            self._write(self._insert, *row)
            self._deferred.wrote(c, request_id)
            return
        try:
            self._insert.execute(*row)
        except pw.IntegrityError as exc:
            raise _conflict(exc, c) from exc

    def save(self, c: Campaign) -> None:
        try:
            self._update_campaign(c, self._save, self._save_if, _mutable_values(c, self._wire))
        except pw.IntegrityError as exc:
            raise _conflict(exc, c) from exc

    def save_state(self, c: Campaign) -> None:
        """Writes the fields of STATE_COLUMNS only: all a status change or a deletion
        touches, and far cheaper than save() (no actions to encode)."""
        values = (
            int(c.status),
            c.stop_deadline,
            c.finishing,
            c.tm_update,
            c.tm_delete,
            c.version,
            c.revision,
            c.stop_revision,
            int(c.last_reason),
        )
        self._update_campaign(c, self._save_state, self._save_state_if, values)

    def supersede_body(self, c: Campaign, superseded_at: int) -> None:
        """Keeps the stored body of c, about to be replaced at revision superseded_at, for
        the events written with it (see schema.CampaignBody). Copied inside the database:
        no actions to encode again."""
        self._write(self._supersede_body, superseded_at, c.customer_id, c.id)
