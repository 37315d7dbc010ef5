"""Storage: the narrow set of operations the domain needs, on SQLite or PostgreSQL via Peewee.

Methods of Store are synchronous and run on the database threads (see database.py). Write
methods are only called inside the writer's transaction, so a domain operation composed of
several of them is atomic.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any, cast

import peewee as pw

from ..domain.errors import (
    Aborted,
    AlreadyExists,
    CampaignError,
    FailedPrecondition,
    PreconditionViolation,
)
from ..domain.json_text import compact_json
from ..domain.types import (
    ANONYMOUS,
    Action,
    Campaign,
    CampaignState,
    CampaignType,
    EndHandle,
    Event,
    ListFilter,
    NextCampaignResult,
    Origin,
    Reason,
    Status,
)
from .database import is_postgresql
from .pg_notify import CHANNEL
from .prepared import Prepared, Statements, param
from .schema import BODY_COLUMNS, FULL_HISTORY_FROM, Tables, bind_tables, migrate
from .versions import VersionCache


def _actions_to_json(actions: Iterable[Action]) -> str:
    return compact_json(
        [{"id": a.id, "next_id": a.next_id, "type": a.type, "option": a.option} for a in actions]
    )


def _actions_from_json(text: str) -> list[Action]:
    return [Action(a["id"], a["next_id"], a["type"], a["option"]) for a in json.loads(text)]


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


# The column order of every campaign read: _campaign() takes rows in this order.
_CAMPAIGN = (
    "customer_id",
    "id",
    "type",
    "name",
    "detail",
    "status",
    "service_level",
    "end_handle",
    "actions",
    "outplan_id",
    "outdial_id",
    "queue_id",
    "next_campaign_id",
    "tm_create",
    "tm_update",
    "tm_delete",
    "version",
    "revision",
    "stop_deadline",
    "finishing",
    "stop_revision",
    "body_revision",
    "last_reason",
    "seq",
)
# What save() writes: everything but the key, tm_create, seq and request_id.
_MUTABLE = _CAMPAIGN[2:13] + _CAMPAIGN[14:23]
# What a lifecycle change (status, deletion) writes: the rest of the campaign stays as it is.
_STATE = (
    "status",
    "stop_deadline",
    "finishing",
    "tm_update",
    "tm_delete",
    "version",
    "revision",
    "stop_revision",
    "last_reason",
)
_EVENT = (
    "revision",
    "customer_id",
    "campaign_id",
    "status",
    "previous_status",
    "deleted",
    "reason",
    "tm_event",
    "next_campaign_id",
    "chained_from",
    "detail",
    "version",
    "tm_update",
    "tm_delete",
    "stop_revision",
    "body_revision",
    "next_campaign_result",
    "unmet_run_conditions",
    "principal",
    "traceparent",
)
# What the status view of a snapshot reads of a campaign (see _state).
_STATE_VIEW = (
    "customer_id",
    "id",
    "status",
    "tm_delete",
    "revision",
    "stop_revision",
    "tm_create",
    "tm_update",
)


_TYPES = {int(t): t for t in CampaignType}
_STATUSES = {int(s): s for s in Status}
_END_HANDLES = {int(e): e for e in EndHandle}
_REASONS = {int(r): r for r in Reason}
_RESULTS = {int(r): r for r in NextCampaignResult}


def _campaign(row: tuple[Any, ...]) -> Campaign:
    return Campaign(
        customer_id=row[0],
        id=row[1],
        type=_TYPES[row[2]],
        name=row[3],
        detail=row[4],
        status=_STATUSES[row[5]],
        service_level=row[6],
        end_handle=_END_HANDLES[row[7]],
        actions=_actions_from_json(row[8]),
        outplan_id=row[9],
        outdial_id=row[10],
        queue_id=row[11],
        next_campaign_id=row[12],
        tm_create=row[13],
        tm_update=row[14],
        tm_delete=row[15],
        version=row[16],
        revision=row[17],
        stop_deadline=row[18],
        finishing=bool(row[19]),
        stop_revision=row[20],
        body_revision=row[21],
        last_reason=_REASONS[row[22]],
    )


def _mutable_values(c: Campaign) -> tuple[Any, ...]:
    return (
        int(c.type),
        c.name,
        c.detail,
        int(c.status),
        c.service_level,
        int(c.end_handle),
        _actions_to_json(c.actions),
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
    )


def _state(row: tuple[Any, ...]) -> CampaignState:
    """A row of _STATE_VIEW."""
    return CampaignState(
        customer_id=row[0],
        id=row[1],
        status=_STATUSES[row[2]],
        deleted=row[3] is not None,
        revision=row[4],
        stop_revision=row[5],
        tm_event=row[7] or row[6],
    )


def _event(row: tuple[Any, ...], campaign: Campaign | None = None) -> Event:
    return Event(
        revision=row[0],
        customer_id=row[1],
        campaign_id=row[2],
        status=_STATUSES[row[3]],
        previous_status=_STATUSES[row[4]],
        deleted=bool(row[5]),
        reason=_REASONS[row[6]],
        tm_event=row[7],
        next_campaign_id=row[8],
        chained_from=row[9],
        detail=row[10],
        version=row[11],
        tm_update=row[12],
        tm_delete=row[13],
        stop_revision=row[14],
        body_revision=row[15],
        next_campaign_result=_RESULTS[row[16]],
        unmet_run_conditions=tuple(row[17].split(",")) if row[17] else (),
        principal=row[18],
        traceparent=row[19],
        campaign=campaign,
    )


# After the event's columns, a full-view event row holds the campaign's tm_create, its
# body_revision and body, then the superseded body the event refers to, if any.
_FULL_EVENT_TAIL = 2 + len(BODY_COLUMNS)


def _full_event(row: tuple[Any, ...]) -> Event:
    """An event with the campaign as of its revision: the campaign's current body when the
    event was written with it, else the superseded one it refers to."""
    n = len(_EVENT)
    tm_create, current_body_revision = row[n], row[n + 1]
    current, superseded = row[n + 2 : n + _FULL_EVENT_TAIL], row[n + _FULL_EVENT_TAIL + 1 :]
    body_revision = row[15]
    if body_revision == current_body_revision:
        body = current
    elif row[n + _FULL_EVENT_TAIL] is not None:
        body = superseded
    else:
        raise AssertionError(f"event {row[0]} refers to a body the store no longer holds")
    campaign = Campaign(
        id=row[2],
        customer_id=row[1],
        type=_TYPES[body[0]],
        name=body[1],
        detail=body[2],
        status=_STATUSES[row[3]],
        service_level=body[3],
        end_handle=_END_HANDLES[body[4]],
        actions=_actions_from_json(body[5]),
        outplan_id=body[6],
        outdial_id=body[7],
        queue_id=body[8],
        next_campaign_id=body[9],
        tm_create=tm_create,
        tm_update=row[12],
        tm_delete=row[13],
        version=row[11],
        revision=row[0],
        stop_revision=row[14],
        body_revision=body_revision,
        last_reason=_REASONS[row[6]],
    )
    return _event(row, campaign)


class Store:
    """Reads (get, list_page, snapshot_page) may share the Campaign objects they return
    between callers: treat them as read-only. Writes start from load(), which always reads
    afresh."""

    def __init__(self, db: pw.Database, *, cache_size: int = 50_000) -> None:
        self.db = db
        self._versions: VersionCache[Campaign] = VersionCache(cache_size)
        # The events written by the writer's transaction in progress (see database.Journal).
        self._journal: list[Event] = []
        # The log's revision when that transaction began: its events take the next ones, and
        # the counter is written once, at its end (journal_begin, journal_end).
        self._revision_at_begin: int | None = None
        self.t: Tables = bind_tables(db)
        self._q = Statements(db)
        C, E, M = self.t.campaign, self.t.event, self.t.meta
        self._campaign_fields = [getattr(C, name) for name in _CAMPAIGN]
        self._event_fields = [getattr(E, name) for name in _EVENT]
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
        self._head = Prepared(db, M.select(M.value).where(M.key == "revision"))
        self._postgresql = is_postgresql(db)
        # On SQLite a statement refused by a unique index undoes only itself, so insert() may
        # be left to find a taken outdial: the transaction goes on, and the campaign holding
        # it can be looked up then. On PostgreSQL the refusal spoils the transaction.
        self.insert_refuses_taken_outdial = not self._postgresql
        self._lock_revision = (
            Prepared(db, M.select(M.value).where(M.key == "revision").for_update())
            if self._postgresql
            else self._head
        )
        self._set_revision = Prepared(db, M.update(value=param(0)).where(M.key == "revision"))
        self._insert_event = Prepared(
            db, E.insert({f: param(i) for i, f in enumerate(self._event_fields)})
        )
        self._compacted = Prepared(db, M.select(M.value).where(M.key == "compacted"))
        self._full_history_from = Prepared(db, M.select(M.value).where(M.key == FULL_HISTORY_FROM))
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
        B = self.t.body
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
        self._delete_bodies = Prepared(db, B.delete().where(B.superseded_at <= param(0)))
        self._oldest_events = Prepared(
            db,
            E.select(E.revision, E.tm_event)
            .where(E.revision > param(0))
            .order_by(E.revision)
            .limit(param(1)),
        )
        self._delete_events = Prepared(
            db, E.delete().where((E.revision > param(0)) & (E.revision <= param(1)))
        )
        self._set_compacted = Prepared(
            db,
            M.insert(key="compacted", value=param(0)).on_conflict(
                conflict_target=[M.key], update={M.value: param(0)}
            ),
        )
        inserted = [*self._campaign_fields[:-1], C.request_id]
        self._insert = Prepared(db, C.insert({f: param(i) for i, f in enumerate(inserted)}))
        self._save = Prepared(
            db,
            C.update({getattr(C, name): param(i) for i, name in enumerate(_MUTABLE)}).where(
                (C.customer_id == param(len(_MUTABLE))) & (C.id == param(len(_MUTABLE) + 1))
            ),
        )
        self._save_state = Prepared(
            db,
            C.update({getattr(C, name): param(i) for i, name in enumerate(_STATE)}).where(
                (C.customer_id == param(len(_STATE))) & (C.id == param(len(_STATE) + 1))
            ),
        )
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

    def migrate(self) -> int:
        return migrate(self.db, self.t)

    # -- reads (any thread) -----------------------------------------------------------

    def _shared(self, row: tuple[Any, ...]) -> Campaign:
        if self.db.in_transaction():
            # Read by the writer, the row may be one of its own writes, which can still roll
            # back: sharing it would serve that version to readers long after it vanished.
            return _campaign(row)
        return self._versions.get((row[0], row[1], row[16]), lambda: _campaign(row))

    def get(self, customer_id: str, campaign_id: str) -> Campaign | None:
        row = self._get.one(customer_id, campaign_id)
        return None if row is None else self._shared(row)

    def load(self, customer_id: str, campaign_id: str) -> Campaign | None:
        """A campaign of its own for the caller to change."""
        row = self._get.one(customer_id, campaign_id)
        return None if row is None else _campaign(row)

    def get_by_request(self, customer_id: str, request_id: str) -> Campaign | None:
        row = self._get_by_request.one(customer_id, request_id)
        return None if row is None else _campaign(row)

    def outdial_holder(self, customer_id: str, outdial_id: str, other_than: str) -> str | None:
        """The live campaign, other than other_than, that uses outdial_id."""
        if not outdial_id:
            return None
        row = self._outdial_holder.one(customer_id, outdial_id, other_than)
        return None if row is None else str(row[0])

    def _list_query(
        self, after: bool, status: bool, type_: bool, show_deleted: bool, keys_only: bool
    ) -> Any:
        C = self.t.campaign
        columns = (C.customer_id, C.id, C.version, C.seq) if keys_only else self._campaign_fields
        cond = C.customer_id == param(0)
        if after:
            cond &= C.seq < param(1)
        if status:
            cond &= C.status == param(2)
        if type_:
            cond &= C.type == param(3)
        if not show_deleted:
            cond &= C.tm_delete.is_null()
        return C.select(*columns).where(cond).order_by(C.seq.desc()).limit(param(4))

    def list_page(
        self, f: ListFilter, after_seq: int | None, limit: int
    ) -> tuple[list[Campaign], int | None]:
        """Up to limit campaigns newest first, and the seq to continue after (None at the end)."""
        shape = (after_seq is not None, bool(f.status), bool(f.type), f.show_deleted)
        args = (f.customer_id, after_seq, int(f.status), int(f.type), limit + 1)
        # Most pages are of campaigns read before: their keys and versions alone find them
        # in the cache, at a fraction of the cost of fetching every column.
        keys = self._q.get(("list-keys", shape), lambda: self._list_query(*shape, True)).all(*args)
        found = [self._versions.peek((k[0], k[1], k[2])) for k in keys[:limit]]
        if all(c is not None for c in found):
            campaigns = cast(list[Campaign], found)
            last = keys[limit - 1][3] if len(keys) > limit else None
            return campaigns, last
        full = self._q.get(("list", shape), lambda: self._list_query(*shape, False))
        rows = full.all(*args)
        more = len(rows) > limit
        rows = rows[:limit]
        return [self._shared(r) for r in rows], (rows[-1][-1] if more and rows else None)

    def head_revision(self) -> int:
        row = self._head.one()
        assert row is not None, "the schema is not migrated"
        return int(row[0])

    def snapshot_page(
        self, customer_id: str, after: int, upto: int, limit: int, *, full: bool
    ) -> list[Campaign] | list[CampaignState]:
        """Up to limit live campaigns (of customer_id, or of all with "") whose last change
        is in (after, upto], in revision order: a snapshot as of upto, read page by page.

        A campaign that changes meanwhile moves past upto and out of the pages not read yet;
        its change after upto reaches the watch through the hub instead. So each campaign is
        sent once, either way, and each page is one short statement rather than one
        transaction holding the database for the whole snapshot.
        """
        shape = ("snapshot", bool(customer_id), full)
        query = self._q.get(shape, lambda: self._snapshot_query(bool(customer_id), full))
        args = (after, upto, limit, customer_id) if customer_id else (after, upto, limit)
        rows = query.all(*args)
        if full:
            return [self._shared(r) for r in rows]
        return [_state(r) for r in rows]

    def _snapshot_query(self, customer: bool, full: bool) -> Any:
        C = self.t.campaign
        columns = self._campaign_fields if full else [getattr(C, n) for n in _STATE_VIEW]
        cond = C.tm_delete.is_null() & (C.revision > param(0)) & (C.revision <= param(1))
        if customer:
            cond &= C.customer_id == param(3)
        return C.select(*columns).where(cond).order_by(C.revision).limit(param(2))

    def snapshot_one(
        self, customer_id: str, campaign_id: str, *, full: bool
    ) -> tuple[Campaign | CampaignState | None, int]:
        """One campaign, deleted or not, and the log revision it is read at, consistently."""
        # PostgreSQL's default READ COMMITTED gives each statement its own snapshot; the
        # campaign must be read as of the revision, so the transaction gets one snapshot.
        isolation = {"isolation_level": "REPEATABLE READ"} if self._postgresql else {}
        with self.db.atomic(**isolation):
            revision = self.head_revision()
            c = self.get(customer_id, campaign_id)
        if c is None or full:
            return c, revision
        state = CampaignState(
            c.customer_id,
            c.id,
            c.status,
            c.deleted,
            c.revision,
            c.stop_revision,
            c.tm_update or c.tm_create,
        )
        return state, revision

    def events_after(
        self, revision: int, customer_id: str, campaign_id: str, limit: int, *, full: bool = False
    ) -> list[Event]:
        """Up to limit events after revision, in order; with full, each with the campaign as
        of its revision (for events after full_history_from)."""
        shape = (bool(customer_id), bool(campaign_id), full)
        query = self._q.get(("events", shape), lambda: self._events_query(*shape))
        rows = query.all(revision, customer_id, campaign_id, limit)
        if full:
            return [_full_event(r) for r in rows]
        return [_event(r) for r in rows]

    def _events_query(self, customer: bool, campaign: bool, full: bool) -> Any:
        E = self.t.event
        cond = E.revision > param(0)
        if customer:
            cond &= E.customer_id == param(1)
        if campaign:
            cond &= E.campaign_id == param(2)
        return self._event_select(full).where(cond).order_by(E.revision).limit(param(3))

    def _event_select(self, full: bool) -> Any:
        """Events' columns; with full, the campaign's body each was written with after them
        (see _full_event)."""
        E, C, B = self.t.event, self.t.campaign, self.t.body
        if not full:
            return E.select(*self._event_fields)
        body = [getattr(C, name) for name in BODY_COLUMNS]
        superseded = [getattr(B, name) for name in BODY_COLUMNS]
        return (
            E.select(
                *self._event_fields, C.tm_create, C.body_revision, *body, B.revision, *superseded
            )
            .join(C, on=(C.id == E.campaign_id))
            .join(
                B,
                pw.JOIN.LEFT_OUTER,
                on=(B.campaign_id == E.campaign_id) & (B.revision == E.body_revision),
            )
        )

    def events_before(
        self, before: int | None, customer_id: str, campaign_id: str, limit: int, *, full: bool
    ) -> list[Event]:
        """Up to limit events of the customer (or one campaign of it) before revision before
        (None: the newest), newest first."""
        shape = ("history", before is not None, bool(campaign_id), full)
        query = self._q.get(shape, lambda: self._history_query(*shape[1:]))
        rows = query.all(before, customer_id, campaign_id, limit)
        return [_full_event(r) if full else _event(r) for r in rows]

    def _history_query(self, bounded: bool, campaign: bool, full: bool) -> Any:
        E = self.t.event
        cond = E.customer_id == param(1)
        if bounded:
            cond &= E.revision < param(0)
        if campaign:
            cond &= E.campaign_id == param(2)
        return self._event_select(full).where(cond).order_by(E.revision.desc()).limit(param(3))

    def full_history_from(self) -> int:
        """Events after this revision record the campaign's state for the full view."""
        row = self._full_history_from.one()
        return 0 if row is None else int(row[0])

    def id_taken(self, campaign_id: str) -> bool:
        """Whether a campaign of any customer has this id."""
        return self._id_taken.one(campaign_id) is not None

    def referrers(self, customer_id: str, campaign_id: str, limit: int) -> list[str]:
        """Live campaigns, other than itself, that name campaign_id as their next campaign."""
        return [str(row[0]) for row in self._referrers.all(customer_id, campaign_id, limit)]

    def compacted_revision(self) -> int:
        """Every event up to this revision has been removed from the log (0: none)."""
        row = self._compacted.one()
        return 0 if row is None else int(row[0])

    def next_stop_deadline(self) -> int | None:
        row = self._next_deadline.one()
        return None if row is None or row[0] is None else int(row[0])

    def ping(self) -> None:
        self.db.execute_sql("SELECT 1").fetchone()

    # -- writes (writer thread, inside its transaction) --------------------------------

    def journal_begin(self) -> None:
        """First in every write transaction (see database.Journal).

        Takes the revision row. On PostgreSQL, writers of every replica queue on it for
        their whole transaction, so what a transaction reads after taking it is what the
        previous writer committed: a decision made on a read can never be overtaken by
        another replica, and revisions commit in order. SQLite's BEGIN IMMEDIATE already
        holds the file's one write lock. Either way no other writer can move the counter
        before this transaction ends, so its events count on from here in memory.
        """
        row = self._lock_revision.one()
        assert row is not None, "the schema is not migrated"
        self._revision_at_begin = int(row[0])

    def journal_end(self) -> None:
        """Last in a write transaction, after the writes that rolled back: stores the
        counter, and on PostgreSQL tells the other replicas. PostgreSQL delivers the NOTIFY
        when the transaction commits, and not at all when it rolls back; the payload, the
        last revision, is a hint (see pg_notify)."""
        if not self._journal:
            return
        last = self._journal[-1].revision
        self._set_revision.execute(last)
        if self._postgresql:
            self.db.execute_sql("SELECT pg_notify(%s, %s)", (CHANNEL, str(last)))

    def insert(self, c: Campaign, request_id: str) -> None:
        values = _mutable_values(c)
        try:
            self._insert.execute(
                c.customer_id, c.id, *values[:11], c.tm_create, *values[11:], request_id or None
            )
        except pw.IntegrityError as exc:
            raise _conflict(exc, c) from exc

    def save(self, c: Campaign) -> None:
        try:
            self._save.execute(*_mutable_values(c), c.customer_id, c.id)
        except pw.IntegrityError as exc:
            raise _conflict(exc, c) from exc

    def save_state(self, c: Campaign) -> None:
        """Writes the fields of _STATE only: all a status change or a deletion touches, and
        far cheaper than save() (no actions to encode)."""
        self._save_state.execute(
            int(c.status),
            c.stop_deadline,
            c.finishing,
            c.tm_update,
            c.tm_delete,
            c.version,
            c.revision,
            c.stop_revision,
            int(c.last_reason),
            c.customer_id,
            c.id,
        )

    def supersede_body(self, c: Campaign, superseded_at: int) -> None:
        """Keeps the stored body of c, about to be replaced at revision superseded_at, for
        the events written with it (see schema.CampaignBody). Copied inside the database:
        no actions to encode again."""
        self._supersede_body.execute(superseded_at, c.customer_id, c.id)

    def append_event(
        self,
        c: Campaign,
        previous_status: Status,
        reason: Reason,
        now: int,
        *,
        next_campaign_id: str = "",
        chained_from: str = "",
        detail: str = "",
        next_campaign_result: NextCampaignResult = NextCampaignResult.UNSPECIFIED,
        unmet_run_conditions: tuple[str, ...] = (),
        begins_stop: bool = False,
        new_body: bool = False,
        origin: Origin = ANONYMOUS,
    ) -> Event:
        """Takes the next revision and logs the campaign's new state; sets c.revision and
        c.last_reason, and with begins_stop c.stop_revision, with new_body c.body_revision,
        to this revision (a stop or a body is known by the revision of the change that made
        it)."""
        assert self._revision_at_begin is not None, "events are written after journal_begin"
        revision = self._revision_at_begin + len(self._journal) + 1
        c.revision = revision
        c.last_reason = reason
        if begins_stop:
            c.stop_revision = revision
        if new_body:
            c.body_revision = revision
        event = Event(
            revision=revision,
            customer_id=c.customer_id,
            campaign_id=c.id,
            status=c.status,
            previous_status=previous_status,
            deleted=c.deleted,
            reason=reason,
            tm_event=now,
            next_campaign_id=next_campaign_id,
            chained_from=chained_from,
            detail=detail,
            version=c.version,
            tm_update=c.tm_update,
            tm_delete=c.tm_delete,
            stop_revision=c.stop_revision,
            body_revision=c.body_revision,
            next_campaign_result=next_campaign_result,
            unmet_run_conditions=unmet_run_conditions,
            principal=origin.principal,
            traceparent=origin.traceparent,
            campaign=c,
        )
        self._insert_event.execute(
            revision,
            event.customer_id,
            event.campaign_id,
            int(event.status),
            int(event.previous_status),
            event.deleted,
            int(reason),
            now,
            next_campaign_id,
            chained_from,
            detail,
            event.version,
            event.tm_update,
            event.tm_delete,
            event.stop_revision,
            event.body_revision,
            int(next_campaign_result),
            ",".join(unmet_run_conditions),
            origin.principal,
            origin.traceparent,
        )
        self._journal.append(event)
        return event

    def compact(self, older_than: int, batch: int) -> int:
        """Removes up to batch of the oldest events logged before older_than; returns how many.

        Only ever a prefix of the log goes, and the compacted revision moves with it in the
        same transaction, so "after revision R" is either complete or known to be incomplete.
        """
        compacted = self.compacted_revision()
        rows = self._oldest_events.all(compacted, batch)
        last = compacted
        for revision, tm_event in rows:
            if tm_event >= older_than:
                break
            last = revision
        if last == compacted:
            return 0
        removed = self._delete_events.execute(compacted, last).rowcount
        # The bodies superseded at or before it: every event written with them is gone too.
        self._delete_bodies.execute(last)
        self._set_compacted.execute(last)
        return int(removed)

    # -- the journal of the transaction in progress (writer thread) ------------------

    def journal_mark(self) -> int:
        return len(self._journal)

    def journal_rollback(self, mark: int) -> None:
        del self._journal[mark:]

    def journal_take(self) -> list[Event]:
        events, self._journal = self._journal, []
        self._revision_at_begin = None
        return events

    def due_stops(self, now: int, limit: int) -> list[Campaign]:
        return [_campaign(r) for r in self._due.all(now, limit)]
