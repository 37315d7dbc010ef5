"""Compaction of the event log: old events go, and a resume from them is told so, never skipped."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import grpc
import pytest

from campaign_grpc.domain.campaigns import Campaigns
from campaign_grpc.domain.errors import OutOfRange
from campaign_grpc.domain.types import Campaign, Status
from campaign_grpc.ops.compaction import Compactor
from campaign_grpc.ops.server import App
from campaign_grpc.settings import Settings
from campaign_grpc.storage.connect import close_database, open_database
from campaign_grpc.storage.read_lanes import Readers
from campaign_grpc.storage.store import Store
from campaign_grpc.storage.writer import Writer
from campaign_grpc.watch.hub import Hub
from campaign_grpc.watch.items import Item, Kind
from campaign_grpc_client.v1 import campaign_pb2 as pb
from campaign_grpc_client.v1 import campaign_pb2_grpc
from conftest import FakeClock
from e2e_helpers import create, details_of, eventually, set_status, watch
from factories import runnable_campaign, runnable_draft

HOUR = 3600.0


@dataclass
class Log:
    campaigns: Campaigns
    hub: Hub
    compactor: Compactor
    clock: FakeClock


@pytest.fixture
async def log(database_url: str, clock: FakeClock) -> AsyncIterator[Log]:
    """A domain, its hub and a compactor keeping one hour of events, on the test's clock."""
    db = open_database(database_url)
    store = Store(db)
    store.migrate()
    writer = Writer(db, journal=store)
    readers = Readers(db, 2)
    campaigns = Campaigns(store, writer, readers, stop_grace_s=60, clock=clock)
    hub = Hub(campaigns, heartbeat_interval=0.2)
    writer.on_commit = hub.publish
    await hub.start()
    # Small batches: a compaction of a few events already takes several writer jobs.
    compactor = Compactor(store, writer, clock, retention_s=HOUR, interval_s=HOUR, batch=3)
    try:
        yield Log(campaigns, hub, compactor, clock)
    finally:
        await hub.close()
        writer.close()
        readers.close()
        close_database(db)


async def run_and_stop(campaigns: Campaigns, c: Campaign) -> None:
    await campaigns.set_status(c.customer_id, c.id, Status.RUN, False)
    await campaigns.set_status(c.customer_id, c.id, Status.STOP, True)


async def resume(hub: Hub, customer: str, after_revision: int, count: int) -> list[Item]:
    """The first count changes of a watch resumed after after_revision."""
    items = []
    stream = hub.watch(customer, "", after_revision)
    try:
        async with asyncio.timeout(5):
            async for item in stream:
                if item.kind == Kind.CHANGE:
                    items.append(item)
                if len(items) == count:
                    return items
    finally:
        await stream.aclose()
    raise AssertionError("the watch ended")


async def test_events_older_than_the_retention_go_and_the_rest_stay(
    log: Log, customer: str
) -> None:
    old = await log.campaigns.create(runnable_draft(customer), "")
    await run_and_stop(log.campaigns, old)  # revisions 1 to 3, now older than an hour
    log.clock.advance(HOUR + 1)
    recent = await log.campaigns.create(runnable_draft(customer), "")
    await run_and_stop(log.campaigns, recent)  # revisions 4 to 6

    assert await log.compactor.compact() == 3
    assert await log.compactor.compact() == 0  # nothing more is old enough
    assert await log.campaigns.compacted_revision() == 3
    assert await log.campaigns.head_revision() == 6

    # From the first kept revision on, the log is complete.
    replayed = await resume(log.hub, customer, 3, 3)
    assert [i.revision for i in replayed] == [4, 5, 6]
    assert {i.event.campaign_id for i in replayed if i.event} == {recent.id}


async def test_a_resume_from_a_compacted_revision_is_out_of_range_and_says_from_where(
    log: Log, customer: str
) -> None:
    for _ in range(3):
        c = await log.campaigns.create(runnable_draft(customer), "")
        await run_and_stop(log.campaigns, c)  # 9 events, removed in batches of 3
    log.clock.advance(HOUR + 1)
    assert await log.compactor.compact() == 9

    for after in (1, 5, 8):
        with pytest.raises(OutOfRange) as raised:
            await resume(log.hub, customer, after, 1)
        assert raised.value.reason == "REVISION_COMPACTED"
        assert raised.value.metadata == {"compacted_revision": "9", "oldest_revision": "10"}

    # From the compacted revision itself nothing is missing: the next change follows.
    c = await log.campaigns.create(runnable_draft(customer), "")
    (created,) = await resume(log.hub, customer, 9, 1)
    assert (created.revision, created.event and created.event.campaign_id) == (10, c.id)


async def test_a_server_removes_old_events_and_a_resume_from_them_is_out_of_range(
    start_server: Callable[..., Any], settings: Settings, customer: str
) -> None:
    # Every event is older than the retention almost at once.
    app: App = await start_server(settings, event_retention=0.001, compaction_interval=0.05)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel:
        stub = campaign_pb2_grpc.CampaignServiceStub(channel)
        created = await create(stub, runnable_campaign(customer))
        await set_status(stub, customer, created.id, pb.Campaign.STATUS_RUN)  # revision 2

        async def compacted() -> bool:
            return await app.campaigns.compacted_revision() == 2

        await eventually(compacted)
        stream = watch(stub, customer, after_revision=1)
        try:
            with pytest.raises(grpc.aio.AioRpcError) as raised:
                await stream.next_change()
        finally:
            await stream.close()
        assert raised.value.code() == grpc.StatusCode.OUT_OF_RANGE
        info = details_of(raised.value).info
        assert info.reason == "REVISION_COMPACTED"
        assert dict(info.metadata) == {"compacted_revision": "2", "oldest_revision": "3"}


async def test_a_hub_that_falls_behind_compaction_ends_its_streams_out_of_range(
    log: Log, customer: str
) -> None:
    # Another server's hub: it learns of these events only from the log, read when woken.
    replica = Hub(log.campaigns, heartbeat_interval=HOUR, poll_interval=HOUR)
    await replica.start()
    stream = replica.watch(customer, "", 0)
    try:
        async with asyncio.timeout(5):
            assert (await anext(stream)).kind == Kind.SNAPSHOT_END
            c = await log.campaigns.create(runnable_draft(customer), "")
            await run_and_stop(log.campaigns, c)  # revisions 1 to 3
            log.clock.advance(HOUR + 1)
            assert await log.compactor.compact() == 3
            replica.wake()  # too late: the log starts after revision 3
            with pytest.raises(OutOfRange) as raised:
                await anext(stream)
        assert raised.value.reason == "REVISION_COMPACTED"
        assert raised.value.metadata == {"compacted_revision": "3", "oldest_revision": "4"}
        assert replica.subscriber_count == 0

        # The hub goes on from there: a new stream follows the next change.
        later = replica.watch(customer, "", 3)
        async with asyncio.timeout(5):
            created = await log.campaigns.create(runnable_draft(customer), "")
            replica.wake()
            item = await anext(later)
        assert (item.kind, item.revision) == (Kind.CHANGE, 4)
        assert item.event is not None
        assert item.event.campaign_id == created.id
        await later.aclose()
    finally:
        await stream.aclose()
        await replica.close()
