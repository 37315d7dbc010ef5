"""The time a caller spends with a watch's item is not the server's silence."""

from __future__ import annotations

import asyncio
import dataclasses
import threading

import pytest

from campaign_grpc.settings import Settings
from campaign_grpc_client import AsyncCampaignClient, CampaignServiceError, Retry
from campaign_grpc_client.v1 import campaign_pb2 as pb
from client_twins import AsyncPuller, AsyncServing
from factories import runnable_campaign

# Each test serves on a real socket.
pytestmark = pytest.mark.e2e

C = pb.Campaign
W = pb.WatchStatusResponse
QUICK = Retry(initial=0.05, maximum=0.3)
HEARTBEAT = 0.3


async def test_the_time_the_caller_spends_with_an_item_is_not_silence(
    settings: Settings, customer: str
) -> None:
    errors: list[CampaignServiceError] = []
    retry = dataclasses.replace(QUICK, on_error=errors.append)
    async with (
        AsyncServing(settings, heartbeat_interval=HEARTBEAT) as target,
        AsyncCampaignClient(target, watch_retry=retry) as client,
    ):
        a = await client.create_campaign(runnable_campaign(customer))
        async with (
            client.watch(customer, heartbeats=True) as watch,
            AsyncPuller(watch) as items,
        ):
            assert (await items.next()).kind == W.KIND_SNAPSHOT
            assert (await items.next()).kind == W.KIND_SNAPSHOT_END  # the interval is known now
            assert (await items.next()).kind == W.KIND_HEARTBEAT
            # A dialer busy with an item for longer than three intervals.
            await asyncio.sleep(4 * HEARTBEAT)
            await client.update_campaign_status(customer, a.id, C.STATUS_RUN)
            while (item := await items.next()).kind == W.KIND_HEARTBEAT:
                pass
            assert (item.campaign_id, item.status, item.revision) == (a.id, C.STATUS_RUN, 2)
    assert errors == []
    # The blocking watch's silence thread ends with it; the asyncio one needs none.
    assert not [t for t in threading.enumerate() if t.name == "campaign-watch-silence"]
