"""clients/service_config.json: the retry policy any language's channel can take, as the
contract's traits make it, accepted by grpc core, and retrying what it says and nothing else."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import grpc
import pytest

import campaign_grpc_client
from campaign_grpc import service_config
from campaign_grpc_client.methods import METHODS
from campaign_grpc_client.v1 import campaign_pb2 as pb
from campaign_grpc_client.v1 import campaign_pb2_grpc
from e2e_helpers import quick_settings
from factories import runnable_campaign

ROOT = Path(__file__).resolve().parents[2]
FILE = ROOT / "clients" / "service_config.json"
SERVICE = "campaign.v1.CampaignService"

# Retried by the channel: the unary reads and the unary methods retry_safe as they are. Not the
# writes safe only with a request field set (the channel cannot see it), nor the streams.
RETRIED = {
    "GetCampaign",
    "ListCampaigns",
    "ListCampaignEvents",
    "UndeleteCampaign",
    "UpdateCampaignStatus",
    "ConfirmDrained",
    "ReportOutdialExhausted",
}
NOT_RETRIED = {"CreateCampaign", "UpdateCampaign", "DeleteCampaign"}
UNARY = RETRIED | NOT_RETRIED


def config_text() -> str:
    return FILE.read_text()


def options(text: str) -> list[tuple[str, Any]]:
    return [("grpc.service_config", text), ("grpc.enable_retries", 1)]


def test_the_file_is_what_the_generator_makes() -> None:
    assert config_text() == service_config.render()
    assert service_config.main([str(FILE), "--check"]) == 0


def test_the_python_client_gives_its_copy_to_a_plain_channel() -> None:
    assert campaign_grpc_client.service_config() == service_config.render()


def test_check_fails_on_a_stale_file(tmp_path: Path) -> None:
    stale = tmp_path / "service_config.json"
    assert service_config.main([str(stale), "--check"]) == 1
    stale.write_text(config_text().replace('"maxAttempts": 5', '"maxAttempts": 4'))
    assert service_config.main([str(stale), "--check"]) == 1
    assert service_config.main([str(stale)]) == 0
    assert stale.read_text() == config_text()


def test_the_file_retries_what_the_contract_says_is_safe_as_it_is() -> None:
    (method_config,) = json.loads(config_text())["methodConfig"]
    names = method_config["name"]
    assert {n["service"] for n in names} == {SERVICE}
    assert {n["method"] for n in names} == RETRIED
    assert len(names) == len(RETRIED)
    assert method_config["retryPolicy"] == {
        "maxAttempts": 5,
        "initialBackoff": "0.1s",
        "maxBackoff": "2s",
        "backoffMultiplier": 2,
        "retryableStatusCodes": ["UNAVAILABLE"],
    }
    # The same from the traits themselves, so that a new method lands on the right side.
    unary = {m.name for m in METHODS.values() if not m.streaming}
    assert unary == UNARY
    assert {m.name for m in METHODS.values() if m.name in unary and m.retry_safe} == RETRIED


async def test_grpc_core_takes_it_on_a_channel_to_the_server(  # type: ignore[no-untyped-def]
    start_server, sqlite_url: str, customer: str
) -> None:
    app = await start_server(quick_settings(sqlite_url))
    target = f"127.0.0.1:{app.port}"
    async with grpc.aio.insecure_channel(target, options=options(config_text())) as channel:
        stub = campaign_pb2_grpc.CampaignServiceStub(channel)
        created = await stub.CreateCampaign(
            pb.CreateCampaignRequest(campaign=runnable_campaign(customer)), timeout=10
        )
        got = await stub.GetCampaign(
            pb.GetCampaignRequest(customer_id=customer, id=created.campaign.id), timeout=10
        )
        assert got.campaign.id == created.campaign.id
    # grpc core checks the config: one it refuses fails every call of the channel.
    broken = options(config_text().replace('"maxBackoff"', '"maximumBackoff"'))
    async with grpc.aio.insecure_channel(target, options=broken) as channel:
        stub = campaign_pb2_grpc.CampaignServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as error:
            await stub.GetCampaign(pb.GetCampaignRequest(customer_id=customer, id="x"), timeout=10)
        assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "retryPolicy.maxBackoff" in (error.value.details() or "")


class Flaky:
    """A server of every unary method that answers UNAVAILABLE to a method's first `failures`
    calls, then OK with an empty response, and counts the calls of each method."""

    def __init__(self) -> None:
        self.failures = 0
        self.calls: dict[str, int] = {}

    def handler(self, name: str) -> grpc.RpcMethodHandler:
        async def unary(request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
            self.calls[name] = self.calls.get(name, 0) + 1
            if self.calls[name] <= self.failures:
                await context.abort(grpc.StatusCode.UNAVAILABLE, "try again")
            return b""

        return grpc.unary_unary_rpc_method_handler(unary)


@pytest.fixture
async def flaky() -> AsyncIterator[tuple[Flaky, str]]:
    state = Flaky()
    server = grpc.aio.server()
    server.add_generic_rpc_handlers(
        [grpc.method_handlers_generic_handler(SERVICE, {n: state.handler(n) for n in UNARY})]
    )
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    yield state, f"127.0.0.1:{port}"
    await server.stop(None)


def call(channel: grpc.aio.Channel, name: str) -> Awaitable[bytes]:
    method: Callable[..., Awaitable[bytes]] = channel.unary_unary(f"/{SERVICE}/{name}")
    return method(b"", timeout=10)


async def test_a_plain_channel_retries_unavailable_only_where_it_is_safe(
    flaky: tuple[Flaky, str],
) -> None:
    state, target = flaky
    state.failures = 2
    async with grpc.aio.insecure_channel(target, options=options(config_text())) as channel:
        for name in sorted(UNARY):
            if name in RETRIED:
                assert await call(channel, name) == b""
            else:
                with pytest.raises(grpc.aio.AioRpcError) as error:
                    await call(channel, name)
                assert error.value.code() == grpc.StatusCode.UNAVAILABLE
    assert state.calls == {n: 3 if n in RETRIED else 1 for n in UNARY}


async def test_a_plain_channel_gives_up_after_five_attempts(flaky: tuple[Flaky, str]) -> None:
    state, target = flaky
    state.failures = 100
    async with grpc.aio.insecure_channel(target, options=options(config_text())) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as error:
            await call(channel, "GetCampaign")
    assert error.value.code() == grpc.StatusCode.UNAVAILABLE
    assert state.calls == {"GetCampaign": 5}


async def test_without_it_a_plain_channel_does_not_retry(flaky: tuple[Flaky, str]) -> None:
    state, target = flaky
    state.failures = 1
    async with grpc.aio.insecure_channel(target) as channel:
        with pytest.raises(grpc.aio.AioRpcError):
            await call(channel, "GetCampaign")
    assert state.calls == {"GetCampaign": 1}
