"""Storage: the narrow set of operations the domain needs, on SQLite or PostgreSQL via Peewee.

Methods of Store are synchronous and run on the database threads (see database.py). Write
methods are only called inside the writer's transaction, so a domain operation composed of
several of them is atomic.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

import peewee as pw

from .errors import (
    Aborted,
    AlreadyExists,
    CampaignError,
    FailedPrecondition,
    PreconditionViolation,
)
from .schema import Tables, bind_tables, migrate
from .types import (
    Action,
    Campaign,
    CampaignType,
    EndHandle,
    Event,
    ListFilter,
    Reason,
    Snapshot,
    Status,
)


def _actions_to_json(actions: Iterable[Action]) -> str:
    return json.dumps(
        [{"id": a.id, "next_id": a.next_id, "type": a.type, "option": a.option} for a in actions],
        separators=(",", ":"),
        ensure_ascii=False,
    )


def _actions_from_json(text: str) -> list[Action]:
    return [Action(a["id"], a["next_id"], a["type"], a["option"]) for a in json.loads(text)]


def _conflict(exc: pw.IntegrityError, c: Campaign) -> CampaignError:
    """A unique index refused a write that raced one from another process."""
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


class Store:
    def __init__(self, db: pw.Database) -> None:
        self.db = db
        self.t: Tables = bind_tables(db)

    def migrate(self) -> int:
        return migrate(self.db, self.t)

    # -- conversion -------------------------------------------------------------------

    def _campaign(self, row: Any) -> Campaign:
        return Campaign(
            id=row.id,
            customer_id=row.customer_id,
            type=CampaignType(row.type),
            name=row.name,
            detail=row.detail,
            status=Status(row.status),
            service_level=row.service_level,
            end_handle=EndHandle(row.end_handle),
            actions=_actions_from_json(row.actions),
            outplan_id=row.outplan_id,
            outdial_id=row.outdial_id,
            queue_id=row.queue_id,
            next_campaign_id=row.next_campaign_id,
            tm_create=row.tm_create,
            tm_update=row.tm_update,
            tm_delete=row.tm_delete,
            version=row.version,
            revision=row.revision,
            stop_deadline=row.stop_deadline,
            finishing=bool(row.finishing),
        )

    def _columns(self, c: Campaign) -> dict[str, Any]:
        return {
            "type": int(c.type),
            "name": c.name,
            "detail": c.detail,
            "status": int(c.status),
            "service_level": c.service_level,
            "end_handle": int(c.end_handle),
            "actions": _actions_to_json(c.actions),
            "outplan_id": c.outplan_id,
            "outdial_id": c.outdial_id,
            "queue_id": c.queue_id,
            "next_campaign_id": c.next_campaign_id,
            "tm_update": c.tm_update,
            "tm_delete": c.tm_delete,
            "version": c.version,
            "revision": c.revision,
            "stop_deadline": c.stop_deadline,
            "finishing": c.finishing,
        }

    @staticmethod
    def _event(row: Any) -> Event:
        return Event(
            revision=row.revision,
            customer_id=row.customer_id,
            campaign_id=row.campaign_id,
            status=Status(row.status),
            previous_status=Status(row.previous_status),
            deleted=bool(row.deleted),
            reason=Reason(row.reason),
            tm_event=row.tm_event,
            next_campaign_id=row.next_campaign_id,
            chained_from=row.chained_from,
            detail=row.detail,
        )

    # -- reads (any thread) -----------------------------------------------------------

    def get(self, customer_id: str, campaign_id: str) -> Campaign | None:
        C = self.t.campaign
        row = C.get_or_none((C.customer_id == customer_id) & (C.id == campaign_id))
        return None if row is None else self._campaign(row)

    def get_by_request(self, customer_id: str, request_id: str) -> Campaign | None:
        C = self.t.campaign
        row = C.get_or_none((C.customer_id == customer_id) & (C.request_id == request_id))
        return None if row is None else self._campaign(row)

    def outdial_holder(self, customer_id: str, outdial_id: str, other_than: str) -> str | None:
        """The live campaign, other than other_than, that uses outdial_id."""
        if not outdial_id:
            return None
        C = self.t.campaign
        row = (
            C.select(C.id)
            .where(
                (C.customer_id == customer_id)
                & (C.outdial_id == outdial_id)
                & (C.tm_delete.is_null())
                & (C.id != other_than)
            )
            .first()
        )
        return None if row is None else str(row.id)

    def list_page(
        self, f: ListFilter, after_seq: int | None, limit: int
    ) -> tuple[list[Campaign], int | None]:
        """Up to limit campaigns newest first, and the seq to continue after (None at the end)."""
        C = self.t.campaign
        cond = C.customer_id == f.customer_id
        if after_seq is not None:
            cond &= C.seq < after_seq
        if f.status:
            cond &= C.status == int(f.status)
        if f.type:
            cond &= C.type == int(f.type)
        if not f.show_deleted:
            cond &= C.tm_delete.is_null()
        rows = list(C.select().where(cond).order_by(C.seq.desc()).limit(limit + 1))
        more = len(rows) > limit
        rows = rows[:limit]
        return [self._campaign(r) for r in rows], (rows[-1].seq if more and rows else None)

    def head_revision(self) -> int:
        M = self.t.meta
        return int(M.get(M.key == "revision").value)

    def snapshot(self, customer_id: str, campaign_id: str) -> Snapshot:
        """The live campaigns (or the one campaign) and the revision they reflect, consistently."""
        C = self.t.campaign
        with self.db.atomic():
            revision = self.head_revision()
            if campaign_id:
                found = self.get(customer_id, campaign_id)
                campaigns = [] if found is None else [found]
            else:
                cond = C.tm_delete.is_null()
                if customer_id:
                    cond &= C.customer_id == customer_id
                campaigns = [self._campaign(r) for r in C.select().where(cond).order_by(C.seq)]
        return Snapshot(campaigns, revision)

    def events_after(
        self, revision: int, customer_id: str, campaign_id: str, limit: int
    ) -> list[Event]:
        E = self.t.event
        cond = E.revision > revision
        if customer_id:
            cond &= E.customer_id == customer_id
        if campaign_id:
            cond &= E.campaign_id == campaign_id
        return [self._event(r) for r in E.select().where(cond).order_by(E.revision).limit(limit)]

    def next_stop_deadline(self) -> int | None:
        C = self.t.campaign
        value = (
            C.select(pw.fn.MIN(C.stop_deadline)).where(C.status == int(Status.STOPPING)).scalar()
        )
        return None if value is None else int(value)

    def ping(self) -> None:
        self.db.execute_sql("SELECT 1").fetchone()

    # -- writes (writer thread, inside its transaction) --------------------------------

    def insert(self, c: Campaign, request_id: str) -> None:
        C = self.t.campaign
        try:
            C.insert(
                customer_id=c.customer_id,
                id=c.id,
                tm_create=c.tm_create,
                request_id=request_id or None,
                **self._columns(c),
            ).execute()
        except pw.IntegrityError as exc:
            raise _conflict(exc, c) from exc

    def save(self, c: Campaign) -> None:
        C = self.t.campaign
        try:
            C.update(**self._columns(c)).where(
                (C.customer_id == c.customer_id) & (C.id == c.id)
            ).execute()
        except pw.IntegrityError as exc:
            raise _conflict(exc, c) from exc

    def event_at(self, revision: int) -> Event | None:
        E = self.t.event
        row = E.get_or_none(E.revision == revision)
        return None if row is None else self._event(row)

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
    ) -> Event:
        """Takes the next revision and logs the campaign's new state; sets c.revision."""
        M, E = self.t.meta, self.t.event
        # Incrementing one row serializes every writer on the revision, so revisions
        # commit in order and a reader never sees a later one before an earlier one.
        M.update(value=M.value + 1).where(M.key == "revision").execute()
        event = Event(
            revision=self.head_revision(),
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
        )
        E.insert(
            revision=event.revision,
            customer_id=event.customer_id,
            campaign_id=event.campaign_id,
            status=int(event.status),
            previous_status=int(event.previous_status),
            deleted=event.deleted,
            reason=int(event.reason),
            tm_event=event.tm_event,
            next_campaign_id=event.next_campaign_id,
            chained_from=event.chained_from,
            detail=event.detail,
        ).execute()
        c.revision = event.revision
        return event

    def due_stops(self, now: int, limit: int) -> list[Campaign]:
        C = self.t.campaign
        rows = (
            C.select()
            .where((C.status == int(Status.STOPPING)) & (C.stop_deadline <= now))
            .order_by(C.stop_deadline)
            .limit(limit)
        )
        return [self._campaign(r) for r in rows]
