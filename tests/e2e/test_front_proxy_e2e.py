"""The shipped HAProxy configuration (deploy/haproxy) in front of a real server: calls, quiet
watch streams, error details and health pass through; a tenant over its limit is answered with
a gRPC status while others are served."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import subprocess
import time
from collections.abc import AsyncIterator, Awaitable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from campaign_grpc.settings import Settings
from campaign_grpc_client.v1 import campaign_pb2 as pb
from campaign_grpc_client.v1 import campaign_pb2_grpc
from e2e_helpers import Process, details_of, free_port, token_line, wait_serving
from factories import new_id, runnable_campaign
from hostile_peer import GET_CAMPAIGN, Peer
from toolchains import ROOT, missing_commands, require

CONFIG = ROOT / "deploy" / "haproxy" / "haproxy.cfg"
W = pb.WatchStatusResponse
# Per-token unary calls in flight the configuration allows (its `sc2_trackers gt 8`).
TOKEN_CALLS = 8
HEARTBEAT_S = 0.5


@dataclass
class Front:
    target: str  # the proxy's address
    tokens: dict[str, str]  # customer_id -> its token


def haproxy(listen: str, server: str, log: Path, *more: str) -> subprocess.Popen[bytes]:
    """HAProxy with the shipped configuration: server first, then the replicas in more."""
    others = {f"CAMPAIGN_GRPC_SERVER_{i}": address for i, address in enumerate(more, 2)}
    with log.open("wb") as out:
        return subprocess.Popen(
            ["haproxy", "-f", str(CONFIG)],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env={
                **os.environ,
                "CAMPAIGN_GRPC_PROXY_LISTEN": listen,
                "CAMPAIGN_GRPC_SERVER": server,
                **others,
            },
        )


@pytest.fixture
async def front(tmp_path: Path) -> AsyncIterator[Front]:
    require(missing_commands("haproxy"), "haproxy")
    tokens = {new_id(): os.urandom(16).hex() for _ in range(2)}
    tokens_file = tmp_path / "tokens.txt"
    tokens_file.write_text("".join(token_line(t, c) for c, t in tokens.items()))
    port, proxy_port = free_port(), free_port()
    server = Process(
        [
            "--listen", f"127.0.0.1:{port}",
            "--database-url", f"sqlite:///{tmp_path / 'campaigns.db'}",
            "--auth-tokens", str(tokens_file),
            "--heartbeat-interval", str(HEARTBEAT_S),
        ],
        tmp_path / "server.log",
    )  # fmt: skip
    proxy = None
    try:
        # The proxy's health checks would take a server still starting out for two seconds.
        await wait_serving(f"127.0.0.1:{port}", server)
        proxy = haproxy(f"127.0.0.1:{proxy_port}", f"127.0.0.1:{port}", tmp_path / "haproxy.log")
        await wait_serving(f"127.0.0.1:{proxy_port}", within=10)
        yield Front(f"127.0.0.1:{proxy_port}", tokens)
    finally:
        if proxy is not None:
            proxy.terminate()
            proxy.wait(10)
        server.terminate()
        await server.exit_code(within=15)
        server.kill()


def stub_of(channel: grpc.aio.Channel) -> campaign_pb2_grpc.CampaignServiceStub:
    return campaign_pb2_grpc.CampaignServiceStub(channel)


def bearer(token: str) -> tuple[tuple[str, str]]:
    return (("authorization", f"Bearer {token}"),)


def test_timeouts_outlast_a_quiet_watch() -> None:
    """Every timeout that can end a quiet stream is well above the default heartbeat period."""
    heartbeat = Settings().heartbeat_interval
    timeouts = dict(re.findall(r"^\s*timeout (client|server|http-keep-alive) (\d+)m$",
                               CONFIG.read_text(), re.M))  # fmt: skip
    assert set(timeouts) == {"client", "server", "http-keep-alive"}
    assert all(int(minutes) * 60 >= 10 * heartbeat for minutes in timeouts.values())


async def test_calls_errors_and_health_pass_through(front: Front) -> None:
    customer, other = list(front.tokens)
    async with grpc.aio.insecure_channel(front.target) as channel:
        stub = stub_of(channel)
        auth = bearer(front.tokens[customer])
        created = await stub.CreateCampaign(
            pb.CreateCampaignRequest(campaign=runnable_campaign(customer)), metadata=auth, timeout=5
        )
        got = await stub.GetCampaign(
            pb.GetCampaignRequest(customer_id=customer, id=created.campaign.id),
            metadata=auth,
            timeout=5,
        )
        assert got.campaign == created.campaign

        # The server's error details (grpc-status-details-bin) reach the client whole.
        with pytest.raises(grpc.aio.AioRpcError) as missing:
            await stub.GetCampaign(
                pb.GetCampaignRequest(customer_id=customer, id=new_id()), metadata=auth, timeout=5
            )
        assert missing.value.code() == grpc.StatusCode.NOT_FOUND
        assert details_of(missing.value).info.reason == "CAMPAIGN_NOT_FOUND"
        with pytest.raises(grpc.aio.AioRpcError) as denied:
            await stub.GetCampaign(
                pb.GetCampaignRequest(customer_id=other, id=created.campaign.id),
                metadata=auth,
                timeout=5,
            )
        assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert details_of(denied.value).info.reason == "CUSTOMER_NOT_ALLOWED"

        health = health_pb2_grpc.HealthStub(channel)
        for service in ("", "campaign.v1.CampaignService"):
            answer = await health.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
            assert answer.status == health_pb2.HealthCheckResponse.SERVING


async def test_quiet_watch_keeps_its_heartbeats(front: Front) -> None:
    """A watch with nothing to say lives on through the proxy, a heartbeat every half second,
    and still carries the next change."""
    customer = next(iter(front.tokens))
    auth = bearer(front.tokens[customer])
    async with grpc.aio.insecure_channel(front.target) as channel:
        stub = stub_of(channel)
        created = await stub.CreateCampaign(
            pb.CreateCampaignRequest(campaign=runnable_campaign(customer)), metadata=auth, timeout=5
        )
        call = stub.WatchStatus(pb.WatchStatusRequest(customer_id=customer), metadata=auth)
        stream = aiter(call)
        while (await asyncio.wait_for(anext(stream), 5)).kind != W.KIND_SNAPSHOT_END:
            pass
        heartbeats, start = [], time.monotonic()
        while time.monotonic() - start < 6:
            message = await asyncio.wait_for(anext(stream), 4 * HEARTBEAT_S)
            assert message.kind == W.KIND_HEARTBEAT, message
            heartbeats.append(time.monotonic())
        gaps = [b - a for a, b in zip([start, *heartbeats], heartbeats, strict=False)]
        assert len(heartbeats) >= 6
        assert max(gaps) < 4 * HEARTBEAT_S, gaps
        await stub.UpdateCampaignStatus(
            pb.UpdateCampaignStatusRequest(
                customer_id=customer, id=created.campaign.id, status=pb.Campaign.STATUS_RUN
            ),
            metadata=auth,
            timeout=5,
        )
        message = await asyncio.wait_for(anext(stream), 5)
        while message.kind == W.KIND_HEARTBEAT:
            message = await asyncio.wait_for(anext(stream), 5)
        assert message.kind == W.KIND_CHANGE
        assert message.status == pb.Campaign.STATUS_RUN
        call.cancel()


async def failure(call: Awaitable[Any]) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await call
    return raised.value


@pytest.fixture
def held_calls(front: Front) -> Iterator[Peer]:
    """One tenant's calls whose request never completes, as many as its limit allows in flight."""
    customer = next(iter(front.tokens))
    port = int(front.target.rsplit(":", 1)[1])
    peer = Peer(port)
    auth = ("authorization", f"Bearer {front.tokens[customer]}")
    streams = [peer.next_stream() for _ in range(TOKEN_CALLS)]
    peer.flush(b"".join(peer.headers(stream, GET_CAMPAIGN, auth) for stream in streams))
    try:
        yield peer
    finally:
        peer.close()


