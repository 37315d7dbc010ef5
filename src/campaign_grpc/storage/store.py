"""Storage: the narrow set of operations the domain needs, on SQLite or PostgreSQL via Peewee.

Methods of Store are synchronous and run on the database threads (see database.py). Write
methods are only called inside the writer's transaction, so a domain operation composed of
several of them is atomic.
"""

from __future__ import annotations

import contextlib
import json
import secrets
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, Protocol

import peewee as pw
import psycopg

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
    EncodedCampaign,
    EndHandle,
    Event,
    ListFilter,
    NextCampaignResult,
    Origin,
    Reason,
    Status,
)
from . import pg_revisions
from .connect import is_postgresql
from .identity import Fingerprint, LogIdentity, LogState, database_changed, new_epoch
from .pg_deferred import DeferredWrites, compare_and_set
from .pg_notify import CHANNEL
from .prepared import Prepared, Statements, as_peewee_errors, param
from .schema import (
    BODY_COLUMNS,
    FULL_HISTORY_FROM,
    Tables,
    bind_tables,
    migrate,
    require_current,
)
from .versions import Key, VersionCache

# What a decoded campaign costs in memory, estimated from its actions' JSON text: a few times
# the text (as tracemalloc shows, more for options that are lists of small numbers than for
# options of a few strings, the README's sizing), plus the rest of the campaign.
_DECODED_BASE = 512
_DECODED_PER_JSON_BYTE = 4
# The part of the memory budget of the caches that decoded campaigns get; the rest holds
# their encoded messages (see api.convert.CampaignWire).
DECODED_SHARE = 1 / 3


class WireForm(Protocol):
    """How campaigns travel, as far as the store needs to know: the sizes and the cached
    messages that weigh and make up list pages, and the encoding of actions that it keeps
    beside their JSON text, so that a page of campaigns read from the database is made of
    stored bytes rather than of rows decoded and encoded again (for a campaign of 1,000
    actions, far more of the interpreter's time than its bytes take)."""

    def size(self, c: Campaign) -> int: ...

    def cached(self, key: Key) -> bytes | None: ...

    def keep(self, key: Key, data: bytes) -> None: ...

    def actions(self, actions: Sequence[Action]) -> bytes: ...

    def message(self, c: Campaign, actions: bytes) -> bytes:
        """The message of c, read without its actions, with actions as actions() made them."""
        ...


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
_MUTABLE = (*_CAMPAIGN[2:13], *_CAMPAIGN[14:23], "actions_wire", "actions_wire_body")
_ACTIONS = _CAMPAIGN.index("actions")
# Where a list page's rows (see _list_query) have the seq and the actions' encoding.
_LISTED_SEQ = len(_CAMPAIGN) - 1
_LISTED_WIRE = len(_CAMPAIGN)
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
    "lease_holder",
    "fencing_token",
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


