"""The campaign domain: every operation the service offers, each one transaction.

Knows nothing of gRPC. Each write is a function run by the writer inside its transaction, so
that a rule checked against the stored state still holds when the change commits.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from ..storage.read_lanes import Readers
from ..storage.store import Store
from ..storage.writer import Writer
from . import lifecycle, page_token, validation
from .errors import (
    Aborted,
    AlreadyExists,
    CampaignError,
    FailedPrecondition,
    NotFound,
    PreconditionViolation,
)
from .ids import new_id
from .types import (
    ANONYMOUS,
    SERVICE,
    Action,
    Campaign,
    CampaignState,
    EndHandle,
    Event,
    EventFilter,
    EventPage,
    ListFilter,
    NextCampaignResult,
    Origin,
    Page,
    Reason,
    Status,
)

Clock = Callable[[], int]
# Raises unless a fencing token is the campaign's live lease (see leasing.Leasing.check_fence):
# (campaign id, token, now, whether the call changes the campaign).
Fence = Callable[[str, int, int, bool], None]


def _no_leases(campaign_id: str, token: int, now: int, changes: bool) -> None:
    raise FailedPrecondition(
        "this server grants no leases",
        [PreconditionViolation("LEASE_NOT_HELD", campaign_id, "this server grants no leases")],
        reason="LEASE_NOT_HELD",
        metadata={"id": campaign_id, "fencing_token": "0"},
    )


def wall_clock_us() -> int:
    return time.time_ns() // 1000


def _not_found(campaign_id: str) -> NotFound:
    return NotFound(f"campaign {campaign_id} not found", metadata={"id": campaign_id})


def _with_action_ids(actions: Sequence[Action]) -> list[Action]:
    return [a if a.id else Action(new_id(), a.next_id, a.type, a.option) for a in actions]


def _reference_error(violations: list[PreconditionViolation]) -> FailedPrecondition:
    return FailedPrecondition(
        "; ".join(v.description for v in violations), violations, reason=violations[0].type
    )


# How many referring campaigns a refused delete names; the rest are counted.
MAX_REFERRERS_SHOWN = 20


def _referenced(campaign_id: str, referrers: list[str]) -> FailedPrecondition:
    shown = referrers[:MAX_REFERRERS_SHOWN]
    more = len(referrers) - len(shown)
    return FailedPrecondition(
        f"live campaigns name campaign {campaign_id} as their next campaign"
        + (f" ({more} more not listed)" if more else "")
        + "; change their next_campaign_id or delete them first",
        [
            PreconditionViolation(
                "CAMPAIGN_REFERENCED", r, f"campaign {r} names it as its next_campaign_id"
            )
            for r in shown
        ],
        reason="CAMPAIGN_REFERENCED",
    )


@dataclass(slots=True, frozen=True)
class _Chain:
    """What starting a finished campaign's next campaign comes to."""

    campaign: Campaign | None
    result: NextCampaignResult
    unmet: tuple[PreconditionViolation, ...] = ()

    @property
    def detail(self) -> str:
        why = {
            NextCampaignResult.STARTED: "started",
            NextCampaignResult.ALREADY_RUNNING: "not started: it is already running",
            NextCampaignResult.NOT_FOUND: "not started: it does not exist or is deleted",
            NextCampaignResult.RUN_CONDITIONS_UNMET: "not started: "
            + "; ".join(f"{v.subject}: {v.description}" for v in self.unmet),
        }
        return why[self.result]


