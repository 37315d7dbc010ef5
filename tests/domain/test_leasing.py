"""Sessions and leases through the domain on a real SQLite file, with a clock the test moves:
a session's time to live, a take-over, a release, and the fencing check of a write."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from campaign_grpc.domain.campaigns import Campaigns
from campaign_grpc.domain.errors import FailedPrecondition, InvalidArgument
from campaign_grpc.domain.leasing import Leasing
from campaign_grpc.domain.types import EventFilter, Reason, Status
from campaign_grpc.storage.connect import close_database, open_database
from campaign_grpc.storage.read_lanes import Readers
from campaign_grpc.storage.store import Store
from campaign_grpc.storage.writer import Writer
from conftest import FakeClock
from factories import runnable_draft

TTL = 10.0


@pytest.fixture
async def both(sqlite_url: str, clock: FakeClock) -> AsyncIterator[tuple[Campaigns, Leasing]]:
    db = open_database(sqlite_url)
    store = Store(db)
    store.migrate()
    writer, readers = Writer(db, journal=store), Readers(db, 2)
    leasing = Leasing(store, writer, readers, clock=clock, ttl_s=TTL, release_grace_s=60)
    campaigns = Campaigns(
        store,
        writer,
        readers,
        clock=clock,
        fence=lambda c, t, n, changes: leasing.check_fence(c, t, n, changes=changes),
    )
    try:
        yield campaigns, leasing
    finally:
        writer.close()
        readers.close()
        close_database(db)


async def running(campaigns: Campaigns, customer: str) -> str:
    c = await campaigns.create(runnable_draft(customer), "")
    await campaigns.set_status(customer, c.id, Status.RUN, False)
    return c.id


async def test_a_join_is_checked(both: tuple[Campaigns, Leasing]) -> None:
    _, leasing = both
    for holder, customer, capacity in [
        ("", "", 1),
        ("x" * 129, "", 1),
        ("a", "", 0),
        ("a", "no", 1),
    ]:
        with pytest.raises(InvalidArgument):
            await leasing.join(holder, customer, capacity)


async def test_a_session_lives_for_its_ttl_and_a_keep_alive_extends_it(
    both: tuple[Campaigns, Leasing], clock: FakeClock, customer: str
) -> None:
    campaigns, leasing = both
    campaign_id = await running(campaigns, customer)
    joined = await leasing.join("a", "", 5)
    _, held, _ = await leasing.balance()
    (lease,) = held
    assert (lease.campaign_id, lease.holder, lease.token) == (campaign_id, "a", 1)
    clock.advance(TTL - 1)
    await leasing.keep_alive("a", joined.session.incarnation)
    clock.advance(TTL - 1)
    _, held, _ = await leasing.balance()
    assert [le.holder for le in held] == ["a"]
    clock.advance(1.5)
    with pytest.raises(FailedPrecondition) as expired:
        await leasing.keep_alive("a", joined.session.incarnation)
    assert expired.value.reason == "LEASE_SESSION_EXPIRED"
    sessions, held, _ = await leasing.balance()
    assert (sessions, held) == ([], [])
    page = await campaigns.list_events(EventFilter(customer, campaign_id), 10, "", full=False)
    assert [e.reason for e in page.events[:2]] == [Reason.LEASE_EXPIRED, Reason.LEASE_GRANTED]


async def test_a_second_stream_of_a_holder_takes_the_session_over_with_its_leases(
    both: tuple[Campaigns, Leasing], customer: str
) -> None:
    campaigns, leasing = both
    await running(campaigns, customer)
    first = await leasing.join("a", "", 5)
    await leasing.balance()
    second = await leasing.join("a", "", 5)
    assert [le.token for le in second.held] == [1]
    with pytest.raises(FailedPrecondition) as taken:
        await leasing.keep_alive("a", first.session.incarnation)
    assert taken.value.reason == "LEASE_SESSION_TAKEN_OVER"


async def test_only_the_live_token_confirms_and_a_repeat_after_the_lease_ended_is_answered(
    both: tuple[Campaigns, Leasing], customer: str
) -> None:
    campaigns, leasing = both
    campaign_id = await running(campaigns, customer)
    await leasing.join("a", "", 5)
    _, (lease,), _ = await leasing.balance()
    stopping = await campaigns.set_status(customer, campaign_id, Status.STOP, False)
    with pytest.raises(FailedPrecondition) as stale:
        await campaigns.confirm_drained(
            customer, campaign_id, stopping.stop_revision, fencing_token=lease.token + 1
        )
    assert (stale.value.reason, stale.value.metadata["fencing_token"]) == ("LEASE_NOT_HELD", "1")
    assert (await campaigns.get(customer, campaign_id)).status == Status.STOPPING
    done = await campaigns.confirm_drained(
        customer, campaign_id, stopping.stop_revision, fencing_token=lease.token
    )
    assert done.status == Status.STOP
    _, held, _ = await leasing.balance()
    assert held == []
    again = await campaigns.confirm_drained(
        customer, campaign_id, stopping.stop_revision, fencing_token=lease.token
    )
    assert again.version == done.version


async def test_a_release_ends_the_lease_and_the_next_grant_raises_the_token(
    both: tuple[Campaigns, Leasing], customer: str
) -> None:
    campaigns, leasing = both
    campaign_id = await running(campaigns, customer)
    a = await leasing.join("a", "", 5)
    await leasing.balance()
    await leasing.release("a", a.session.incarnation, campaign_id, 1)
    _, held, _ = await leasing.balance()
    assert [(le.holder, le.token) for le in held] == [("a", 2)]
