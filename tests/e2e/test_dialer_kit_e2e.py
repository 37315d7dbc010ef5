"""The Python dialer kit (campaign_grpc_client.dialer) against a real server, on SQLite and
PostgreSQL: several dialers never dial one campaign at once; a dialer that dies is replaced
within the lease's ttl; a join moves campaigns without overlap; and the races that broke the
hand-written loops (a replayed stop called off since, a RUN during a drain, a stop made during
an outage, a crash between drain and confirm) leave the dialer running and right."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from collections.abc import AsyncIterator

import pytest

from campaign_grpc.ops.server import App
from campaign_grpc.settings import Settings
from campaign_grpc_client import AsyncCampaignClient
from campaign_grpc_client.dialer import Dialer
from campaign_grpc_client.v1 import campaign_pb2 as pb
from dial_log import DialLog, RecordingCalls
from e2e_helpers import eventually, until
from factories import runnable_campaign

C = pb.Campaign
TTL = 1.5

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return dataclasses.replace(settings, lease_ttl=TTL, stop_grace=60)


@pytest.fixture
async def client(server: App) -> AsyncIterator[AsyncCampaignClient]:
    async with AsyncCampaignClient(f"127.0.0.1:{server.port}") as c:
        yield c


@dataclasses.dataclass
class Running:
    dialer: Dialer
    calls: RecordingCalls
    task: asyncio.Task[None]

    async def kill(self, log: DialLog) -> None:
        """As kill -9: no drain, no release, no goodbye."""
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task
        log.close_all(self.dialer.holder)

    async def stop(self) -> None:
        await self.dialer.stop()
        async with asyncio.timeout(10):
            await self.task


def start(
    client: AsyncCampaignClient,
    log: DialLog,
    name: str,
    *,
    capacity: int = 100,
    drain_s: float = 0.0,
    holder: str | None = None,
) -> Running:
    calls = RecordingCalls(log, name, drain_s)
    dialer = Dialer(client, calls, holder=holder or name, capacity=capacity)
    return Running(dialer, calls, asyncio.create_task(dialer.run()))


async def running_campaigns(client: AsyncCampaignClient, customer: str, n: int) -> list[str]:
    ids = []
    for _ in range(n):
        c = await client.create_campaign(runnable_campaign(customer))
        await client.update_campaign_status(customer, c.id, C.STATUS_RUN)
        ids.append(c.id)
    return ids


async def stopped(client: AsyncCampaignClient, customer: str, campaign_id: str) -> bool:
    return (await client.get_campaign(customer, campaign_id)).status == C.STATUS_STOP


async def each_dialed_once(log: DialLog, ids: list[str]) -> bool:
    return all(len(log.dialing(i)) == 1 for i in ids)


async def test_three_dialers_share_the_campaigns_and_one_that_dies_is_replaced(
    client: AsyncCampaignClient, customer: str
) -> None:
    log = DialLog()
    ids = await running_campaigns(client, customer, 9)
    dialers = [start(client, log, f"dialer-{i}", capacity=5) for i in range(3)]
    try:
        await eventually(lambda: each_dialed_once(log, ids), within=15)
        killed = dialers[0]
        orphans = [i for i in ids if log.dialing(i) == [killed.dialer.holder]]
        await killed.kill(log)
        died = time.monotonic()
        await eventually(lambda: each_dialed_once(log, ids), within=TTL + 5)
        taken = [max(i.start for i in log.intervals if i.campaign_id == o) for o in orphans]
        assert max(taken) - died < TTL + 1
        assert log.overlaps() == []
    finally:
        for d in dialers[1:]:
            await d.stop()
    assert log.overlaps() == []


async def test_a_joining_dialer_takes_campaigns_only_after_their_drain(
    client: AsyncCampaignClient, customer: str
) -> None:
    log = DialLog()
    ids = await running_campaigns(client, customer, 4)
    first = start(client, log, "first", drain_s=0.3)
    await eventually(lambda: each_dialed_once(log, ids), within=15)
    second = start(client, log, "second", drain_s=0.3)
    try:

        async def shared() -> bool:
            return len([i for i in ids if log.dialing(i) == ["second"]]) == 2

        await eventually(shared, within=15)
        assert log.overlaps() == []
    finally:
        await second.stop()
        await first.stop()
    # Leaving drains: nobody dials once both are gone.
    assert all(log.dialing(i) == [] for i in ids)
    assert log.overlaps() == []


async def test_a_stop_is_drained_then_confirmed_with_the_lease_and_a_run_during_it_dials_again(
    client: AsyncCampaignClient, customer: str
) -> None:
    log = DialLog()
    (campaign_id,) = await running_campaigns(client, customer, 1)
    d = start(client, log, "dialer", drain_s=1.0)
    try:
        await until(lambda: log.dialing(campaign_id) == ["dialer"], within=15)
        await client.update_campaign_status(customer, campaign_id, C.STATUS_STOP)
        await asyncio.sleep(0.3)
        # A RUN while the drain is under way: its confirmation meets CAMPAIGN_NOT_STOPPING.
        await client.update_campaign_status(customer, campaign_id, C.STATUS_RUN)
        await until(lambda: log.dialing(campaign_id) == ["dialer"], within=10)
        stopping = await client.update_campaign_status(customer, campaign_id, C.STATUS_STOP)
        assert stopping.status == C.STATUS_STOPPING
        await eventually(lambda: stopped(client, customer, campaign_id), within=10)
        assert log.dialing(campaign_id) == []
        assert not d.task.done()
    finally:
        await d.stop()


async def test_a_restarted_dialer_confirms_the_drain_a_crash_left_unconfirmed(
    client: AsyncCampaignClient, customer: str
) -> None:
    log = DialLog()
    (campaign_id,) = await running_campaigns(client, customer, 1)
    crashing = start(client, log, "before-crash", drain_s=60)
    await until(lambda: log.dialing(campaign_id) == ["before-crash"], within=15)
    await client.update_campaign_status(customer, campaign_id, C.STATUS_STOP)
    await asyncio.sleep(0.5)  # the drain is under way when the process dies
    await crashing.kill(log)
    restarted = start(client, log, "after-crash")
    try:
        await eventually(lambda: stopped(client, customer, campaign_id), within=TTL + 10)
        events = await client.list_campaign_events(customer, campaign_id)
        drained = [e for e in events.events if e.reason == pb.WatchStatusResponse.REASON_DRAINED]
        assert drained, "completed by the stop grace, not by the restarted dialer"
    finally:
        await restarted.stop()


async def test_a_stop_made_while_the_dialer_was_away_is_never_dialed(
    start_server, settings: Settings, customer: str
) -> None:
    """The server restarts; meanwhile an operator stops a campaign. The resumed stream replays
    history first: the kit waits for its heartbeat and never starts the stopped campaign."""
    # A restart well within the ttl: the dialer keeps its leases across it.
    server = await start_server(settings, lease_ttl=10)
    port = server.port
    log = DialLog()
    async with AsyncCampaignClient(f"127.0.0.1:{port}") as client:
        ids = await running_campaigns(client, customer, 2)
        d = start(client, log, "dialer")
        try:
            await eventually(lambda: each_dialed_once(log, ids), within=15)
            await server.stop()
            # The operator's server is another one: the dialer's comes back only after.
            elsewhere = await start_server(settings, lease_ttl=10)
            async with AsyncCampaignClient(f"127.0.0.1:{elsewhere.port}") as operator:
                await operator.update_campaign_status(customer, ids[0], C.STATUS_STOP)
                await operator.update_campaign_status(customer, ids[0], C.STATUS_RUN)
                await operator.update_campaign_status(customer, ids[0], C.STATUS_STOP, force=True)
                # A stop the replay carries, called off by a RUN since: nothing to confirm.
                await operator.update_campaign_status(customer, ids[1], C.STATUS_STOP)
                await operator.update_campaign_status(customer, ids[1], C.STATUS_RUN)
            await start_server(settings, listen=f"127.0.0.1:{port}", lease_ttl=10)
            dials_before = d.calls.dials.count(ids[0])
            await until(lambda: log.dialing(ids[0]) == [], within=15)
            await asyncio.sleep(1.0)
            assert d.calls.dials.count(ids[0]) == dials_before
            assert log.dialing(ids[1]) == ["dialer"]
            assert [i.campaign_id for i in log.intervals].count(ids[1]) == 1, "drained"
            assert not d.task.done()
        finally:
            await d.stop()


async def test_a_second_process_with_the_same_identity_takes_over_and_the_first_stops(
    client: AsyncCampaignClient, customer: str
) -> None:
    log = DialLog()
    ids = await running_campaigns(client, customer, 2)
    first = start(client, log, "first", holder="one-identity")
    await eventually(lambda: each_dialed_once(log, ids), within=15)
    second = start(client, log, "second", holder="one-identity")
    try:
        async with asyncio.timeout(10):
            await first.task  # it drains and stops rather than take the session back
        await until(lambda: all(log.dialing(i) == ["second"] for i in ids), within=10)
        # Identities are meant to be unique: until the first learns of the take-over (a
        # pass of the balancer), both dial.
        for first_stretch, second_stretch in log.overlaps():
            assert (first_stretch.dialer, second_stretch.dialer) == ("first", "second")
            assert first_stretch.end - second_stretch.start < 1.0
    finally:
        await second.stop()
