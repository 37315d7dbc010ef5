"""The Python client on a connection that went dead without a word: the silence bound and
the keepalive. (A watch against a server paused with SIGSTOP, and the caller's time with an
item: tests/client/test_watch_*_asyncio.py and their generated blocking twins.)"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import grpc
import pytest

from campaign_grpc.ops import server as server_module
from campaign_grpc.ops.grpc_options import grpc_options
from campaign_grpc.settings import Settings
from campaign_grpc_client import (
    AsyncCampaignClient,
    CampaignClient,
    CampaignServiceError,
    Retry,
)
from campaign_grpc_client._channel import KEEPALIVE_OPTIONS
from campaign_grpc_client._retry import CHANNEL_OPTIONS
from campaign_grpc_client._watch import Resume
from campaign_grpc_client.v1 import campaign_pb2 as pb
from factories import runnable_campaign

C = pb.Campaign
W = pb.WatchStatusResponse
QUICK = Retry(initial=0.05, maximum=0.3)


def change(m: Any) -> tuple[str, int, int]:
    return (m.campaign_id, m.status, m.revision)


# -- the silence bound and the keepalive, without a server --------------------------------


def test_a_stream_is_dead_after_three_of_the_intervals_it_announced() -> None:
    resume = Resume("", "", 0, heartbeats=False)
    assert resume.silence() == 30.0  # the server's default interval, until one is announced
    end = W(kind=W.KIND_SNAPSHOT_END, revision=4)
    end.heartbeat_interval.FromTimedelta(timedelta(milliseconds=300))
    resume.accept(end)
    assert resume.silence() == pytest.approx(0.9)
    resume.accept(W(kind=W.KIND_CHANGE, revision=5))  # a change names no interval
    assert resume.silence() == pytest.approx(0.9)
    assert Resume("", "", 0, heartbeats=False, silent_intervals=5).silence() == 50.0
    assert Resume("", "", 0, heartbeats=False, silent_intervals=None).silence() is None
    with pytest.raises(ValueError, match="silent_intervals"):
        Resume("", "", 0, heartbeats=False, silent_intervals=0)


def test_the_keepalive_never_earns_a_strike_from_our_server() -> None:
    client = dict(KEEPALIVE_OPTIONS)
    server = dict(grpc_options(Settings()))
    # With a call open the server takes a PING every min_ping_interval: the client's come
    # twice as far apart, so that timer slack never makes one early.
    assert (
        client["grpc.keepalive_time_ms"]
        >= 2 * server["grpc.http2.min_ping_interval_without_data_ms"]
    )
    # With no call open grpc core allows one PING in 2 h unless the server permits them:
    # ours does not, so the client sends none then.
    assert server.get("grpc.keepalive_permit_without_calls", 0) == 0
    assert client["grpc.keepalive_permit_without_calls"] == 0
    # A watch sends nothing after its request: the PINGs go on regardless.
    assert client["grpc.http2.max_pings_without_data"] == 0
    # A dead connection is given up on well before the server's own keepalive would.
    assert client["grpc.keepalive_time_ms"] + client["grpc.keepalive_timeout_ms"] <= 30_000


# Durations of the ping policy and the keepalive, divided alike so that the check takes
# seconds: what matters is their ratio, and grpc core's rules for PINGs without a call.
# (A client of grpc core PINGs once a second at most: the keepalive cannot be cut further.)
SCALE = 20
SCALED = (
    "grpc.http2.min_ping_interval_without_data_ms",
    "grpc.keepalive_time_ms",
    "grpc.keepalive_timeout_ms",
)


def scaled(options: list[tuple[str, int]]) -> list[tuple[str, int]]:
    return [(k, v // SCALE if k in SCALED else v) for k, v in options]


async def test_the_keepalive_earns_no_goaway_over_a_watch_and_an_idle_connection(
    start_server: Callable[..., Any],
    sqlite_url: str,
    customer: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(server_module, "grpc_options", lambda s: scaled(grpc_options(s)))
    # Heartbeats further apart than the PINGs, so that the client PINGs during the watch.
    settings = Settings(listen="127.0.0.1:0", database_url=sqlite_url, shutdown_grace=2)
    server = await start_server(settings, heartbeat_interval=30 / SCALE)
    keepalive = scaled(KEEPALIVE_OPTIONS)
    interval = dict(keepalive)["grpc.keepalive_time_ms"] / 1000
    errors: list[CampaignServiceError] = []
    retry = dataclasses.replace(QUICK, on_error=errors.append)
    target = f"127.0.0.1:{server.port}"
    channel = grpc.aio.insecure_channel(target, options=[*CHANNEL_OPTIONS, *keepalive])
    async with channel, AsyncCampaignClient(channel=channel, watch_retry=retry) as client:
        a = await client.create_campaign(runnable_campaign(customer))
        async with client.watch(customer, heartbeats=True) as watch:

            async def next_item() -> Any:
                return await asyncio.wait_for(anext(watch), 5)

            deadline = time.monotonic() + 3 * interval
            while time.monotonic() < deadline:  # the snapshot, then heartbeats
                await next_item()
            await client.update_campaign_status(customer, a.id, C.STATUS_RUN)
            while (item := await next_item()).kind == W.KIND_HEARTBEAT:
                pass
            assert change(item) == (a.id, C.STATUS_RUN, 2)
        assert errors == []
        # No call open for six keepalive intervals: a GOAWAY would take the channel out of
        # READY (to IDLE). A client that PINGed without a call would get one by then.
        assert channel.get_state() == grpc.ChannelConnectivity.READY
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(6 * interval):
                await channel.wait_for_state_change(grpc.ChannelConnectivity.READY)
        assert channel.get_state() == grpc.ChannelConnectivity.READY


def test_both_clients_make_their_channels_with_the_keepalive(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    made: list[list[tuple[str, Any]]] = []

    def record(real: Callable[..., Any]) -> Callable[..., Any]:
        def make(target: str, *args: Any, options: Any = None, **kwargs: Any) -> Any:
            made.append(list(options))
            return real(target, *args, options=options, **kwargs)

        return make

    monkeypatch.setattr(grpc, "insecure_channel", record(grpc.insecure_channel))
    monkeypatch.setattr(grpc.aio, "insecure_channel", record(grpc.aio.insecure_channel))
    with CampaignClient("127.0.0.1:1"):
        pass

    async def make_async() -> None:
        async with AsyncCampaignClient("127.0.0.1:1"):
            pass

    asyncio.run(make_async())
    assert len(made) == 2
    for options in made:
        assert set(KEEPALIVE_OPTIONS) <= set(options)
