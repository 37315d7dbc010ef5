"""Bearer tokens over a socket: who may call, for which customer, and what a refusal reveals."""

from __future__ import annotations

import asyncio
import functools
import hashlib
import signal
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import field_mask_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2

from campaign_grpc.ops.server import App
from campaign_grpc.settings import Settings
from campaign_grpc_client import AsyncCampaignClient, CampaignClient, Retry, exceptions
from campaign_grpc_client.v1 import campaign_pb2 as pb
from campaign_grpc_client.v1 import campaign_pb2_grpc
from client_helpers import Reader, ServerThread
from e2e_helpers import (
    Process,
    Stream,
    eventually,
    fails,
    free_port,
    read_snapshot,
    reflect,
    run,
    token_line,
    wait_serving,
)
from factories import new_id, runnable_campaign
from lease_holders import Holder

Code = grpc.StatusCode
C = pb.Campaign
W = pb.WatchStatusResponse
Stub = campaign_pb2_grpc.CampaignServiceStub
Metadata = tuple[tuple[str, str], ...]

CUSTOMER_TOKEN = "c8f1d0b6e5a4f3e2d1c0b9a8f7e6d5c4"
BACKEND_TOKEN = "b4a3f2e1d0c9b8a7f6e5d4c3b2a1f0e9"
NEW_TOKEN = "a0b1c2d3e4f5a6b7c8d9e0f1a2b3c4d5"


def bearer(token: str) -> Metadata:
    return (("authorization", f"Bearer {token}"),)


def write_tokens(path: Path, *lines: str) -> None:
    path.write_text("".join(lines))


@pytest.fixture
def other() -> str:
    """A second customer, whose campaigns the customer's token must not reach."""
    return new_id()


@pytest.fixture
def tokens_file(tmp_path: Path, customer: str) -> Path:
    path = tmp_path / "tokens.txt"
    write_tokens(
        path,
        "# the customer's portal, then the dialer\n",
        token_line(CUSTOMER_TOKEN, customer),
        token_line(BACKEND_TOKEN, "*"),
    )
    return path


@pytest.fixture
async def guarded(
    start_server: Callable[..., Awaitable[App]], settings: Settings, tokens_file: Path
) -> App:
    return await start_server(settings, auth_tokens=str(tokens_file))


@pytest.fixture
async def channel(guarded: App) -> Any:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{guarded.port}") as ch:
        yield ch


@pytest.fixture
def stub(channel: grpc.aio.Channel) -> Stub:
    return Stub(channel)


def watch(stub: Stub, metadata: Metadata, customer_id: str = "", campaign_id: str = "") -> Stream:
    request = pb.WatchStatusRequest(customer_id=customer_id, campaign_id=campaign_id)
    return Stream(stub.WatchStatus(request, metadata=metadata))


async def create(stub: Stub, metadata: Metadata, customer: str) -> pb.Campaign:
    request = pb.CreateCampaignRequest(campaign=runnable_campaign(customer))
    return (await stub.CreateCampaign(request, metadata=metadata, timeout=10)).campaign


async def get(stub: Stub, metadata: Metadata, customer: str, campaign_id: str) -> pb.Campaign:
    request = pb.GetCampaignRequest(customer_id=customer, id=campaign_id)
    return (await stub.GetCampaign(request, metadata=metadata, timeout=10)).campaign


