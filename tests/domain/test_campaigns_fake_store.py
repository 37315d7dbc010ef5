"""The domain's rules on an in-memory store (fake_store.py): what they decide does not
depend on the database, whose own tests run on SQLite and PostgreSQL."""

from __future__ import annotations

from typing import Any

import pytest

from campaign_grpc.domain.campaigns import Campaigns
from campaign_grpc.domain.errors import Aborted, AlreadyExists, FailedPrecondition
from campaign_grpc.domain.types import (
    Campaign,
    Event,
    ListFilter,
    NextCampaignResult,
    Reason,
    Status,
)
from conftest import FakeClock
from factories import new_id, runnable_draft
from fake_store import FakeStore, FakeTransactions

RUN, STOP, STOPPING = Status.RUN, Status.STOP, Status.STOPPING


@pytest.fixture
def store() -> FakeStore:
    return FakeStore()


@pytest.fixture
def domain(store: FakeStore, clock: FakeClock) -> Campaigns:
    transactions = FakeTransactions(store)
    return Campaigns(store, transactions, transactions, stop_grace_s=60, clock=clock)


async def create(domain: Campaigns, customer: str, **changes: Any) -> Campaign:
    return await domain.create(runnable_draft(customer, **changes), "")


def steps(events: list[Event]) -> list[tuple[str, Status, Status, Reason]]:
    return [(e.campaign_id, e.previous_status, e.status, e.reason) for e in events]


async def test_a_created_campaign_is_stopped_and_logged(domain: Campaigns, customer: str) -> None:
    c = await create(domain, customer)
    assert c.id
    assert c.status == STOP
    assert all(a.id for a in c.actions)
    assert await domain.get(customer, c.id) == c
    events = await domain.events_after(0, customer, "", 10)
    assert steps(events) == [(c.id, Status.UNSPECIFIED, STOP, Reason.CREATED)]
    assert c.revision == c.body_revision == events[0].revision


async def test_a_repeated_request_id_returns_the_first_campaign(
    domain: Campaigns, store: FakeStore, customer: str
) -> None:
    request_id = new_id()
    first = await domain.create(runnable_draft(customer), request_id)
    again = await domain.create(runnable_draft(customer), request_id)
    assert again.id == first.id
    assert len(store.events) == 1


async def test_an_id_is_one_across_customers(domain: Campaigns, customer: str) -> None:
    c = await create(domain, customer)
    with pytest.raises(AlreadyExists):
        await create(domain, new_id(), id=c.id)


async def test_a_refused_create_leaves_nothing_behind(
    domain: Campaigns, store: FakeStore, customer: str
) -> None:
    c = await create(domain, customer)
    with pytest.raises(FailedPrecondition) as refused:
        await create(domain, customer, outdial_id=c.outdial_id)
    assert refused.value.reason == "OUTDIAL_IN_USE"
    assert len(store.campaigns) == 1
    assert len(store.events) == 1


async def test_an_update_from_a_stale_etag_is_aborted(domain: Campaigns, customer: str) -> None:
    c = await create(domain, customer)
    updated = await domain.update(
        runnable_draft(customer, id=c.id, name="summer"), ["name"], c.etag
    )
    assert updated.name == "summer"
    assert updated.version == c.version + 1
    with pytest.raises(Aborted):
        await domain.update(runnable_draft(customer, id=c.id, name="autumn"), ["name"], c.etag)
    assert (await domain.get(customer, c.id)).name == "summer"


async def test_only_a_stopped_unreferenced_campaign_is_deleted(
    domain: Campaigns, customer: str
) -> None:
    following = await create(domain, customer)
    first = await create(domain, customer, next_campaign_id=following.id)
    with pytest.raises(FailedPrecondition) as referenced:
        await domain.delete(customer, following.id, "")
    assert referenced.value.reason == "CAMPAIGN_REFERENCED"
    await domain.set_status(customer, first.id, RUN, False)
    with pytest.raises(FailedPrecondition) as running:
        await domain.delete(customer, first.id, "")
    assert running.value.reason == "CAMPAIGN_NOT_STOPPED"
    await domain.set_status(customer, first.id, STOP, True)
    assert (await domain.delete(customer, first.id, "")).deleted
    assert (await domain.delete(customer, following.id, "")).deleted
    restored = await domain.undelete(customer, following.id)
    assert not restored.deleted
    assert restored.status == STOP


async def test_a_finished_campaign_starts_its_next_once_drained(
    domain: Campaigns, customer: str
) -> None:
    following = await create(domain, customer)
    first = await create(domain, customer, next_campaign_id=following.id)
    first = await domain.set_status(customer, first.id, RUN, False)
    mark = first.revision
    finishing = await domain.report_outdial_exhausted(customer, first.id)
    assert finishing.status == STOPPING
    assert finishing.stop_revision == finishing.revision
    done = await domain.confirm_drained(customer, first.id, finishing.stop_revision)
    assert done.status == STOP
    assert (await domain.get(customer, following.id)).status == RUN
    events = await domain.events_after(mark, customer, "", 10)
    assert steps(events) == [
        (first.id, RUN, STOPPING, Reason.FINISHED),
        (first.id, STOPPING, STOP, Reason.DRAINED),
        (following.id, STOP, RUN, Reason.CHAINED),
    ]
    assert events[1].next_campaign_result == NextCampaignResult.STARTED
    assert events[2].chained_from == first.id


async def test_the_grace_timer_completes_a_finished_campaign(
    domain: Campaigns, customer: str, clock: FakeClock
) -> None:
    c = await domain.set_status(customer, (await create(domain, customer)).id, RUN, False)
    await domain.report_outdial_exhausted(customer, c.id)
    assert await domain.next_stop_deadline() == clock.now + 60_000_000
    clock.advance(59)
    assert await domain.expire_stops() == 0
    clock.advance(2)
    assert await domain.expire_stops() == 1
    stopped = await domain.get(customer, c.id)
    assert stopped.status == STOP
    assert stopped.last_reason == Reason.GRACE_EXPIRED
    assert await domain.next_stop_deadline() is None


async def test_list_pages_walk_newest_first(domain: Campaigns, customer: str) -> None:
    made = [await create(domain, customer) for _ in range(5)]
    f = ListFilter(customer_id=customer)
    first = await domain.list_page(f, 3, "")
    rest = await domain.list_page(f, 3, first.next_page_token)
    listed = [c.id for c in [*first.campaigns, *rest.campaigns] if isinstance(c, Campaign)]
    assert listed == [c.id for c in reversed(made)]
    assert rest.next_page_token == ""