async def test_a_tenant_over_its_limit_is_refused_others_are_served(
    front: Front, held_calls: Peer
) -> None:
    customer, other = list(front.tokens)
    async with grpc.aio.insecure_channel(front.target) as channel:
        stub = stub_of(channel)
        request = pb.GetCampaignRequest(customer_id=customer, id=new_id())
        refused_at = time.monotonic()
        # The held calls reach the proxy just before these: until HAProxy counts them, a call
        # of the tenant still goes through (NOT_FOUND), for a moment bounded in time.
        while True:
            refused = await failure(
                stub.GetCampaign(request, metadata=bearer(front.tokens[customer]), timeout=5)
            )
            if refused.code() == grpc.StatusCode.RESOURCE_EXHAUSTED:
                break
            if time.monotonic() - refused_at > 3:
                break
            await asyncio.sleep(0.05)
        assert refused.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "this token" in (refused.details() or "")
        # Another tenant, from the same address, is answered by the server.
        with pytest.raises(grpc.aio.AioRpcError) as answered:
            await stub.GetCampaign(
                pb.GetCampaignRequest(customer_id=other, id=new_id()),
                metadata=bearer(front.tokens[other]),
                timeout=5,
            )
        assert answered.value.code() == grpc.StatusCode.NOT_FOUND
        health = health_pb2_grpc.HealthStub(channel)
        answer = await health.Check(health_pb2.HealthCheckRequest(), timeout=5)
        assert answer.status == health_pb2.HealthCheckResponse.SERVING

    # The requests that never completed are answered DEADLINE_EXCEEDED by the proxy after its
    # 5 s (wait-for-body).
    deadline = refused_at + 10
    while len(held_calls.statuses) < TOKEN_CALLS and time.monotonic() < deadline:
        held_calls.poll(0.2)
    assert list(held_calls.statuses.values()) == [grpc.StatusCode.DEADLINE_EXCEEDED.value[0]] * (
        TOKEN_CALLS
    )


def test_haproxy_config_is_valid() -> None:
    require(missing_commands("haproxy"), "haproxy")
    done = subprocess.run(
        [shutil.which("haproxy") or "haproxy", "-c", "-f", str(CONFIG)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Warnings were found" not in done.stdout + done.stderr
