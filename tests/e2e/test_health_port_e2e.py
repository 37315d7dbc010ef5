"""--health-listen: grpc.health.v1 alone, in plaintext and without tokens, for probes that speak
neither (Kubernetes' native gRPC probes), while the main port requires mutual TLS and a token."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from campaign_grpc.ops.ports import HEALTH_PORT_STREAMS
from campaign_grpc.ops.server import App
from campaign_grpc.settings import Settings
from campaign_grpc_client.v1 import campaign_pb2 as pb
from campaign_grpc_client.v1 import campaign_pb2_grpc
from certificates import Authority
from e2e_helpers import quick_settings, token_line
from factories import new_id

SERVICE = "campaign.v1.CampaignService"
Status = health_pb2.HealthCheckResponse


@pytest.fixture
def locked_down(tmp_path: Path, sqlite_url: str) -> Settings:
    """A main port only a client with a certificate of our CA and a token gets into."""
    ca = Authority(tmp_path, "ca")
    server = ca.issue("server", server=True)
    tokens = tmp_path / "tokens.txt"
    tokens.write_text(token_line("a0b1c2d3e4f5a6b7c8d9e0f1a2b3c4d5", "*"))
    return dataclasses.replace(
        quick_settings(sqlite_url),
        tls_cert=str(server.cert),
        tls_key=str(server.key),
        tls_client_ca=str(ca.ca.cert),
        auth_tokens=str(tokens),
        health_listen="127.0.0.1:0",
    )


async def check(channel: grpc.aio.Channel, service: str) -> int:
    stub = health_pb2_grpc.HealthStub(channel)
    answer = await stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
    return int(answer.status)


async def test_a_plaintext_probe_without_a_token_reads_health_on_the_health_port(
    start_server: Callable[..., App], locked_down: Settings
) -> None:
    app = await start_server(locked_down)
    assert app.health_port
    async with grpc.aio.insecure_channel(f"127.0.0.1:{app.health_port}") as probe:
        # Liveness and readiness, as the main port answers them.
        assert await check(probe, "") == Status.SERVING
        assert await check(probe, SERVICE) == Status.SERVING
        # Nothing but health: the campaigns stay behind TLS and tokens.
        stub = campaign_pb2_grpc.CampaignServiceStub(probe)
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await stub.GetCampaign(pb.GetCampaignRequest(customer_id=new_id(), id=new_id()))
        assert refused.value.code() == grpc.StatusCode.UNIMPLEMENTED
    # The main port still refuses a plaintext client.
    async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as plain:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await check(plain, "")
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE


async def test_a_probe_watching_the_health_port_hears_not_serving_when_the_server_stops(
    start_server: Callable[..., App], locked_down: Settings
) -> None:
    app = await start_server(locked_down)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{app.health_port}") as probe:
        stream = health_pb2_grpc.HealthStub(probe).Watch(
            health_pb2.HealthCheckRequest(service=SERVICE)
        )
        first = await asyncio.wait_for(stream.read(), 5)
        assert first.status == Status.SERVING
        stopping = asyncio.create_task(app.stop())
        heard = await asyncio.wait_for(stream.read(), 10)
        assert heard.status == Status.NOT_SERVING
        await asyncio.wait_for(stopping, 30)
        stream.cancel()


async def test_without_the_setting_there_is_no_health_port(
    start_server: Callable[..., App], sqlite_url: str
) -> None:
    app = await start_server(quick_settings(sqlite_url))
    assert app.health_port is None


async def test_the_health_port_serves_a_probe_s_few_streams_per_connection_not_thousands(
    start_server: Callable[..., App], locked_down: Settings
) -> None:
    app = await start_server(locked_down)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{app.health_port}") as probe:
        stub = health_pb2_grpc.HealthStub(probe)
        watches = [
            stub.Watch(health_pb2.HealthCheckRequest(service=SERVICE))
            for _ in range(HEALTH_PORT_STREAMS + 1)
        ]
        answered = await asyncio.gather(
            *(asyncio.wait_for(w.read(), 3) for w in watches), return_exceptions=True
        )
        served = [a for a in answered if not isinstance(a, BaseException)]
        # Past the port's cap, HTTP/2 holds the next stream back: it is not served meanwhile.
        assert len(served) == HEALTH_PORT_STREAMS
        assert all(a.status == Status.SERVING for a in served)
        for w in watches:
            w.cancel()
