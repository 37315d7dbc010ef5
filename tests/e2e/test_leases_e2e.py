"""Leases over a socket, on SQLite and PostgreSQL, as dialers meet them: each running
campaign held by one live dialer, balanced by capacity, moved on a join without overlap,
taken from a dialer that stops keeping alive, and a stale fencing token refused."""

from __future__ import annotations

import asyncio
import dataclasses
import time

import grpc
import pytest

from campaign_grpc.settings import Settings
from campaign_grpc_client.v1 import campaign_pb2 as pb
from campaign_grpc_client.v1 import campaign_pb2_grpc
from e2e_helpers import (
    Stream,
    create,
    details_of,
    eventually,
    fails,
    get,
    read_snapshot,
    set_status,
    until,
)
from factories import runnable_campaign
from lease_holders import Holder

Code = grpc.StatusCode
C = pb.Campaign
W = pb.WatchStatusResponse
Stub = campaign_pb2_grpc.CampaignServiceStub

TTL = 1.5

pytestmark = pytest.mark.timeout(90)


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return dataclasses.replace(settings, lease_ttl=TTL, stop_grace=30)


async def running(stub: Stub, customer: str, count: int) -> list[pb.Campaign]:
    made = []
    for _ in range(count):
        c = await create(stub, runnable_campaign(customer))
        made.append(await set_status(stub, customer, c.id, C.STATUS_RUN))
    return made


def holding(*holders: Holder) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for h in holders:
        for campaign_id in h.held:
            out.setdefault(campaign_id, []).append(h.holder)
    return out


async def test_running_campaigns_are_spread_over_the_dialers_each_held_once(
    stub: Stub, customer: str
) -> None:
    campaigns = await running(stub, customer, 6)
    a, b = Holder(stub, "dialer-a", capacity=10), Holder(stub, "dialer-b", capacity=10)
    await a.start()
    await b.start()
    try:

        async def spread() -> bool:
            held = holding(a, b)
            return len(held) == 6 and len(a.held) == 3 and len(b.held) == 3

        await eventually(spread, within=10)
        assert all(len(holders) == 1 for holders in holding(a, b).values())
        assert set(holding(a, b)) == {c.id for c in campaigns}
    finally:
        await a.stop()
        await b.stop()


async def test_a_joining_dialer_gets_campaigns_only_after_the_holder_lets_go(
    stub: Stub, customer: str
) -> None:
    await running(stub, customer, 4)
    a = Holder(stub, "dialer-a", capacity=10)
    await a.start()
    await until(lambda: len(a.held) == 4, within=10)
    a.releasing = False  # draining takes a while
    b = Holder(stub, "dialer-b", capacity=10)
    await b.start()
    try:
        await until(lambda: len(a.asked_to_release) == 2, within=10)
        await asyncio.sleep(3 * TTL / 3)  # b gets nothing while a drains
        assert not b.held
        assert len(a.held) == 4
        moving = sorted(a.asked_to_release)
        for campaign_id in moving:
            a.release(campaign_id)
        await until(lambda: sorted(b.held) == moving, within=10)
        assert len(a.held) == 2
        assert all(len(h) == 1 for h in holding(a, b).values())
    finally:
        await a.stop()
        await b.stop()


async def test_a_dialer_that_stops_keeping_alive_is_replaced_and_fenced(
    stub: Stub, customer: str
) -> None:
    (campaign,) = await running(stub, customer, 1)
    a = Holder(stub, "dialer-a")
    await a.start()
    await until(lambda: campaign.id in a.held, within=10)
    stale_token = a.held[campaign.id]
    b = Holder(stub, "dialer-b")
    await b.start()
    try:
        a.keeping_alive = False  # paused: SIGSTOP, a cut
        paused_at = time.monotonic()
        await until(lambda: campaign.id in b.held, within=TTL + 5)
        assert time.monotonic() - paused_at < TTL + 1.5
        assert b.held[campaign.id] > stale_token
        stopping = await set_status(stub, customer, campaign.id, C.STATUS_STOP)
        refused = await fails(
            stub.ConfirmDrained(
                pb.ConfirmDrainedRequest(
                    customer_id=customer,
                    id=campaign.id,
                    stop_revision=stopping.stop_revision,
                    fencing_token=stale_token,
                ),
                timeout=10,
            ),
            Code.FAILED_PRECONDITION,
        )
        assert refused.info.reason == "LEASE_NOT_HELD"
        assert refused.info.metadata["fencing_token"] == str(b.held[campaign.id])
        assert (await get(stub, customer, campaign.id)).status == C.STATUS_STOPPING
        confirm = pb.ConfirmDrainedRequest(
            customer_id=customer,
            id=campaign.id,
            stop_revision=stopping.stop_revision,
            fencing_token=b.held[campaign.id],
        )
        done = (await stub.ConfirmDrained(confirm, timeout=10)).campaign
        assert done.status == C.STATUS_STOP
        # A retry after a lost reply is answered as the first, even once the lease ended.
        await until(lambda: campaign.id not in b.held, within=10)
        assert (await stub.ConfirmDrained(confirm, timeout=10)).campaign.status == C.STATUS_STOP
        # The paused dialer, back: its session is gone.
        a.keeping_alive = True
        await until(lambda: a.done, within=10)
        assert a.ended is not None
        assert a.ended.code() == Code.FAILED_PRECONDITION
        assert details_of(a.ended).info.reason == "LEASE_SESSION_EXPIRED"
    finally:
        await a.stop()
        await b.stop()


