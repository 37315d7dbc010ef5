"""The campaign domain: every operation the service offers, each one transaction.

Knows nothing of gRPC. Each write is a function run by the writer inside its transaction, so
that a rule checked against the stored state still holds when the change commits. The reads
are CampaignQueries' (campaign_queries.py), the rules about references between campaigns
are in references.py.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence

from . import lifecycle, validation
from .campaign_queries import CampaignQueries, not_found
from .errors import (
    Aborted,
    AlreadyExists,
    CampaignError,
    FailedPrecondition,
    PreconditionViolation,
)
from .ids import new_id
from .ports import CampaignStore, Transactions
from .references import (
    MAX_REFERRERS_SHOWN,
    chain_target,
    check_references,
    referenced,
)
from .types import (
    ANONYMOUS,
    SERVICE,
    Action,
    Campaign,
    EndHandle,
    NextCampaignResult,
    Origin,
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


def _with_action_ids(actions: Sequence[Action]) -> list[Action]:
    return [a if a.id else Action(new_id(), a.next_id, a.type, a.option) for a in actions]


class Campaigns(CampaignQueries):
    def __init__(
        self,
        store: CampaignStore,
        writer: Transactions,
        readers: Transactions,
        *,
        stop_grace_s: float = 60.0,
        clock: Clock = wall_clock_us,
        fence: Fence = _no_leases,
    ) -> None:
        super().__init__(store, readers)
        self._writer = writer
        self._stop_grace_us = int(stop_grace_s * 1_000_000)
        self._clock = clock
        self.fence = fence

    def now(self) -> int:
        return self._clock()

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
            check_references(self._store, c, {"next_campaign_id", "outdial_id"})
        store.append_event(c, Status.UNSPECIFIED, Reason.CREATED, now, new_body=True, origin=origin)
        try:
            store.insert(c, request_id)
        except FailedPrecondition as refused:
            if by_insert and refused.reason == "OUTDIAL_IN_USE":
                check_references(self._store, c, {"outdial_id"})
            raise
        return c

    def _load(self, customer_id: str, campaign_id: str, etag: str = "") -> Campaign:
        c = self._store.load(customer_id, campaign_id)
        if c is None:
            raise not_found(campaign_id)
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
        next_campaign = check_references(self._store, c, paths)
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
            raise referenced(campaign_id, referrers)
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
        check_references(self._store, c, {"outdial_id"})
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
        chain = chain_target(self._store, c) if t.start_next else None
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