def unary_calls(stub: Stub, customer: str, campaign_id: str) -> dict[str, Callable[..., Any]]:
    """Every unary RPC on one campaign of customer, each to call with metadata=."""
    campaign = C(customer_id=customer, id=campaign_id, name="renamed")
    mask = field_mask_pb2.FieldMask(paths=["name"])
    requests: dict[str, Any] = {
        "CreateCampaign": pb.CreateCampaignRequest(campaign=runnable_campaign(customer)),
        "GetCampaign": pb.GetCampaignRequest(customer_id=customer, id=campaign_id),
        "ListCampaigns": pb.ListCampaignsRequest(customer_id=customer),
        "UpdateCampaign": pb.UpdateCampaignRequest(campaign=campaign, update_mask=mask),
        "UpdateCampaignStatus": pb.UpdateCampaignStatusRequest(
            customer_id=customer, id=campaign_id, status=C.STATUS_RUN
        ),
        "ReportOutdialExhausted": pb.ReportOutdialExhaustedRequest(
            customer_id=customer, id=campaign_id
        ),
        "ConfirmDrained": pb.ConfirmDrainedRequest(
            customer_id=customer, id=campaign_id, stop_revision=1
        ),
        "ListCampaignEvents": pb.ListCampaignEventsRequest(
            customer_id=customer, campaign_id=campaign_id
        ),
        "DeleteCampaign": pb.DeleteCampaignRequest(customer_id=customer, id=campaign_id),
        "UndeleteCampaign": pb.UndeleteCampaignRequest(customer_id=customer, id=campaign_id),
    }
    return {
        name: functools.partial(getattr(stub, name), request, timeout=10)
        for name, request in requests.items()
    }


def test_the_unary_calls_cover_every_unary_rpc() -> None:
    service = pb.DESCRIPTOR.services_by_name["CampaignService"]
    unary = {m.name for m in service.methods if not m.server_streaming}
    assert set(unary_calls(Stub(grpc.insecure_channel("127.0.0.1:1")), new_id(), new_id())) == unary


# -- who is calling ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("metadata", "reason"),
    [
        ((), "TOKEN_MISSING"),
        ((("authorization", CUSTOMER_TOKEN),), "TOKEN_MALFORMED"),
        ((("authorization", f"Basic {CUSTOMER_TOKEN}"),), "TOKEN_MALFORMED"),
        (bearer(CUSTOMER_TOKEN[::-1]), "TOKEN_UNKNOWN"),
        (bearer(hashlib.sha256(CUSTOMER_TOKEN.encode()).hexdigest()), "TOKEN_UNKNOWN"),
    ],
    ids=["missing", "no-scheme", "basic", "unknown", "the-digest"],
)
async def test_a_call_without_a_known_token_is_unauthenticated(
    stub: Stub, customer: str, metadata: Metadata, reason: str
) -> None:
    for name, call in unary_calls(stub, customer, "not-a-uuid").items():
        details = await fails(call(metadata=metadata), Code.UNAUTHENTICATED)
        assert details.info.reason == reason, name
        assert CUSTOMER_TOKEN not in details.status.SerializeToString().decode(errors="replace")
        assert CUSTOMER_TOKEN[::-1] not in details.status.message

    stream = watch(stub, metadata, customer)
    try:
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await stream.next()
        assert raised.value.code() == Code.UNAUTHENTICATED
    finally:
        await stream.close()


async def test_a_request_that_does_not_parse_is_unauthenticated_without_a_token(
    channel: grpc.aio.Channel,
) -> None:
    """Without a token a caller learns nothing, not even that its bytes do not parse."""
    garbage = b"\xff\xff\xff"
    get = channel.unary_unary("/campaign.v1.CampaignService/GetCampaign")
    details = await fails(get(garbage, timeout=10), Code.UNAUTHENTICATED)
    assert details.info.reason == "TOKEN_MISSING"
    watch = channel.unary_stream("/campaign.v1.CampaignService/WatchStatus")
    details = await fails(watch(garbage, timeout=10).read(), Code.UNAUTHENTICATED)
    assert details.info.reason == "TOKEN_MISSING"

    details = await fails(
        get(garbage, metadata=bearer(CUSTOMER_TOKEN), timeout=10), Code.INVALID_ARGUMENT
    )
    assert details.info.reason == "MALFORMED_REQUEST"


async def test_health_and_reflection_answer_without_a_token(
    guarded: App, channel: grpc.aio.Channel
) -> None:
    health = health_pb2_grpc.HealthStub(channel)
    answer = await health.Check(health_pb2.HealthCheckRequest(), timeout=5)
    assert answer.status == health_pb2.HealthCheckResponse.SERVING

    (listed,) = await reflect(
        channel, "v1", [reflection_pb2.ServerReflectionRequest(list_services="")]
    )
    assert "campaign.v1.CampaignService" in {s.name for s in listed.list_services_response.service}