def _campaign(row: tuple[Any, ...], actions: list[Action] | None = None) -> Campaign:
    return Campaign(
        customer_id=row[0],
        id=row[1],
        type=_TYPES[row[2]],
        name=row[3],
        detail=row[4],
        status=_STATUSES[row[5]],
        service_level=row[6],
        end_handle=_END_HANDLES[row[7]],
        actions=_actions_from_json(row[8]) if actions is None else actions,
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


def _row_key(row: tuple[Any, ...]) -> Key:
    """A campaign row's cache key: its customer, id, version and the time of that version."""
    return (row[0], row[1], row[16], row[13] if row[14] is None else row[14])


def _decoded_size(row: tuple[Any, ...]) -> int:
    return _DECODED_BASE + _DECODED_PER_JSON_BYTE * len(row[8])


# The largest message a list page keeps in the wire's cache of those it makes of stored
# bytes. Keeping spares a page of small campaigns its rows (much of the server's CPU for
# ListCampaigns of small ones); large ones cost little more to make again than to fetch, and
# walks of hundreds of large ones, through a cache that holds a fraction of them, only churned
# it (another customer's GetCampaign p99 and the peak RSS under them rose; see bench/big.py).
_KEPT_MESSAGE_BYTES = 16 * 1024
# Set in meta once every row that an older release wrote has its actions' encoding.
ACTIONS_ENCODED = "actions_encoded"
# A campaign's message beyond its actions, for estimates: ids, times, etag, the small fields.
_ENCODED_BASE = 400
# A page's campaigns travel as field 1 of ListCampaignsResponse, each behind a tag byte and a
# length of up to four; the next_page_token takes the reserve.
_ENTRY_OVERHEAD = 5
_PAGE_RESERVE = 64
# An event's message beyond its texts and its campaign: ids, statuses, times, revisions.
_EVENT_BASE = 200
# Full-view events read at once for a page of them (see events_page).
_FULL_EVENTS_BATCH = 8


def _estimated_size(c: Campaign) -> int:
    """What c's message weighs, about: its actions as JSON, its texts and the rest."""
    return _ENCODED_BASE + len(_actions_to_json(c.actions)) + len(c.name) + len(c.detail)


class _Page:
    """The campaigns of a list page, added while they fit its budget in bytes."""

    def __init__(self, budget: int, encoded_size: Callable[[Campaign], int]) -> None:
        self._budget = budget
        self._encoded_size = encoded_size
        self.campaigns: list[Campaign | EncodedCampaign] = []
        self.last_seq: int | None = None
        self.bytes = _PAGE_RESERVE

    def add(self, c: Campaign | EncodedCampaign, seq: int) -> bool:
        """Adds c unless it would take the page past its budget; the first always goes in."""
        weight = len(c.data) if isinstance(c, EncodedCampaign) else self._encoded_size(c)
        size = weight + _ENTRY_OVERHEAD
        if self.campaigns and self.bytes + size > self._budget:
            return False
        self.campaigns.append(c)
        self.bytes += size
        self.last_seq = seq
        return True


def _mutable_values(c: Campaign, wire: WireForm | None) -> tuple[Any, ...]:
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
        None if wire is None else wire.actions(c.actions),
        None if wire is None else c.body_revision,
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
        lease_holder=row[20],
        fencing_token=row[21],
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
    # As a campaign row reads (_CAMPAIGN), with the state the event recorded.
    as_of = (
        row[1],  # customer_id
        row[2],  # id
        *body[:3],  # type, name, detail
        row[3],  # status
        *body[3:],  # service_level ... next_campaign_id
        tm_create,
        row[12],  # tm_update
        row[13],  # tm_delete
        row[11],  # version
        row[0],  # revision
        None,  # stop_deadline
        False,  # finishing
        row[14],  # stop_revision
        body_revision,
        row[6],  # last_reason
    )
    return _event(row, _campaign(as_of))


class Store:
    """Reads (get, list_page, snapshot_page) may share the Campaign objects they return
    between callers: treat them as read-only. Writes start from load(), which always reads
    afresh."""

    # The reads that may take many rows and much CPU (those whose names start so): the
    # database threads run them apart from the quick ones (see database.Readers).
    BULK_READS = ("list_page", "snapshot")

    def __init__(
        self,
        db: pw.Database,
        *,
        cache_bytes: int = 16 * 1024 * 1024,
        page_bytes: int = 1024 * 1024,
        wire: WireForm | None = None,
    ) -> None:
        """cache_bytes bounds the decoded campaigns kept for reads; page_bytes the campaigns
        of a list page, each weighed by the size of its message. With wire, the campaigns
        written keep their actions encoded too, and list pages are made of messages: those
        wire has cached, or those made of the rows' stored bytes; without it (a store that
        only migrates, some tests) the rows are decoded and sizes estimated."""
        self.db = db
        self.page_bytes = page_bytes
        self._wire = wire
        self._encoded_size = _estimated_size if wire is None else wire.size
        self.cache: VersionCache[Campaign] = VersionCache(cache_bytes)
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
        self._meta = Prepared(
            db, M.select(M.key, M.value).where(M.key.in_(["revision", "epoch", "compacted"]))
        )
        self._postgresql = is_postgresql(db)
        self.identity = LogIdentity()
        # On SQLite a statement refused by a unique index undoes only itself, so insert() may
        # be left to find a taken outdial: the transaction goes on, and the campaign holding
        # it can be looked up then. On PostgreSQL the refusal spoils the transaction.
        self.insert_refuses_taken_outdial = not self._postgresql
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
        self._lock_revision = Prepared(db, head_and_epoch)
        # The transaction in progress, on PostgreSQL: its provisional revisions; and whether
        # the message that commits it went out without an answer.
        self._pending: pg_revisions.Pending | None = None
        self._commit_sent = False
        self._read_in_transaction: list[Campaign] = []
        # On PostgreSQL a write transaction's writes wait here for its last message.
        self._deferred = DeferredWrites()
        self._deferring = False
        self._marks: list[tuple[int, int]] = []
        self._set_revision = Prepared(db, M.update(value=param(0)).where(M.key == "revision"))
        self._insert_event = Prepared(
            db, E.insert({f: param(i) for i, f in enumerate(self._event_fields)})
        )
        self._compacted = Prepared(db, M.select(M.value).where(M.key == "compacted"))
        E = self.t.event
        self._fingerprint = Prepared(
            db, E.select(E.revision, E.campaign_id, E.tm_event).where(E.revision == param(0))
        )
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
        # A row of this server's own: replicas that probed one row waited for each other's
        # probes, and one replica on a slow path made the others' probes time out.
        self._probe_key = f"write_probe:{secrets.token_hex(6)}"
        self._set_write_probe = Prepared(
            db,
            M.insert(key=self._probe_key, value=param(0)).on_conflict(
                conflict_target=[M.key], update={M.value: param(0)}
            ),
        )
        self._forget_probes = Prepared(
            db,
            M.delete().where(
                M.key.startswith("write_probe") & (M.key != self._probe_key) & (M.value < param(0))
            ),
        )
        self._take_compaction = Prepared(
            db,
            M.select(M.value).where(M.key == "compacted").for_update(skip_locked=True)
            if self._postgresql
            else M.select(M.value).where(M.key == "compacted"),
        )
        inserted = [*self._campaign_fields[:-1], C.actions_wire, C.actions_wire_body, C.request_id]
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
        # On PostgreSQL the same, made at commit only where the row still holds the version
        # the transaction read (see pg_deferred).
        self._save_if = Prepared(
            db,
            C.update({getattr(C, name): param(i) for i, name in enumerate(_MUTABLE)}).where(
                (C.customer_id == param(len(_MUTABLE)))
                & (C.id == param(len(_MUTABLE) + 1))
                & (C.version == param(len(_MUTABLE) + 2))
            ),
        )
        self._save_state_if = Prepared(
            db,
            C.update({getattr(C, name): param(i) for i, name in enumerate(_STATE)}).where(
                (C.customer_id == param(len(_STATE)))
                & (C.id == param(len(_STATE) + 1))
                & (C.version == param(len(_STATE) + 2))
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
        """Brings the schema up to date, and gives a database its epoch if it has none: at
        its creation, or on the first start of this release on an older one (see
        identity.py). Two servers migrating at once keep whichever epoch came first."""
        with self._without_timeouts():
            version = migrate(self.db, self.t)
            with self.db.atomic():
                M = self.t.meta
                M.insert(key="epoch", value=new_epoch()).on_conflict_ignore().execute()
        return version

    def require_current_schema(self) -> int:
        """What a server that does not migrate checks instead: the schema is this release's."""
        return require_current(self.db, self.t)

    @contextlib.contextmanager
    def _without_timeouts(self) -> Iterator[None]:
        """A migration may wait for another replica's, and an upgrade of a large table may
        take long: the session's lock and statement timeouts do not apply to it."""
        if not self._postgresql:
            yield
            return
        self.db.execute_sql("SET lock_timeout = 0; SET statement_timeout = 0")
        try:
            yield
        finally:
            # Back to the session's own values: the connection goes back to the pool.
            self.db.execute_sql("RESET lock_timeout; RESET statement_timeout")

    # -- reads (any thread) -----------------------------------------------------------

    def _shared(self, row: tuple[Any, ...]) -> Campaign:
        if self.db.in_transaction():
            # Read by the writer, the row may be one of its own writes, which can still roll
            # back: sharing it would serve that version to readers long after it vanished.
            return self._in_transaction(_campaign(row))
        return self.cache.get(_row_key(row), lambda: (_campaign(row), _decoded_size(row)))

    def get(self, customer_id: str, campaign_id: str) -> Campaign | None:
        if self._deferring:
            return self.load(customer_id, campaign_id)
        row = self._get.one(customer_id, campaign_id)
        return None if row is None else self._shared(row)

    def load(self, customer_id: str, campaign_id: str) -> Campaign | None:
        """A campaign of its own for the caller to change (writer thread). On PostgreSQL,
        as this transaction wrote it, if it did (its writes are made at commit)."""
        if self._deferring:
            written = self._deferred.read((customer_id, campaign_id))
            if written is not None:
                return self._in_transaction(written)
        row = self._get.one(customer_id, campaign_id)
        return None if row is None else self._in_transaction(_campaign(row))

    def get_by_request(self, customer_id: str, request_id: str) -> Campaign | None:
        if self._deferring:
            written = self._deferred.by_request(customer_id, request_id)
            if written is not None:
                return self._in_transaction(written)
        row = self._get_by_request.one(customer_id, request_id)
        return None if row is None else self._in_transaction(_campaign(row))

    def _in_transaction(self, c: Campaign) -> Campaign:
        """c, read by the writer. On PostgreSQL its version is what the row held when read,
        which a write of it must find still there; and it may carry provisional revisions of
        this transaction's own writes, which it is given the final ones of at commit."""
        if self._deferring:
            self._deferred.was_read((c.customer_id, c.id), c.version)
            self._read_in_transaction.append(c)
        return c

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

    def _list_query(
        self, after: bool, status: bool, type_: bool, show_deleted: bool, keys_only: bool
    ) -> Any:
        C = self.t.campaign
        # The actions' encoding where it was made for the row's actions, and their JSON text
        # only where it was not (rows of an older release, or of a store without wire): the
        # other rows' pages never read the text.
        # A store without wire cannot use the encoding: it reads the text of every row.
        encoded: Any = C.actions_wire_body == C.body_revision if self._wire else pw.SQL("1 = 0")
        wire = pw.Case(None, [(encoded, C.actions_wire)], None)
        json_unless_encoded = pw.Case(None, [(encoded, "")], C.actions)
        columns: tuple[Any, ...] = (
            *self._campaign_fields[:_ACTIONS],
            json_unless_encoded,
            *self._campaign_fields[_ACTIONS + 1 :],
            wire,
        )
        if keys_only:
            columns = (C.customer_id, C.id, C.version, C.tm_create, C.tm_update, C.seq)
            if self._postgresql:
                # The stored size of the actions, read from the value's header without
                # fetching it: what a page of them will weigh (SQLite's length() would read
                # every byte, as dear as the rows themselves; there the rows are read one by
                # one instead, see _page_rows).
                columns += (
                    pw.fn.COALESCE(pw.fn.OCTET_LENGTH(wire), pw.fn.OCTET_LENGTH(C.actions)),
                )
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
    ) -> tuple[list[Campaign | EncodedCampaign], int | None]:
        """Up to limit campaigns newest first, no more than page_bytes of them encoded (but
        at least one, so that a walk always moves on), and the seq to continue after (None
        at the end). A campaign comes decoded, or as its message where only that is cached."""
        shape = (after_seq is not None, bool(f.status), bool(f.type), f.show_deleted)
        args = (f.customer_id, after_seq, int(f.status), int(f.type), limit + 1)
        # Most pages are of campaigns read before: their keys and versions alone find them
        # in the cache, at a fraction of the cost of fetching every column.
        keys = self._q.get(("list-keys", shape), lambda: self._list_query(*shape, True)).all(*args)
        more = len(keys) > limit
        keys = keys[:limit]
        page = _Page(self.page_bytes, self._encoded_size)
        for k in keys:
            found = self._listed((k[0], k[1], k[2], k[3] if k[4] is None else k[4]))
            if found is None:
                break
            if not page.add(found, k[5]):
                return page.campaigns, page.last_seq
        else:
            return page.campaigns, page.last_seq if more else None
        # From the first campaign not in the cache on, the rows themselves.
        rest = keys[len(page.campaigns) :]
        wanted = self._rows_worth(rest, self.page_bytes - page.bytes)
        after = page.last_seq if page.campaigns else after_seq
        full = self._q.get(
            ("list", (after is not None, *shape[1:])),
            lambda: self._list_query(after is not None, *shape[1:], False),
        )
        for row in full.rows(f.customer_id, after, int(f.status), int(f.type), wanted):
            if not page.add(self._listed_row(row), row[_LISTED_SEQ]):
                return page.campaigns, page.last_seq
        more = more or wanted < len(rest)
        return page.campaigns, page.last_seq if more else None

    def _listed(self, key: Key) -> Campaign | EncodedCampaign | None:
        """A campaign of a page as the caches hold it: its message, which is what the page
        is sent as, or else decoded."""
        found = self._encoded_campaign(key)
        return self.cache.peek(key) if found is None else found

    def _encoded_campaign(self, key: Key) -> EncodedCampaign | None:
        data = None if self._wire is None else self._wire.cached(key)
        return None if data is None else EncodedCampaign(key[0], key[1], data)

    def _listed_row(self, row: tuple[Any, ...]) -> Campaign | EncodedCampaign:
        """A row of a list page as the page sends it: the cached message, or one made of the
        row's fields and its stored actions, or else the row decoded."""
        key = _row_key(row)
        found = self._encoded_campaign(key)
        if found is not None:
            return found
        actions = row[_LISTED_WIRE]
        if actions is None or self._wire is None:
            # Encoded for other actions, or not at all: the row's JSON text was read instead.
            return self._shared(row)
        data = self._wire.message(_campaign(row, actions=[]), bytes(actions))
        if len(data) <= _KEPT_MESSAGE_BYTES and not self.db.in_transaction():
            # Committed: the next page that lists this version takes it from the cache, by
            # its key alone, without fetching the row (see list_page).
            self._wire.keep(key, data)
        return EncodedCampaign(key[0], key[1], data)

    def _rows_worth(self, keys: list[tuple[Any, ...]], budget: int) -> int:
        """How many of these rows to fetch for a page with budget bytes left. On PostgreSQL,
        which sends a query's every row at once, as many as their stored sizes say fit, and
        one more (the sizes are of the JSON text, a little off the encoded size either way);
        on SQLite all of them, read one at a time until the page is full."""
        if not self._postgresql:
            return len(keys)
        total = 0
        for n, k in enumerate(keys, 1):
            total += _ENCODED_BASE + int(k[6] or 0)
            if total > budget:
                return n
        return len(keys)

    def head_revision(self) -> int:
        row = self._head.one()
        assert row is not None, "the schema is not migrated"
        return int(row[0])

    def log_state(self, revision: int) -> LogState:
        """The log's epoch, head and compaction point, with the events at revision and at
        the head (see identity.py)."""
        meta = dict(self._meta.all())
        head = int(meta.get("revision", 0))
        epoch = meta.get("epoch")
        at = self._fingerprint_at(revision)
        last = at if head == revision else self._fingerprint_at(head)
        return LogState(
            epoch=None if epoch is None else int(epoch),
            head=head,
            compacted=int(meta.get("compacted", 0)),
            at=at,
            last=last,
        )

    def _fingerprint_at(self, revision: int) -> Fingerprint | None:
        row = self._fingerprint.one(revision) if revision else None
        return None if row is None else (int(row[0]), str(row[1]), int(row[2]))

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

    def events_page(
        self, before: int | None, customer_id: str, campaign_id: str, limit: int, *, full: bool
    ) -> tuple[list[Event], bool]:
        """As events_before, but no more than page_bytes of them as they are sent (at least
        one, so that a walk always moves on), and whether more are left. A full-view event
        carries its whole campaign, up to about 1 MB: they are read a few at a time, so that
        a page stops reading once it is full."""
        page: list[Event] = []
        size = _PAGE_RESERVE
        batch = _FULL_EVENTS_BATCH if full else limit + 1
        while True:
            wanted = min(batch, limit + 1 - len(page))
            events = self.events_before(before, customer_id, campaign_id, wanted, full=full)
            for event in events:
                weight = self._event_size(event) + _ENTRY_OVERHEAD
                if len(page) == limit or (page and size + weight > self.page_bytes):
                    return page, True
                page.append(event)
                size += weight
            if len(events) < wanted:
                return page, False
            before = events[-1].revision

    def _event_size(self, e: Event) -> int:
        """What e's message weighs, about: its own fields, and its campaign's message."""
        texts = (e.detail, e.principal, e.traceparent, *e.unmet_run_conditions)
        size = _EVENT_BASE + sum(len(t) for t in texts)
        # The campaign weighed as a list page weighs it (the wire's cached size, or an
        # estimate), not encoded once more only to be measured.
        return size if e.campaign is None else size + self._encoded_size(e.campaign)

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
        if self._deferring and self._deferred.holds_id(campaign_id):
            return True
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

    def probe_read(self) -> float:
        """Reads each table the service reads, by an index and one row at most: a database
        that answers SELECT 1 but not them (a table missing, a permission revoked, a lock
        held on one) fails it, and a few index lookups cost no more than SELECT 1 did.
        Returns the seconds it took, on this thread: round trips to the database, mostly."""
        started = time.monotonic()
        head = self.head_revision()
        self._id_taken.one("")
        self._fingerprint.one(head)
        return time.monotonic() - started

    # -- writes (writer thread, inside its transaction) --------------------------------

    def journal_begin(self) -> None:
        """First in every write transaction (see database.Journal).

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
        """Writes the fields of _STATE only: all a status change or a deletion touches, and
        far cheaper than save() (no actions to encode)."""
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
        self._log(event)
        return event

    def append_lease_event(
        self, c: Campaign, reason: Reason, now: int, holder: str, token: int, origin: Origin
    ) -> Event:
        """Logs a change of c's lease (see leases.py): c itself is unchanged, and keeps its
        revision and version, so that the event shows it as it is."""
        assert self._revision_at_begin is not None, "events are written after journal_begin"
        event = Event(
            revision=self._revision_at_begin + len(self._journal) + 1,
            customer_id=c.customer_id,
            campaign_id=c.id,
            status=c.status,
            previous_status=c.status,
            deleted=c.deleted,
            reason=reason,
            tm_event=now,
            version=c.version,
            tm_update=c.tm_update,
            tm_delete=c.tm_delete,
            stop_revision=c.stop_revision,
            body_revision=c.body_revision,
            principal=origin.principal,
            traceparent=origin.traceparent,
            lease_holder=holder,
            fencing_token=token,
            campaign=c,
        )
        self._log(event)
        return event

    def _log(self, event: Event) -> None:
        self._write(
            self._insert_event,
            event.revision,
            event.customer_id,
            event.campaign_id,
            int(event.status),
            int(event.previous_status),
            event.deleted,
            int(event.reason),
            event.tm_event,
            event.next_campaign_id,
            event.chained_from,
            event.detail,
            event.version,
            event.tm_update,
            event.tm_delete,
            event.stop_revision,
            event.body_revision,
            int(event.next_campaign_result),
            ",".join(event.unmet_run_conditions),
            event.principal,
            event.traceparent,
            event.lease_holder,
            event.fencing_token,
        )
        self._journal.append(event)

    def probe_write(self, now: int) -> None:
        """A write nobody reads, committed like any other: whether the database takes
        writes now (its disk not full, a connection to be had, not a standby). The rows of
        servers that stopped probing a day ago go with it."""
        self._write(self._set_write_probe, now)
        self._write(self._forget_probes, now - 86_400_000_000)

    def actions_all_encoded(self) -> bool:
        """Every row has its actions' encoding, or a store without the wire's form cannot
        give them one (see encode_stored_actions)."""
        M = self.t.meta
        return self._wire is None or M.get_or_none(M.key == ACTIONS_ENCODED) is not None

    def encode_stored_actions(self, after_seq: int, batch: int) -> int | None:
        """Gives up to batch rows past after_seq that were written without the actions'
        encoding (by a release before schema version 5) theirs; returns the seq to go on
        after, or None once there are no more (and says so in meta, for good). A row that
        another release writes later without it stays readable: its pages decode it."""
        assert self._wire is not None, "a store without the wire's form encodes nothing"
        C, M = self.t.campaign, self.t.meta
        stale = C.actions_wire_body.is_null() | (C.actions_wire_body != C.body_revision)
        rows = list(
            C.select(C.seq, C.version, C.body_revision, C.actions)
            .where(stale & (C.seq > after_seq))
            .order_by(C.seq)
            .limit(batch)
            .tuples()
        )
        for seq, version, body_revision, text in rows:
            data = self._wire.actions(_actions_from_json(text))
            # Unless a write of another version came first, with its own encoding.
            self._write_query(
                C.update(actions_wire=data, actions_wire_body=body_revision).where(
                    (C.seq == seq) & (C.version == version)
                )
            )
        if len(rows) < batch:
            self._write_query(M.insert(key=ACTIONS_ENCODED, value=1).on_conflict_ignore())
            return None
        return int(rows[-1][0])

    def compact(self, older_than: int, batch: int) -> int:
        """Removes up to batch of the oldest events logged before older_than; returns how many.

        Only ever a prefix of the log goes, and the compacted revision moves with it in the
        same transaction, so "after revision R" is either complete or known to be incomplete.
        """
        taken = self._take_compaction.one()
        # None: another replica is compacting (PostgreSQL), or the log never was; the row is
        # written with the first compaction, once, by whoever comes first.
        if taken is None and self._postgresql and self._compacted.one() is not None:
            return 0
        compacted = 0 if taken is None else int(taken[0])
        rows = self._oldest_events.all(compacted, batch)
        last = compacted
        for revision, tm_event in rows:
            if tm_event >= older_than:
                break
            last = revision
        if last == compacted:
            return 0
        self._write(self._delete_events, compacted, last)
        # The bodies superseded at or before it: every event written with them is gone too.
        self._write(self._delete_bodies, last)
        self._write(self._set_compacted, last)
        # Only this replica removes events past `compacted` (it holds the row), and the log
        # has no gap: the events read up to `last` are those removed.
        return sum(1 for revision, _ in rows if revision <= last)

    # -- the journal of the transaction in progress (writer thread) ------------------

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

    def due_stops(self, now: int, limit: int) -> list[Campaign]:
        return [_campaign(r) for r in self._due.all(now, limit)]
