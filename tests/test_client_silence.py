"""The Python client on a connection that went dead without a word: a server paused with
SIGSTOP, as a half-open TCP connection or a NAT that forgot the flow would leave it."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import grpc
import pytest

from campaign_grpc.client import AsyncCampaignClient, CampaignClient
from campaign_grpc.client._channel import KEEPALIVE_OPTIONS
from campaign_grpc.ops.server import grpc_options
from campaign_grpc.settings import Settings

# -- the keepalive, without a server ------------------------------------------------------


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