# -- for which customer -------------------------------------------------------------------


async def test_a_customer_token_may_make_every_call_for_its_customer(
    stub: Stub, customer: str
) -> None:
    own = bearer(CUSTOMER_TOKEN)
    stream = watch(stub, own, customer)
    try:
        assert await read_snapshot(stream) == ([], 0)
        created = await create(stub, own, customer)
        assert (await stream.next_change()).campaign_id == created.id

        calls = unary_calls(stub, customer, created.id)
        for name in ("GetCampaign", "ListCampaigns", "UpdateCampaign", "UpdateCampaignStatus"):
            await calls[name](metadata=own)
        finishing = (await calls["ReportOutdialExhausted"](metadata=own)).campaign
        await stub.ConfirmDrained(
            pb.ConfirmDrainedRequest(
                customer_id=customer, id=created.id, stop_revision=finishing.stop_revision
            ),
            metadata=own,
            timeout=10,
        )
        await stub.UpdateCampaignStatus(
            pb.UpdateCampaignStatusRequest(
                customer_id=customer, id=created.id, status=C.STATUS_STOP, force=True
            ),
            metadata=own,
            timeout=10,
        )
        await calls["DeleteCampaign"](metadata=own)
        restored = (await calls["UndeleteCampaign"](metadata=own)).campaign
        assert (restored.id, restored.name, restored.status) == (
            created.id,
            "renamed",
            C.STATUS_STOP,
        )
        await calls["CreateCampaign"](metadata=own)
    finally:
        await stream.close()


async def test_another_customer_is_refused_before_anything_about_the_campaign_is_told(
    stub: Stub, customer: str, other: str
) -> None:
    backend = bearer(BACKEND_TOKEN)
    theirs = await create(stub, backend, other)
    answers: dict[str, set[bytes]] = {}
    # Their campaign, an id that names none, an id that is not one: the same refusal.
    for campaign_id in (theirs.id, new_id(), "not-a-uuid"):
        for name, call in unary_calls(stub, other, campaign_id).items():
            details = await fails(call(metadata=bearer(CUSTOMER_TOKEN)), Code.PERMISSION_DENIED)
            assert details.info.reason == "CUSTOMER_NOT_ALLOWED"
            assert theirs.id not in details.status.message
            answers.setdefault(name, set()).add(details.status.SerializeToString())
        stream = watch(stub, bearer(CUSTOMER_TOKEN), other, campaign_id)
        try:
            with pytest.raises(grpc.aio.AioRpcError) as raised:
                await stream.next()
            assert raised.value.code() == Code.PERMISSION_DENIED
        finally:
            await stream.close()

    assert all(len(statuses) == 1 for statuses in answers.values()), answers
    assert await get(stub, backend, other, theirs.id) == theirs


async def test_a_token_for_every_customer_may_act_for_any(
    stub: Stub, customer: str, other: str
) -> None:
    backend = bearer(BACKEND_TOKEN)
    for who in (customer, other):
        created = await create(stub, backend, who)
        calls = unary_calls(stub, who, created.id)
        for name in ("GetCampaign", "ListCampaigns", "UpdateCampaign", "UpdateCampaignStatus"):
            await calls[name](metadata=backend)
        assert (await get(stub, backend, who, created.id)).status == C.STATUS_RUN


async def test_only_a_token_for_every_customer_may_watch_every_customer(
    stub: Stub, customer: str, other: str
) -> None:
    denied = watch(stub, bearer(CUSTOMER_TOKEN))
    everyone = watch(stub, bearer(BACKEND_TOKEN))
    try:
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await denied.next()
        assert raised.value.code() == Code.PERMISSION_DENIED

        await read_snapshot(everyone)
        mine = await create(stub, bearer(CUSTOMER_TOKEN), customer)
        theirs = await create(stub, bearer(BACKEND_TOKEN), other)
        seen = [(await everyone.next_change()).campaign_id for _ in range(2)]
        assert seen == [mine.id, theirs.id]
    finally:
        await denied.close()
        await everyone.close()


