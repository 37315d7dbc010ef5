"""TLS and mutual TLS over a socket, with certificates made for the test."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from campaign_grpc.ops.server import App
from campaign_grpc.settings import Settings
from campaign_grpc_client import TLS, AsyncCampaignClient, CampaignClient, exceptions
from certificates import Authority, Issued
from e2e_helpers import token_line
from factories import new_id, runnable_campaign

Code = grpc.StatusCode
CUSTOMER_TOKEN = "d2c4e6f8a0b1c3d5e7f9a1b2c3d4e5f6"


@dataclass(frozen=True)
class PKI:
    ca: Issued
    server: Issued
    client: Issued
    stranger: Issued  # a client certificate signed by another CA


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> PKI:
    directory = tmp_path_factory.mktemp("pki")
    ca = Authority(directory, "ca")
    other = Authority(directory, "other-ca")
    return PKI(
        ca.ca,
        ca.issue("server", server=True),
        ca.issue("client", server=False),
        other.issue("stranger", server=False),
    )


def tls_settings(settings: Settings, pki: PKI, *, client_ca: bool = False) -> Settings:
    return dataclasses.replace(
        settings,
        tls_cert=str(pki.server.cert),
        tls_key=str(pki.server.key),
        tls_client_ca=str(pki.ca.cert) if client_ca else "",
    )


async def check_health(channel: grpc.aio.Channel) -> int:
    answer = await health_pb2_grpc.HealthStub(channel).Check(
        health_pb2.HealthCheckRequest(), timeout=5
    )
    return int(answer.status)


async def test_a_tls_client_is_served_and_a_plaintext_one_is_not(
    start_server: Callable[..., Awaitable[App]], settings: Settings, pki: PKI, customer: str
) -> None:
    app = await start_server(tls_settings(settings, pki))
    target = f"127.0.0.1:{app.port}"
    trusted = TLS.from_files(root_ca=pki.ca.cert)

    async with AsyncCampaignClient(target, tls=trusted) as client:
        created = await client.create_campaign(runnable_campaign(customer))
        assert await client.get_campaign(customer, created.id) == created
    for host in ("127.0.0.1", "localhost"):
        with CampaignClient(f"{host}:{app.port}", tls=trusted) as blocking:
            found = await asyncio.to_thread(blocking.get_campaign, customer, created.id)
        assert found == created

    async with grpc.aio.secure_channel(target, trusted.credentials()) as channel:
        assert await check_health(channel) == health_pb2.HealthCheckResponse.SERVING
    async with grpc.aio.insecure_channel(target) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await check_health(channel)
        assert raised.value.code() == Code.UNAVAILABLE
    # The system's roots do not vouch for the test's CA.
    async with AsyncCampaignClient(target, tls=TLS(), retry=None) as untrusting:
        with pytest.raises(exceptions.Unavailable):
            await untrusting.get_campaign(customer, created.id)


async def test_mutual_tls_serves_only_clients_with_a_certificate_of_its_ca(
    start_server: Callable[..., Awaitable[App]], settings: Settings, pki: PKI, customer: str
) -> None:
    app = await start_server(tls_settings(settings, pki, client_ca=True))
    target = f"127.0.0.1:{app.port}"
    refused = [
        TLS.from_files(root_ca=pki.ca.cert),
        TLS.from_files(pki.ca.cert, pki.stranger.cert, pki.stranger.key),
    ]
    for tls in refused:
        async with AsyncCampaignClient(target, tls=tls, retry=None) as client:
            with pytest.raises(exceptions.Unavailable):
                await client.get_campaign(customer, new_id())

    known = TLS.from_files(pki.ca.cert, pki.client.cert, pki.client.key)
    async with AsyncCampaignClient(target, tls=known) as client:
        created = await client.create_campaign(runnable_campaign(customer))
        assert await client.get_campaign(customer, created.id) == created


def test_client_tls_options_are_checked_before_connecting(pki: PKI) -> None:
    with pytest.raises(ValueError, match="certificate needs its key"):
        CampaignClient("127.0.0.1:1", tls=TLS.from_files(pki.ca.cert, client_cert=pki.client.cert))
    with pytest.raises(ValueError, match="either credentials or tls"):
        CampaignClient("127.0.0.1:1", tls=TLS(), credentials=grpc.ssl_channel_credentials())
    with pytest.raises(ValueError, match="non-empty"):
        CampaignClient("127.0.0.1:1", token=" padded ")


async def test_tls_and_tokens_together(
    start_server: Callable[..., Awaitable[App]],
    settings: Settings,
    pki: PKI,
    tmp_path: Path,
    customer: str,
) -> None:
    tokens = tmp_path / "tokens.txt"
    tokens.write_text(token_line(CUSTOMER_TOKEN, customer))
    app = await start_server(tls_settings(settings, pki), auth_tokens=str(tokens))
    target = f"127.0.0.1:{app.port}"
    trusted = TLS.from_files(root_ca=pki.ca.cert)

    async with AsyncCampaignClient(target, tls=trusted, token=CUSTOMER_TOKEN) as client:
        created = await client.create_campaign(runnable_campaign(customer))
        with pytest.raises(exceptions.PermissionDenied):
            await client.get_campaign(new_id(), created.id)
    async with AsyncCampaignClient(target, tls=trusted, retry=None) as anonymous:
        with pytest.raises(exceptions.Unauthenticated):
            await anonymous.get_campaign(customer, created.id)