class Campaigns:
    def __init__(
        self,
        store: Store,
        writer: Writer,
        readers: Readers,
        *,
        stop_grace_s: float = 60.0,
        clock: Clock = wall_clock_us,
        fence: Fence = _no_leases,
    ) -> None:
        self._store = store
        self._writer = writer
        self._readers = readers
        self._stop_grace_us = int(stop_grace_s * 1_000_000)
        self._clock = clock
        self.fence = fence

    def now(self) -> int:
        return self._clock()

    # -- reads -----------------------------------------------------------------------

    async def get(self, customer_id: str, campaign_id: str) -> Campaign:
        validation.validate_key(customer_id, campaign_id)
        found = await self._readers.run(lambda: self._store.get(customer_id, campaign_id))
        if found is None:
            raise _not_found(campaign_id)
        return found

    async def list_page(self, f: ListFilter, page_size: int, token: str) -> Page:
        limit = validation.validate_list(f.customer_id, page_size, f.status, f.type)
        after = page_token.decode(token, f) if token else None
        campaigns, last = await self._readers.run(lambda: self._store.list_page(f, after, limit))
        return Page(campaigns, "" if last is None else page_token.encode(f, last))

    async def list_events(
        self, f: EventFilter, page_size: int, token: str, *, full: bool
    ) -> EventPage:
        """A page of events, newest first: what happened to one campaign or a customer's."""
        limit = validation.validate_list_events(f.customer_id, f.campaign_id, page_size)
        before = page_token.decode(token, f) if token else None
        if f.campaign_id and not token:
            await self.get(f.customer_id, f.campaign_id)
        # A page is bounded in bytes too: a full-view event carries its whole campaign.
        events, more = await self._readers.run(
            lambda: self._store.events_page(before, f.customer_id, f.campaign_id, limit, full=full)
        )
        return EventPage(events, page_token.encode(f, events[-1].revision) if more else "")

    async def snapshot_page(
        self,
        customer_id: str,
        after: int,
        upto: int,
        limit: int,
        *,
        full: bool,
        refusal: Callable[[], CampaignError | None] = lambda: None,
    ) -> list[Campaign] | list[CampaignState]:
        """refusal() is asked on the database thread, just before the read: a page read
        minutes after it was asked for (behind thousands of others) may be refused then."""

        def read() -> list[Campaign] | list[CampaignState]:
            refused = refusal()
            if refused is not None:
                raise refused
            return self._store.snapshot_page(customer_id, after, upto, limit, full=full)

        return await self._readers.run(read)

    async def snapshot_one(
        self, customer_id: str, campaign_id: str, *, full: bool
    ) -> tuple[Campaign | CampaignState | None, int]:
        return await self._readers.run(
            lambda: self._store.snapshot_one(customer_id, campaign_id, full=full)
        )

    async def events_after(
        self, revision: int, customer_id: str, campaign_id: str, limit: int, *, full: bool = False
    ) -> list[Event]:
        return await self._readers.run(
            lambda: self._store.events_after(revision, customer_id, campaign_id, limit, full=full)
        )

    async def full_history_from(self) -> int:
        return await self._readers.run(self._store.full_history_from)

    async def head_revision(self) -> int:
        return await self._readers.run(self._store.head_revision)

    async def compacted_revision(self) -> int:
        return await self._readers.run(self._store.compacted_revision)

    async def next_stop_deadline(self) -> int | None:
        return await self._readers.run(self._store.next_stop_deadline)

    async def probe_read(self) -> float:
        """Fails when the service's reads would: each of its tables is read. Returns the
        seconds the database took."""
        return await self._readers.run(self._store.probe_read)

    # -- writes ----------------------------------------------------------------------

    async def create(
        self, draft: Campaign, request_id: str, *, origin: Origin = ANONYMOUS
    ) -> Campaign:
        validation.validate_create(draft, request_id)
        return await self._writer.run(lambda: self._create(draft, request_id, origin))

    def _create(self, draft: Campaign, request_id: str, origin: Origin) -> Campaign:
        store, now = self._store, self._clock()
        if request_id:
            earlier = store.get_by_request(draft.customer_id, request_id)
            if earlier is not None:
                return earlier
        # Ids are one key across all customers; the answer is the same whoever holds it.
        if draft.id and store.id_taken(draft.id):
            raise AlreadyExists(f"campaign {draft.id} already exists", metadata={"id": draft.id})
        # Built field by field rather than with dataclasses.replace: this runs on the writer,
        # where every microsecond is one the event loop waits for the GIL.
        c = Campaign(
            id=draft.id or new_id(),
            customer_id=draft.customer_id,
            type=draft.type,
            name=draft.name,
            detail=draft.detail,
            status=Status.STOP,
            service_level=draft.service_level,
            end_handle=draft.end_handle or EndHandle.STOP,
            actions=_with_action_ids(draft.actions),
            outplan_id=draft.outplan_id,
            outdial_id=draft.outdial_id,
            queue_id=draft.queue_id,
            next_campaign_id=draft.next_campaign_id,
            tm_create=now,
        )
        # Where the store's insert refuses a taken outdial without spoiling the transaction,
        # the campaign holding it is looked up only on a refusal: one statement fewer for
        # every create. A next campaign to check as well is checked with it beforehand, so
        # that one error lists both broken references.
        by_insert = store.insert_refuses_taken_outdial and not c.next_campaign_id
        if not by_insert:
            self._check_references(c, {"next_campaign_id", "outdial_id"})
        store.append_event(c, Status.UNSPECIFIED, Reason.CREATED, now, new_body=True, origin=origin)
        try:
            store.insert(c, request_id)
        except FailedPrecondition as refused:
            if by_insert and refused.reason == "OUTDIAL_IN_USE":
                self._check_references(c, {"outdial_id"})
            raise
        return c

    def _check_references(self, c: Campaign, fields: set[str]) -> Campaign | None:
        """Raises for a broken reference among fields; returns the next campaign if any."""
        store = self._store
        next_campaign = store.get(c.customer_id, c.next_campaign_id) if c.next_campaign_id else None
        violations: list[PreconditionViolation] = []
        if "next_campaign_id" in fields:
            violations += lifecycle.next_campaign_violations(c, next_campaign)
        if "outdial_id" in fields and c.outdial_id and not c.deleted:
            holder = store.outdial_holder(c.customer_id, c.outdial_id, c.id)
            violations += lifecycle.outdial_violations(c, holder)
        if violations:
            raise _reference_error(violations)
        return next_campaign

    def _load(self, customer_id: str, campaign_id: str, etag: str = "") -> Campaign:
        c = self._store.load(customer_id, campaign_id)
        if c is None:
            raise _not_found(campaign_id)
        if etag and etag != c.etag:
            raise Aborted(
                "the campaign changed since the etag was read; read it again",
                metadata={"id": campaign_id, "etag": c.etag},
            )
        return c

    def _touch(self, c: Campaign, now: int) -> None:
        c.version += 1
        c.tm_update = now

    async def update(
        self,
        draft: Campaign,
        paths: Sequence[str],
        etag: str = "",
        *,
        origin: Origin = ANONYMOUS,
    ) -> Campaign:
        validation.validate_update(draft, paths)
        return await self._writer.run(lambda: self._update(draft, set(paths), etag, origin))

    def _update(self, draft: Campaign, paths: set[str], etag: str, origin: Origin) -> Campaign:
        c = self._load(draft.customer_id, draft.id, etag)
        lifecycle.require_not_deleted(c, "updated")
        before = dataclasses.replace(c)
        for name in paths:
            value = getattr(draft, name)
            if name == "actions":
                value = _with_action_ids(value)
            elif name == "end_handle":
                value = value or EndHandle.STOP
            setattr(c, name, value)
        if c == before:
            return c
        next_campaign = self._check_references(c, paths)
        if c.status == Status.RUN:
            next_before = next_campaign
            if before.next_campaign_id != c.next_campaign_id:
                next_before = self._store.get(c.customer_id, before.next_campaign_id)
            lifecycle.require_update_keeps_runnable(before, c, next_before, next_campaign)
        now = self._clock()
        self._touch(c, now)
        event = self._store.append_event(
            c, c.status, Reason.UPDATED, now, new_body=True, origin=origin
        )
        # The events written with the body being replaced still show it in the full view.
        self._store.supersede_body(c, event.revision)
        self._store.save(c)
        return c

    async def delete(
        self, customer_id: str, campaign_id: str, etag: str, *, origin: Origin = ANONYMOUS
    ) -> Campaign:
        validation.validate_key(customer_id, campaign_id)
        return await self._writer.run(lambda: self._delete(customer_id, campaign_id, etag, origin))

    def _delete(self, customer_id: str, campaign_id: str, etag: str, origin: Origin) -> Campaign:
        c = self._load(customer_id, campaign_id, etag)
        if c.deleted:
            return c
        if c.status != Status.STOP:
            raise FailedPrecondition(
                "only a stopped campaign can be deleted; stop it first",
                [
                    PreconditionViolation(
                        "CAMPAIGN_NOT_STOPPED", "status", f"the campaign is {c.status.name}"
                    )
                ],
                reason="CAMPAIGN_NOT_STOPPED",
            )
        # A deleted campaign cannot be started: a chain that names it would break.
        referrers = self._store.referrers(customer_id, campaign_id, MAX_REFERRERS_SHOWN + 1)
        if referrers:
            raise _referenced(campaign_id, referrers)
        now = self._clock()
        c.tm_delete = now
        self._touch(c, now)
        self._store.append_event(c, c.status, Reason.DELETED, now, origin=origin)
        self._store.save_state(c)
        return c

    async def undelete(
        self, customer_id: str, campaign_id: str, *, origin: Origin = ANONYMOUS
    ) -> Campaign:
        validation.validate_key(customer_id, campaign_id)
        return await self._writer.run(lambda: self._undelete(customer_id, campaign_id, origin))

    def _undelete(self, customer_id: str, campaign_id: str, origin: Origin) -> Campaign:
        c = self._load(customer_id, campaign_id)
        if not c.deleted:
            return c
        previous = c.status
        c.tm_delete = None
        c.status = Status.STOP
        c.stop_deadline = None
        self._check_references(c, {"outdial_id"})
        now = self._clock()
        self._touch(c, now)
        self._store.append_event(c, previous, Reason.UNDELETED, now, origin=origin)
        self._store.save_state(c)
        return c

    async def set_status(
        self,
        customer_id: str,
        campaign_id: str,
        status: int,
        force: bool,
        etag: str = "",
        *,
        origin: Origin = ANONYMOUS,
    ) -> Campaign:
        validation.validate_status_request(customer_id, campaign_id, status)
        requested = Status(status)
        return await self._writer.run(
            lambda: self._set_status(customer_id, campaign_id, requested, force, etag, origin)
        )

    def _set_status(
        self,
        customer_id: str,
        campaign_id: str,
        requested: Status,
        force: bool,
        etag: str,
        origin: Origin,
    ) -> Campaign:
        c = self._load(customer_id, campaign_id, etag)
        next_campaign = None
        if requested == Status.RUN and c.next_campaign_id:
            next_campaign = self._store.get(customer_id, c.next_campaign_id)
        now = self._clock()
        transition = lifecycle.plan_status_change(
            c,
            requested,
            force=force,
            next_campaign=next_campaign,
            now=now,
            stop_grace_us=self._stop_grace_us,
        )
        if transition is not None:
            self._apply(c, transition, now, origin)
        return c

    def _apply(self, c: Campaign, t: lifecycle.Transition, now: int, origin: Origin) -> None:
        """Writes a transition and its event; completes the chain when it finishes a campaign.

        Every event makes a new version of the campaign (a new etag), so that a version
        always names one state, as the caches and the full view rely on.
        """
        chain = self._chain_target(c) if t.start_next else None
        previous = c.status
        begins_stop = t.to == Status.STOPPING and previous != Status.STOPPING
        c.status = t.to
        c.stop_deadline = t.stop_deadline
        c.finishing = t.finishing
        if t.to == Status.RUN or (t.to == Status.STOP and previous == Status.RUN):
            c.stop_revision = 0  # no stop of this campaign is left to confirm
        self._touch(c, now)
        if chain is None:
            self._store.append_event(
                c,
                previous,
                t.reason,
                now,
                detail=t.detail,
                begins_stop=begins_stop,
                origin=origin,
            )
            self._store.save_state(c)
            return
        self._store.append_event(
            c,
            previous,
            t.reason,
            now,
            next_campaign_id=c.next_campaign_id,
            detail=f"next campaign {c.next_campaign_id} {chain.detail}",
            next_campaign_result=chain.result,
            unmet_run_conditions=tuple(v.type for v in chain.unmet),
            origin=origin,
        )
        self._store.save_state(c)
        nxt = chain.campaign
        if nxt is not None and chain.result == NextCampaignResult.STARTED:
            before = nxt.status
            nxt.status, nxt.stop_deadline, nxt.finishing = Status.RUN, None, False
            nxt.stop_revision = 0
            self._touch(nxt, now)
            # The service starts it, in the transaction of whoever completed the first.
            self._store.append_event(
                nxt, before, Reason.CHAINED, now, chained_from=c.id, origin=SERVICE
            )
            self._store.save_state(nxt)

    def _chain_target(self, c: Campaign) -> _Chain | None:
        """The next campaign of a finished one, and whether it can start."""
        if not c.next_campaign_id:
            return None
        nxt = self._store.load(c.customer_id, c.next_campaign_id)
        if nxt is None or nxt.deleted:
            return _Chain(None, NextCampaignResult.NOT_FOUND)
        if nxt.status == Status.RUN:
            return _Chain(nxt, NextCampaignResult.ALREADY_RUNNING)
        after = (
            self._store.get(nxt.customer_id, nxt.next_campaign_id) if nxt.next_campaign_id else None
        )
        unmet = lifecycle.run_violations(nxt, after)
        if unmet:
            return _Chain(nxt, NextCampaignResult.RUN_CONDITIONS_UNMET, tuple(unmet))
        return _Chain(nxt, NextCampaignResult.STARTED)

    async def confirm_drained(
        self,
        customer_id: str,
        campaign_id: str,
        stop_revision: int,
        *,
        fencing_token: int = 0,
        origin: Origin = ANONYMOUS,
    ) -> Campaign:
        validation.validate_confirm(customer_id, campaign_id, stop_revision)
        validation.validate_fencing_token(fencing_token)
        return await self._writer.run(
            lambda: self._confirm_drained(
                customer_id, campaign_id, stop_revision, fencing_token, origin
            )
        )

    def _confirm_drained(
        self,
        customer_id: str,
        campaign_id: str,
        stop_revision: int,
        fencing_token: int,
        origin: Origin,
    ) -> Campaign:
        c = self._load(customer_id, campaign_id)
        now = self._clock()
        transition = self._fenced(
            c, fencing_token, now, lambda: lifecycle.plan_drained(c, stop_revision)
        )
        if transition is not None:
            self._apply(c, transition, now, origin)
        return c

    def _fenced(
        self,
        c: Campaign,
        fencing_token: int,
        now: int,
        decide: Callable[[], lifecycle.Transition | None],
    ) -> lifecycle.Transition | None:
        """What decide() plans, once the fencing token (if any) is checked: a refused one
        changes nothing, and its refusal comes before any other."""
        if not fencing_token:
            return decide()
        try:
            transition = decide()
        except CampaignError:
            self.fence(c.id, fencing_token, now, True)
            raise
        self.fence(c.id, fencing_token, now, transition is not None)
        return transition

    async def report_outdial_exhausted(
        self,
        customer_id: str,
        campaign_id: str,
        *,
        fencing_token: int = 0,
        origin: Origin = ANONYMOUS,
    ) -> Campaign:
        validation.validate_key(customer_id, campaign_id)
        validation.validate_fencing_token(fencing_token)
        return await self._writer.run(
            lambda: self._report_outdial_exhausted(customer_id, campaign_id, fencing_token, origin)
        )

    def _report_outdial_exhausted(
        self, customer_id: str, campaign_id: str, fencing_token: int, origin: Origin
    ) -> Campaign:
        c = self._load(customer_id, campaign_id)
        now = self._clock()
        t = self._fenced(
            c,
            fencing_token,
            now,
            lambda: lifecycle.plan_outdial_exhausted(c, now=now, stop_grace_us=self._stop_grace_us),
        )
        if t is not None:
            self._apply(c, t, now, origin)
        return c

    async def expire_stops(self, batch: int = 100) -> int:
        """Completes to STOP every campaign whose stop grace has run out; returns how many."""
        return await self._writer.run(lambda: self._expire_stops(batch))

    def _expire_stops(self, batch: int) -> int:
        now = self._clock()
        completed = 0
        for due in self._store.due_stops(now, batch):
            # Read again: completing an earlier one may have started this one by its chain.
            c = self._store.load(due.customer_id, due.id)
            if c is None or c.status != Status.STOPPING or c.stop_deadline != due.stop_deadline:
                continue
            self._apply(c, lifecycle.plan_grace_expired(c), now, SERVICE)
            completed += 1
        return completed
