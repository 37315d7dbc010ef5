# Generated from tests/client/test_watch_caller_time_asyncio.py
# by tools/unasync.py (`make unasync`): do not edit. Edit the asyncio source and run
# it again; `make lint` checks that this file is current.
"""The time a caller spends with a watch's item is not the server's silence."""

from __future__ import annotations

import dataclasses
import threading
import time

import pytest

from campaign_grpc.settings import Settings
from campaign_grpc_client import CampaignClient, CampaignServiceError, Retry
from campaign_grpc_client.v1 import campaign_pb2 as pb
from client_twins import Puller, Serving
from factories import runnable_campaign

# Each test serves on a real socket.
pytestmark = pytest.mark.e2e

C = pb.Campaign
W = pb.WatchStatusResponse
QUICK = Retry(initial=0.05, maximum=0.3)
HEARTBEAT = 0.3


def test_the_time_the_caller_spends_with_an_item_is_not_silence(
    settings: Settings, customer: str
) -> None:
    errors: list[CampaignServiceError] = []
    retry = dataclasses.replace(QUICK, on_error=errors.append)
    with (
        Serving(settings, heartbeat_interval=HEARTBEAT) as target,
        CampaignClient(target, watch_retry=retry) as client,
    ):
        a = client.create_campaign(runnable_campaign(customer))
        with (
            client.watch(customer, heartbeats=True) as watch,
            Puller(watch) as items,
        ):
            assert (items.next()).kind == W.KIND_SNAPSHOT
            assert (items.next()).kind == W.KIND_SNAPSHOT_END  # the interval is known now
            assert (items.next()).kind == W.KIND_HEARTBEAT
            # A dialer busy with an item for longer than three intervals.
            time.sleep(4 * HEARTBEAT)
            client.update_campaign_status(customer, a.id, C.STATUS_RUN)
            while (item := items.next()).kind == W.KIND_HEARTBEAT:
                pass
            assert (item.campaign_id, item.status, item.revision) == (a.id, C.STATUS_RUN, 2)
    assert errors == []
    # The blocking watch's silence thread ends with it; the asyncio one needs none.
    assert not [t for t in threading.enumerate() if t.name == "campaign-watch-silence"]
