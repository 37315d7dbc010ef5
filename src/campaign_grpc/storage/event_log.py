"""The event log: each change of a campaign appended under the next revision, and the log
read back after a revision (the watch) or before one (a campaign's history), with the
revisions that bound it (its head, what compaction removed)."""

from __future__ import annotations

from typing import Any

import peewee as pw

from ..domain.types import (
    ANONYMOUS,
    Campaign,
    Event,
    NextCampaignResult,
    Origin,
    Reason,
    Status,
    stamp_change,
)
from .identity import Fingerprint, LogState
from .pages import ENTRY_OVERHEAD, PAGE_RESERVE, event_size
from .prepared import Prepared, param
from .rows import EventRow, to_event, to_full_event
from .schema import BODY_COLUMNS, FULL_HISTORY_FROM
from .transaction import Transaction

# Full-view events read at once for a page of them (see events_page).
_FULL_EVENTS_BATCH = 8


class EventLog(Transaction):
    def _prepare_event_log(self) -> None:
        db, E, M = self.db, self.t.event, self.t.meta
        self._head = Prepared(db, M.select(M.value).where(M.key == "revision"))
        self._meta = Prepared(
            db, M.select(M.key, M.value).where(M.key.in_(["revision", "epoch", "compacted"]))
        )
        self._insert_event = Prepared(
            db, E.insert({f: param(i) for i, f in enumerate(self._event_fields)})
        )
        self._compacted = Prepared(db, M.select(M.value).where(M.key == "compacted"))
        self._fingerprint = Prepared(
            db, E.select(E.revision, E.campaign_id, E.tm_event).where(E.revision == param(0))
        )
        self._full_history_from = Prepared(db, M.select(M.value).where(M.key == FULL_HISTORY_FROM))

    # -- reads (any thread) -----------------------------------------------------------

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

    def events_after(
        self, revision: int, customer_id: str, campaign_id: str, limit: int, *, full: bool = False
    ) -> list[Event]:
        """Up to limit events after revision, in order; with full, each with the campaign as
        of its revision (for events after full_history_from)."""
        shape = (bool(customer_id), bool(campaign_id), full)
        query = self._q.get(("events", shape), lambda: self._events_query(*shape))
        rows = query.all(revision, customer_id, campaign_id, limit)
        if full:
            return [to_full_event(r) for r in rows]
        return [to_event(EventRow._make(r)) for r in rows]

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
        (see rows.to_full_event)."""
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
        return [to_full_event(r) if full else to_event(EventRow._make(r)) for r in rows]

    def events_page(
        self, before: int | None, customer_id: str, campaign_id: str, limit: int, *, full: bool
    ) -> tuple[list[Event], bool]:
        """As events_before, but no more than page_bytes of them as they are sent (at least
        one, so that a walk always moves on), and whether more are left. A full-view event
        carries its whole campaign, up to about 1 MB: they are read a few at a time, so that
        a page stops reading once it is full."""
        page: list[Event] = []
        size = PAGE_RESERVE
        batch = _FULL_EVENTS_BATCH if full else limit + 1
        while True:
            wanted = min(batch, limit + 1 - len(page))
            events = self.events_before(before, customer_id, campaign_id, wanted, full=full)
            for event in events:
                weight = event_size(event, self._encoded_size) + ENTRY_OVERHEAD
                if len(page) == limit or (page and size + weight > self.page_bytes):
                    return page, True
                page.append(event)
                size += weight
            if len(events) < wanted:
                return page, False
            before = events[-1].revision

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

    def compacted_revision(self) -> int:
        """Every event up to this revision has been removed from the log (0: none)."""
        row = self._compacted.one()
        return 0 if row is None else int(row[0])

    # -- writes (writer thread, inside its transaction) --------------------------------

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
        """Takes the next revision and logs the campaign's new state (see
        types.stamp_change)."""
        assert self._revision_at_begin is not None, "events are written after journal_begin"
        event = stamp_change(
            c,
            self._revision_at_begin + len(self._journal) + 1,
            previous_status,
            reason,
            now,
            next_campaign_id=next_campaign_id,
            chained_from=chained_from,
            detail=detail,
            next_campaign_result=next_campaign_result,
            unmet_run_conditions=unmet_run_conditions,
            begins_stop=begins_stop,
            new_body=new_body,
            origin=origin,
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