async def test_a_reconnect_within_the_ttl_keeps_the_leases(stub: Stub, customer: str) -> None:
    await running(stub, customer, 2)
    a = Holder(stub, "dialer-a")
    await a.start()
    await until(lambda: len(a.held) == 2, within=10)
    before = dict(a.held)
    await a.stop()
    again = Holder(stub, "dialer-a")
    await again.start()
    try:
        await until(lambda: again.held == before, within=5)
    finally:
        await again.stop()


async def test_every_lease_change_is_an_event_with_its_holder(stub: Stub, customer: str) -> None:
    (campaign,) = await running(stub, customer, 1)
    a = Holder(stub, "dialer-a")
    await a.start()
    await until(lambda: campaign.id in a.held, within=10)
    await a.leave()
    page = await stub.ListCampaignEvents(
        pb.ListCampaignEventsRequest(customer_id=customer, campaign_id=campaign.id), timeout=10
    )
    leases = [(e.reason, e.lease.holder) for e in page.events if e.lease.holder]
    assert leases[:2] == [
        (W.REASON_LEASE_RELEASED, "dialer-a"),
        (W.REASON_LEASE_GRANTED, "dialer-a"),
    ]
    assert all(e.status == C.STATUS_RUN for e in page.events[:2])


async def test_a_stale_token_never_changes_the_campaign_report(stub: Stub, customer: str) -> None:
    (campaign,) = await running(stub, customer, 1)
    request = pb.ReportOutdialExhaustedRequest(
        customer_id=customer, id=campaign.id, fencing_token=7
    )
    refused = await fails(
        stub.ReportOutdialExhausted(request, timeout=10), Code.FAILED_PRECONDITION
    )
    assert refused.info.reason == "LEASE_NOT_HELD"
    after = await get(stub, customer, campaign.id)
    assert (after.status, after.etag) == (C.STATUS_RUN, campaign.etag)


async def test_a_watch_sees_lease_changes_only_when_it_asks(stub: Stub, customer: str) -> None:
    (campaign,) = await running(stub, customer, 1)
    plain = Stream(stub.WatchStatus(pb.WatchStatusRequest(customer_id=customer)))
    with_leases = Stream(
        stub.WatchStatus(pb.WatchStatusRequest(customer_id=customer, include_leases=True))
    )
    a = Holder(stub, "dialer-a")
    try:
        await read_snapshot(plain)
        _, head = await read_snapshot(with_leases)
        await a.start()
        granted = await with_leases.next_change()
        assert (granted.reason, granted.lease.holder) == (W.REASON_LEASE_GRANTED, "dialer-a")
        assert granted.status == C.STATUS_RUN
        await set_status(stub, customer, campaign.id, C.STATUS_STOP, force=True)
        stopped = await plain.next_change()
        assert (stopped.reason, stopped.status) == (W.REASON_REQUESTED, C.STATUS_STOP)
        # A resumed watch replays the same way: lease changes only when asked for.
        replay = Stream(
            stub.WatchStatus(pb.WatchStatusRequest(customer_id=customer, after_revision=head))
        )
        try:
            assert (await replay.next_change()).reason == W.REASON_REQUESTED
        finally:
            await replay.close()
    finally:
        await a.stop()
        await plain.close()
        await with_leases.close()


def _join(holder: str) -> pb.HoldLeasesRequest:
    return pb.HoldLeasesRequest(join=pb.HoldLeasesRequest.Join(holder=holder, capacity=1))


async def _ended_with(requests: list[pb.HoldLeasesRequest], stub: Stub) -> grpc.aio.AioRpcError:
    """Sends requests on a HoldLeases stream kept open, and reads until it ends."""

    async def stream():  # type: ignore[no-untyped-def]
        for r in requests:
            yield r
        await asyncio.sleep(30)

    call = stub.HoldLeases(stream(), timeout=10)

    async def read_to_the_end() -> None:
        while await call.read() is not grpc.aio.EOF:
            pass

    with pytest.raises(grpc.aio.AioRpcError) as ended:
        await read_to_the_end()
    return ended.value


async def test_a_stream_that_does_not_start_with_one_join_is_refused(stub: Stub) -> None:
    keep_alive = pb.HoldLeasesRequest(keep_alive=pb.HoldLeasesRequest.KeepAlive())
    for requests in ([keep_alive], [_join("twice"), _join("twice")]):
        refused = await _ended_with(requests, stub)
        assert refused.code() == Code.INVALID_ARGUMENT
        assert details_of(refused).fields == {"join"}


async def test_a_late_or_repeated_release_changes_nothing(stub: Stub, customer: str) -> None:
    (campaign,) = await running(stub, customer, 1)
    a = Holder(stub, "dialer-a")
    a.releasing = False
    await a.start()
    try:
        await until(lambda: campaign.id in a.held, within=10)
        token = a.held[campaign.id]
        a.release(campaign.id, token - 1)  # a token of an earlier grant: ignored
        a.release(campaign.id)
        a.release(campaign.id)  # a retry of the release: the lease is gone already
        # Let go, then granted again (the only dialer), one token up.
        await until(lambda: a.held.get(campaign.id) == token + 1, within=10)
        assert a.ended is None
        page = await stub.ListCampaignEvents(
            pb.ListCampaignEventsRequest(customer_id=customer, campaign_id=campaign.id),
            timeout=10,
        )
        leases = [(e.reason, e.lease.fencing_token) for e in page.events if e.lease.holder]
        assert leases == [
            (W.REASON_LEASE_GRANTED, token + 1),
            (W.REASON_LEASE_RELEASED, token),
            (W.REASON_LEASE_GRANTED, token),
        ]
    finally:
        await a.stop()