async def test_a_dialer_holds_only_the_campaigns_its_token_may_act_for(
    stub: Stub, customer: str, other: str
) -> None:
    for who, token in ((customer, CUSTOMER_TOKEN), (other, BACKEND_TOKEN)):
        created = await create(stub, bearer(token), who)
        await unary_calls(stub, who, created.id)["UpdateCampaignStatus"](metadata=bearer(token))
    for customer_id in ("", other):
        refused = Holder(stub, "nosy", customer_id=customer_id, metadata=bearer(CUSTOMER_TOKEN))
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await refused.start()
        assert raised.value.code() == Code.PERMISSION_DENIED
        await refused.stop()
    mine = Holder(stub, "portal-dialer", customer_id=customer, metadata=bearer(CUSTOMER_TOKEN))
    everyone = Holder(stub, "backend-dialer", metadata=bearer(BACKEND_TOKEN))
    await mine.start()
    try:
        await eventually(lambda: _holds(mine, 1), within=10)
        await everyone.start()
        await eventually(lambda: _holds(everyone, 1), within=10)
        (held,) = mine.held
        assert (await get(stub, bearer(CUSTOMER_TOKEN), customer, held)).customer_id == customer
        assert [m.lease.customer_id for m in mine.messages if m.lease.campaign_id] == [customer]
    finally:
        await mine.stop()
        await everyone.stop()


async def _holds(holder: Holder, count: int) -> bool:
    return len(holder.held) == count


async def test_reflection_is_closed_by_its_setting(
    start_server: Callable[..., Awaitable[App]], settings: Settings, tokens_file: Path
) -> None:
    app = await start_server(settings, auth_tokens=str(tokens_file), reflection=False)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as ch:
        for package in ("v1", "v1alpha"):
            # The status alone: a request written after the server refused the stream can
            # fail on the client's side first, with a status of the client's own making.
            call = ch.stream_stream(
                f"/grpc.reflection.{package}.ServerReflection/ServerReflectionInfo"
            )()
            try:
                assert await asyncio.wait_for(call.code(), 5) == Code.UNIMPLEMENTED
            finally:
                call.cancel()
        answer = await health_pb2_grpc.HealthStub(ch).Check(
            health_pb2.HealthCheckRequest(), timeout=5
        )
        assert answer.status == health_pb2.HealthCheckResponse.SERVING


# -- the Python client ---------------------------------------------------------------------


async def test_the_client_sends_its_token_on_every_call_and_every_watch_reconnect(
    start_server: Callable[..., Awaitable[App]],
    settings: Settings,
    tokens_file: Path,
    customer: str,
) -> None:
    first = await start_server(settings, auth_tokens=str(tokens_file))
    target = f"127.0.0.1:{first.port}"
    quick = Retry(initial=0.05, maximum=0.3)
    async with (
        AsyncCampaignClient(target, token=CUSTOMER_TOKEN, watch_retry=quick) as client,
        AsyncCampaignClient(target, retry=None) as anonymous,
    ):
        created = await client.create_campaign(runnable_campaign(customer))
        assert await client.get_campaign(customer, created.id) == created
        with pytest.raises(exceptions.Unauthenticated) as raised:
            await anonymous.get_campaign(customer, created.id)
        assert raised.value.reason == "TOKEN_MISSING"

        async with client.watch(customer) as changes, asyncio.timeout(30):
            while (await anext(changes)).kind != W.KIND_SNAPSHOT_END:
                pass
            await first.stop()
            await start_server(settings, auth_tokens=str(tokens_file), listen=target)
            await client.update_campaign_status(customer, created.id, C.STATUS_RUN)
            while (item := await anext(changes)).kind != W.KIND_CHANGE:
                pass
            assert (item.campaign_id, item.status) == (created.id, C.STATUS_RUN)


