"""An in-memory store for domain tests where a database adds nothing: it keeps the rules
that domain.ports asks of a store (one id across customers, one live campaign per outdial, a
write that fails leaves nothing behind, revisions in order) and no more. Pages are not
bounded in bytes, events carry no campaign, and snapshots are not read: the tests of those
run on real databases."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import TypeVar

from campaign_grpc.domain.errors import (
    Aborted,
    AlreadyExists,
    FailedPrecondition,
    PreconditionViolation,
)
from campaign_grpc.domain.types import (
    ANONYMOUS,
    Campaign,
    CampaignState,
    EncodedCampaign,
    Event,
    ListFilter,
    NextCampaignResult,
    Origin,
    Reason,
    Status,
    stamp_change,
)

T = TypeVar("T")
Key = tuple[str, str]


def _copy(c: Campaign) -> Campaign:
    return dataclasses.replace(c, actions=list(c.actions))


class FakeStore:
    insert_refuses_taken_outdial = True

    def __init__(self) -> None:
        self.campaigns: dict[Key, Campaign] = {}
        # The order campaigns were created in (the list order), and their request ids.
        self.seq: dict[Key, int] = {}
        self.requests: dict[tuple[str, str], Key] = {}
        self.events: list[Event] = []

    # -- what Transactions needs to undo a write that failed ---------------------------

    def state(self) -> tuple[object, ...]:
        return dict(self.campaigns), dict(self.seq), dict(self.requests), list(self.events)

    def restore(self, state: tuple[object, ...]) -> None:
        campaigns, seq, requests, events = state
        self.campaigns, self.seq = campaigns, seq  # type: ignore[assignment]
        self.requests, self.events = requests, events  # type: ignore[assignment]

    # -- reads -------------------------------------------------------------------------

    def get(self, customer_id: str, campaign_id: str) -> Campaign | None:
        found = self.campaigns.get((customer_id, campaign_id))
        return None if found is None else _copy(found)

    load = get

    def get_by_request(self, customer_id: str, request_id: str) -> Campaign | None:
        key = self.requests.get((customer_id, request_id))
        return None if key is None else self.get(*key)

    def id_taken(self, campaign_id: str) -> bool:
        return any(i == campaign_id for _, i in self.campaigns)

    def outdial_holder(self, customer_id: str, outdial_id: str, other_than: str) -> str | None:
        if not outdial_id:
            return None
        for (customer, i), c in self.campaigns.items():
            live = not c.deleted and i != other_than
            if customer == customer_id and c.outdial_id == outdial_id and live:
                return i
        return None

    def referrers(self, customer_id: str, campaign_id: str, limit: int) -> list[str]:
        found = [
            i
            for (customer, i), c in sorted(self.campaigns.items(), key=lambda kv: self.seq[kv[0]])
            if customer == customer_id
            and c.next_campaign_id == campaign_id
            and not c.deleted
            and i != campaign_id
        ]
        return found[:limit]

    def due_stops(self, now: int, limit: int) -> list[Campaign]:
        due = [
            c
            for c in self.campaigns.values()
            if c.status == Status.STOPPING
            and c.stop_deadline is not None
            and c.stop_deadline <= now
        ]
        due.sort(key=lambda c: c.stop_deadline or 0)
        return [_copy(c) for c in due[:limit]]

    def next_stop_deadline(self) -> int | None:
        deadlines = [
            c.stop_deadline
            for c in self.campaigns.values()
            if c.status == Status.STOPPING and c.stop_deadline is not None
        ]
        return min(deadlines, default=None)

    def list_page(
        self, f: ListFilter, after_seq: int | None, limit: int
    ) -> tuple[list[Campaign | EncodedCampaign], int | None]:
        listed = sorted(
            (
                (self.seq[key], c)
                for key, c in self.campaigns.items()
                if key[0] == f.customer_id
                and (after_seq is None or self.seq[key] < after_seq)
                and (not f.status or c.status == f.status)
                and (not f.type or c.type == f.type)
                and (f.show_deleted or not c.deleted)
            ),
            key=lambda sc: -sc[0],
        )
        page: list[Campaign | EncodedCampaign] = [_copy(c) for _, c in listed[:limit]]
        return page, listed[limit - 1][0] if len(listed) > limit else None

    def events_after(
        self, revision: int, customer_id: str, campaign_id: str, limit: int, *, full: bool = False
    ) -> list[Event]:
        assert not full, "the fake keeps no bodies for the full view"
        return [
            e
            for e in self.events
            if e.revision > revision
            and (not customer_id or e.customer_id == customer_id)
            and (not campaign_id or e.campaign_id == campaign_id)
        ][:limit]

    def events_page(
        self, before: int | None, customer_id: str, campaign_id: str, limit: int, *, full: bool
    ) -> tuple[list[Event], bool]:
        assert not full, "the fake keeps no bodies for the full view"
        newest_first = [
            e
            for e in reversed(self.events)
            if (before is None or e.revision < before)
            and e.customer_id == customer_id
            and (not campaign_id or e.campaign_id == campaign_id)
        ]
        return newest_first[:limit], len(newest_first) > limit

    def snapshot_page(
        self, customer_id: str, after: int, upto: int, limit: int, *, full: bool
    ) -> list[Campaign] | list[CampaignState]:
        raise NotImplementedError("snapshots are tested on real databases")

    def snapshot_one(
        self, customer_id: str, campaign_id: str, *, full: bool
    ) -> tuple[Campaign | CampaignState | None, int]:
        raise NotImplementedError("snapshots are tested on real databases")

    def full_history_from(self) -> int:
        return 0

    def head_revision(self) -> int:
        return len(self.events)

    def compacted_revision(self) -> int:
        return 0

    def probe_read(self) -> float:
        return 0.0

    # -- writes ------------------------------------------------------------------------

    def _check_unique(self, c: Campaign) -> None:
        """What the database's unique indexes refuse."""
        if self.outdial_holder(c.customer_id, c.outdial_id, c.id) and not c.deleted:
            raise FailedPrecondition(
                f"outdial {c.outdial_id} belongs to another live campaign",
                [
                    PreconditionViolation(
                        "OUTDIAL_IN_USE", "outdial_id", "taken by a concurrent write"
                    )
                ],
                reason="OUTDIAL_IN_USE",
            )

    def insert(self, c: Campaign, request_id: str) -> None:
        key = (c.customer_id, c.id)
        if self.id_taken(c.id):
            raise AlreadyExists(f"campaign {c.id} already exists", metadata={"id": c.id})
        if request_id and (c.customer_id, request_id) in self.requests:
            raise Aborted("a concurrent request with this request_id", reason="CONCURRENT_REQUEST")
        self._check_unique(c)
        self.campaigns[key] = _copy(c)
        self.seq[key] = len(self.seq) + 1
        if request_id:
            self.requests[(c.customer_id, request_id)] = key

    def save(self, c: Campaign) -> None:
        self._check_unique(c)
        self.campaigns[(c.customer_id, c.id)] = _copy(c)

    def save_state(self, c: Campaign) -> None:
        stored = self.campaigns[(c.customer_id, c.id)]
        self.campaigns[(c.customer_id, c.id)] = dataclasses.replace(
            stored,
            status=c.status,
            stop_deadline=c.stop_deadline,
            finishing=c.finishing,
            tm_update=c.tm_update,
            tm_delete=c.tm_delete,
            version=c.version,
            revision=c.revision,
            stop_revision=c.stop_revision,
            last_reason=c.last_reason,
        )

    def supersede_body(self, c: Campaign, superseded_at: int) -> None:
        pass  # the fake keeps no bodies for the full view

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
        event = stamp_change(
            c,
            len(self.events) + 1,
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
        self.events.append(dataclasses.replace(event, campaign=None))
        return event


class FakeTransactions:
    """Runs each function at once, as one transaction of the store: a function that raises
    leaves the store as it found it."""

    def __init__(self, store: FakeStore) -> None:
        self._store = store

    async def run(self, fn: Callable[[], T]) -> T:
        before = self._store.state()
        try:
            return fn()
        except BaseException:
            self._store.restore(before)
            raise