def test_the_blocking_client_sends_its_token_too(
    settings: Settings, tokens_file: Path, customer: str
) -> None:
    server = ServerThread(settings)
    try:
        server.start(auth_tokens=str(tokens_file))
        with (
            CampaignClient(server.target, token=CUSTOMER_TOKEN) as client,
            CampaignClient(server.target, token=BACKEND_TOKEN[::-1], retry=None) as stranger,
        ):
            created = client.create_campaign(runnable_campaign(customer))
            assert client.get_campaign(customer, created.id) == created
            with pytest.raises(exceptions.Unauthenticated) as raised:
                stranger.get_campaign(customer, created.id)
            assert raised.value.reason == "TOKEN_UNKNOWN"
            reader = Reader(client.watch(customer))
            try:
                assert reader.next().campaign_id == created.id
                assert reader.next().kind == W.KIND_SNAPSHOT_END
            finally:
                assert reader.close()
    finally:
        server.close()


# -- the token file, re-read on SIGHUP -------------------------------------------------------


async def test_sighup_reloads_the_tokens_and_keeps_open_calls(
    tmp_path: Path, database_url: str, tokens_file: Path, customer: str
) -> None:
    port = free_port()
    target = f"127.0.0.1:{port}"
    args = ["--listen", target, "--database-url", database_url, "--auth-tokens", str(tokens_file)]
    proc = Process(args, tmp_path / "server.log")
    try:
        await wait_serving(target, proc)  # health needs no token
        async with grpc.aio.insecure_channel(target) as ch:
            stub = Stub(ch)
            stream = watch(stub, bearer(CUSTOMER_TOKEN), customer)
            try:
                await read_snapshot(stream)
                write_tokens(tokens_file, token_line(NEW_TOKEN, customer))
                proc.proc.send_signal(signal.SIGHUP)

                async def reloaded() -> bool:
                    try:
                        await get(stub, bearer(NEW_TOKEN), customer, new_id())
                    except grpc.aio.AioRpcError as err:
                        return err.code() == Code.NOT_FOUND
                    return False

                await eventually(reloaded, within=10)
                details = await fails(
                    get(stub, bearer(CUSTOMER_TOKEN), customer, new_id()), Code.UNAUTHENTICATED
                )
                assert details.info.reason == "TOKEN_UNKNOWN"
                # The stream opened with the removed token carries on.
                created = await create(stub, bearer(NEW_TOKEN), customer)
                assert (await stream.next_change()).campaign_id == created.id

                write_tokens(tokens_file, token_line(NEW_TOKEN, customer), "oops\n")
                proc.proc.send_signal(signal.SIGHUP)
                await eventually(lambda: _logged(proc, "not reloaded"), within=10)
                assert f"{tokens_file} line 2" in proc.log
                assert (await get(stub, bearer(NEW_TOKEN), customer, created.id)).id == created.id
            finally:
                await stream.close()
        proc.terminate()
        assert await proc.exit_code(within=15) == 0, proc.log
    finally:
        proc.kill()


async def test_sighup_without_a_token_file_leaves_the_server_serving(
    tmp_path: Path, sqlite_url: str
) -> None:
    target = f"127.0.0.1:{free_port()}"
    proc = Process(["--listen", target, "--database-url", sqlite_url], tmp_path / "server.log")
    try:
        await wait_serving(target, proc)
        proc.proc.send_signal(signal.SIGHUP)
        await eventually(lambda: _logged(proc, "nothing to reload"), within=10)
        await wait_serving(target, proc)
        proc.terminate()
        assert await proc.exit_code(within=15) == 0, proc.log
    finally:
        proc.kill()


async def _logged(proc: Process, text: str) -> bool:
    return text in proc.log


def test_a_bad_token_file_stops_the_start_and_names_its_line(
    tmp_path: Path, tokens_file: Path
) -> None:
    tokens_file.write_text(tokens_file.read_text() + f"{BACKEND_TOKEN} *\n")
    url = f"sqlite:///{tmp_path / 'campaigns.db'}"
    args = ("--listen", "127.0.0.1:0", "--database-url", url, "--auth-tokens", str(tokens_file))

    code, out = run("serve", *args)

    assert code == 2, out
    assert f"--auth-tokens: {tokens_file} line 4: expected the token's SHA-256 digest" in out
    assert BACKEND_TOKEN not in out
    assert not (tmp_path / "campaigns.db").exists()

    code, out = run("check-config", *args)
    assert code == 1, out
    assert f"{tokens_file} line 4" in out
