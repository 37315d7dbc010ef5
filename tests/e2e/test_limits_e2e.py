"""The server's limits over a real socket: past each one a call is refused at once with
RESOURCE_EXHAUSTED and its reason, and the server goes on serving and stays healthy."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from campaign_grpc.ops.server import App
from campaign_grpc.settings import Settings
from campaign_grpc_client.v1 import campaign_pb2 as pb
from campaign_grpc_client.v1 import campaign_pb2_grpc
from e2e_helpers import create, eventually, fails, get, read_snapshot, watch, writes_held
from factories import new_id, runnable_campaign

Code = grpc.StatusCode
Stub = campaign_pb2_grpc.CampaignServiceStub
SERVING = health_pb2.HealthCheckResponse.SERVING


@contextlib.asynccontextmanager
async def connected(app: App) -> AsyncIterator[tuple[Stub, health_pb2_grpc.HealthStub]]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel:
        yield Stub(channel), health_pb2_grpc.HealthStub(channel)


async def serves_on(stub: Stub, health: health_pb2_grpc.HealthStub, customer: str) -> None:
    """The server is healthy and still carries out a write and a read."""
    answer = await health.Check(health_pb2.HealthCheckRequest(), timeout=5)
    assert answer.status == SERVING
    created = await create(stub, runnable_campaign(customer))
    assert (await get(stub, customer, created.id)).id == created.id


async def never_written(stub: Stub, customer: str, campaign_id: str) -> None:
    await fails(
        stub.GetCampaign(pb.GetCampaignRequest(customer_id=customer, id=campaign_id)),
        Code.NOT_FOUND,
    )


def create_call(stub: Stub, campaign: pb.Campaign, timeout: float = 10) -> Any:
    return stub.CreateCampaign(pb.CreateCampaignRequest(campaign=campaign), timeout=timeout)


# -- request size ---------------------------------------------------------------------------


def campaign_of_size(customer: str, approx_bytes: int) -> pb.Campaign:
    campaign = runnable_campaign(customer, id=new_id())
    campaign.actions[1].option.update({"text": "x" * approx_bytes})
    return campaign


async def test_a_request_over_the_size_limit_is_refused_with_details(
    start_server: Callable[..., Any], settings: Settings, customer: str
) -> None:
    server = await start_server(settings, max_request_bytes=4096)
    async with connected(server) as (stub, health):
        too_large = campaign_of_size(customer, 5000)

        refused = await fails(create_call(stub, too_large), Code.RESOURCE_EXHAUSTED)

        assert refused.info.reason == "REQUEST_TOO_LARGE"
        assert refused.info.metadata["limit"] == "4096"
        assert int(refused.info.metadata["request_bytes"]) > 4096
        assert refused.quota_subjects == {"request"}
        await never_written(stub, customer, too_large.id)
        await create(stub, campaign_of_size(customer, 3000))
        await serves_on(stub, health, customer)


async def test_a_request_over_the_hard_ceiling_is_refused_and_the_server_serves_on(
    start_server: Callable[..., Any], settings: Settings, customer: str
) -> None:
    server = await start_server(settings, max_request_bytes=4096)
    async with connected(server) as (stub, health):
        huge = campaign_of_size(customer, 3 * 4096)

        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await create_call(stub, huge)

        assert raised.value.code() == Code.RESOURCE_EXHAUSTED
        await never_written(stub, customer, huge.id)
        await serves_on(stub, health, customer)


# -- watch streams --------------------------------------------------------------------------


async def test_a_watch_past_the_server_limit_is_refused_until_one_closes(
    start_server: Callable[..., Any], settings: Settings, customer: str
) -> None:
    server = await start_server(settings, max_watch_streams=3, max_watch_streams_per_customer=3)
    async with connected(server) as (stub, health):
        streams = [watch(stub, new_id()) for _ in range(3)]
        try:
            for stream in streams:
                await read_snapshot(stream)
            refused = watch(stub, customer)
            streams.append(refused)

            # The refusal is the stream's first and only message: no snapshot is read for it.
            details = await fails(refused.next(), Code.RESOURCE_EXHAUSTED)
            assert details.info.reason == "TOO_MANY_WATCH_STREAMS"
            assert details.info.metadata["limit"] == "3"
            assert details.quota_subjects == {"server"}
            await serves_on(stub, health, customer)

            await streams[0].close()

            async def slot_free() -> bool:
                return server.hub.streams.total == 2

            await eventually(slot_free)
            streams.append(watch(stub, customer))
            await read_snapshot(streams[-1])
        finally:
            for stream in streams:
                await stream.close()

        async def none_left() -> bool:
            return server.hub.streams.total == 0

        await eventually(none_left)


async def test_a_customer_past_its_watch_limit_is_refused_and_others_are_not(
    start_server: Callable[..., Any], settings: Settings, customer: str
) -> None:
    server = await start_server(settings, max_watch_streams_per_customer=2)
    async with connected(server) as (stub, health):
        streams = [watch(stub, customer), watch(stub, customer, after_revision=0)]
        try:
            for stream in streams:
                await read_snapshot(stream)

            streams.append(watch(stub, customer))
            details = await fails(streams[-1].next(), Code.RESOURCE_EXHAUSTED)
            assert details.info.reason == "TOO_MANY_WATCH_STREAMS_FOR_CUSTOMER"
            assert dict(details.info.metadata) == {"limit": "2", "customer_id": customer}
            assert details.quota_subjects == {f"customer_id:{customer}"}

            # Another customer, and the watches of all customers, have slots of their own.
            others = [watch(stub, new_id()), watch(stub), watch(stub)]
            streams += others
            for stream in others:
                await read_snapshot(stream)
            streams.append(watch(stub))
            details = await fails(streams[-1].next(), Code.RESOURCE_EXHAUSTED)
            assert details.info.reason == "TOO_MANY_WATCH_STREAMS_FOR_CUSTOMER"
            assert details.quota_subjects == {"all customers"}

            await serves_on(stub, health, new_id())
            await streams[0].close()

            async def slot_free() -> bool:
                return server.hub.streams.held_by(customer) == 1

            await eventually(slot_free)
            streams.append(watch(stub, customer))
            await read_snapshot(streams[-1])
        finally:
            for stream in streams:
                await stream.close()


async def test_one_client_holds_its_customer_s_watches_and_its_calls_on_one_connection(
    start_server: Callable[..., Any], settings: Settings, customer: str
) -> None:
    # The defaults, but fewer watches per customer: past the connection's cap a client's
    # HTTP/2 layer would queue its calls, every unary one after them included.
    held = 1_100
    # Health checks the database every 2 s, as by default: at 0.2 s one would time out
    # behind the snapshots of a thousand streams opening at once on a busy test machine.
    # The default heartbeat too: opening a thousand streams keeps the event loop busy, and on a
    # busy machine the tests' 0.5 s (whose log, unread for two intervals, ends the streams)
    # ended them before the last had opened.
    server = await start_server(
        settings, max_watch_streams_per_customer=held, health_interval=2, heartbeat_interval=10
    )
    assert held > 1_000  # the connection's cap before it was checked against this
    async with connected(server) as (stub, health):
        streams = [watch(stub, customer) for _ in range(held)]
        try:

            async def all_open() -> bool:
                return server.hub.streams.held_by(customer) == held

            await eventually(all_open, within=60)
            # On the same connection: past the customer's limit a watch is refused, not
            # queued, and unary calls still run.
            streams.append(watch(stub, customer))
            details = await fails(streams[-1].next(within=10), Code.RESOURCE_EXHAUSTED)
            assert details.info.reason == "TOO_MANY_WATCH_STREAMS_FOR_CUSTOMER"
            await serves_on(stub, health, customer)
        finally:
            for stream in streams:
                await stream.close()


# -- unary calls in flight ------------------------------------------------------------------


async def test_a_call_past_the_in_flight_limit_is_refused_at_once_but_health_is_not(
    start_server: Callable[..., Any], settings: Settings, customer: str
) -> None:
    server = await start_server(
        settings,
        max_unary_in_flight=2,
        max_unary_writes_in_flight=2,
        max_unary_in_flight_per_customer=2,
    )
    async with connected(server) as (stub, health):
        # Open streams are not unary calls in flight.
        streams = [watch(stub, customer), watch(stub, customer)]
        try:
            for stream in streams:
                await read_snapshot(stream)
            with writes_held(settings.database_url):
                waiting = [
                    asyncio.ensure_future(create_call(stub, runnable_campaign(customer)))
                    for _ in range(2)
                ]

                async def both_waiting() -> bool:
                    return server.unary_calls_in_flight == 2

                await eventually(both_waiting)

                # Refused while the writer is still held: the call did not wait for it.
                refused = await fails(
                    create_call(stub, runnable_campaign(customer)), Code.RESOURCE_EXHAUSTED
                )
                assert refused.info.reason == "TOO_MANY_CALLS_IN_FLIGHT"
                assert refused.info.metadata["limit"] == "2"
                assert refused.quota_subjects == {"server"}
                answer = await health.Check(health_pb2.HealthCheckRequest(), timeout=5)
                assert answer.status == SERVING
                assert not any(call.done() for call in waiting)

            for response in await asyncio.wait_for(asyncio.gather(*waiting), 10):
                assert (await get(stub, customer, response.campaign.id)).id
            await serves_on(stub, health, customer)
        finally:
            for stream in streams:
                await stream.close()


# -- deadlines ------------------------------------------------------------------------------


async def test_a_deadline_that_passes_while_waiting_for_the_writer_leaves_nothing_written(
    start_server: Callable[..., Any], settings: Settings, customer: str
) -> None:
    server = await start_server(settings)
    async with connected(server) as (stub, health):
        late = runnable_campaign(customer, id=new_id())
        with writes_held(settings.database_url):
            first = asyncio.ensure_future(create_call(stub, runnable_campaign(customer)))

            async def writer_busy() -> bool:
                return server.unary_calls_in_flight == 1

            await eventually(writer_busy)

            with pytest.raises(grpc.aio.AioRpcError) as raised:
                await create_call(stub, late, timeout=0.3)
            assert raised.value.code() == Code.DEADLINE_EXCEEDED

            # Its handler has ended on the server too: only the first call is left.
            await eventually(writer_busy)

        assert (await asyncio.wait_for(first, 10)).campaign.id
        await never_written(stub, customer, late.id)
        await serves_on(stub, health, customer)


async def test_calls_with_very_short_deadlines_fail_cleanly_and_the_server_serves_on(
    start_server: Callable[..., Any], settings: Settings, customer: str
) -> None:
    server = await start_server(settings)
    async with connected(server) as (stub, health):
        calls = [create_call(stub, runnable_campaign(customer), timeout=0.001) for _ in range(20)]
        calls += [
            stub.GetCampaign(pb.GetCampaignRequest(customer_id=customer, id=new_id()), timeout=0)
            for _ in range(5)
        ]

        outcomes = await asyncio.wait_for(asyncio.gather(*calls, return_exceptions=True), 10)

        codes = {o.code() if isinstance(o, grpc.aio.AioRpcError) else Code.OK for o in outcomes}
        assert codes <= {Code.OK, Code.DEADLINE_EXCEEDED}, outcomes
        assert Code.DEADLINE_EXCEEDED in codes

        async def all_ended() -> bool:
            return server.unary_calls_in_flight == 0

        await eventually(all_ended)
        await serves_on(stub, health, customer)


# -- admission: writes, customers, request bytes ----------------------------------------------


async def test_writes_stuck_behind_the_database_leave_reads_their_share(
    start_server: Callable[..., Any], settings: Settings, customer: str
) -> None:
    server = await start_server(
        settings,
        max_unary_in_flight=4,
        max_unary_writes_in_flight=2,
        max_unary_in_flight_per_customer=4,
    )
    async with connected(server) as (stub, health):
        existing = await create(stub, runnable_campaign(customer))
        with writes_held(settings.database_url):
            stuck = [
                asyncio.ensure_future(create_call(stub, runnable_campaign(customer)))
                for _ in range(2)
            ]

            async def both_admitted() -> bool:
                return server.admission.writes == 2

            await eventually(both_admitted)

            refused = await fails(
                create_call(stub, runnable_campaign(customer)), Code.RESOURCE_EXHAUSTED
            )
            assert refused.info.reason == "TOO_MANY_WRITES_IN_FLIGHT"
            assert refused.info.metadata["limit"] == "2"
            assert refused.quota_subjects == {"server"}
            # The reads the database can serve are served while the writes wait.
            for _ in range(5):
                assert (await get(stub, customer, existing.id)).id == existing.id
            history = await stub.ListCampaignEvents(
                pb.ListCampaignEventsRequest(customer_id=customer, campaign_id=existing.id),
                timeout=10,
            )
            assert [e.campaign_id for e in history.events] == [existing.id]
            assert not any(call.done() for call in stuck)
        await asyncio.wait_for(asyncio.gather(*stuck), 10)
        await serves_on(stub, health, customer)


async def test_a_customer_past_its_share_is_refused_and_another_customer_is_served(
    start_server: Callable[..., Any], settings: Settings, customer: str
) -> None:
    server = await start_server(settings, max_unary_in_flight_per_customer=2)
    other = new_id()
    async with connected(server) as (stub, health):
        with writes_held(settings.database_url):
            stuck = [
                asyncio.ensure_future(create_call(stub, runnable_campaign(customer)))
                for _ in range(2)
            ]

            async def both_admitted() -> bool:
                return server.admission.held_by(customer) == 2

            await eventually(both_admitted)

            refused = await fails(
                stub.GetCampaign(pb.GetCampaignRequest(customer_id=customer, id=new_id())),
                Code.RESOURCE_EXHAUSTED,
            )
            assert refused.info.reason == "TOO_MANY_CALLS_IN_FLIGHT_FOR_CUSTOMER"
            assert refused.info.metadata == {"limit": "2", "customer_id": customer}
            assert refused.quota_subjects == {f"customer_id:{customer}"}
            await never_written(stub, other, new_id())  # answered NOT_FOUND: served
        await asyncio.wait_for(asyncio.gather(*stuck), 10)
        await serves_on(stub, health, customer)


async def test_requests_past_the_bytes_in_flight_are_refused_before_they_are_parsed(
    start_server: Callable[..., Any], settings: Settings, customer: str
) -> None:
    server = await start_server(settings, max_request_bytes_in_flight=64 * 1024)
    async with connected(server) as (stub, health):
        with writes_held(settings.database_url):
            big = campaign_of_size(customer, 40 * 1024)
            stuck = asyncio.ensure_future(create_call(stub, big))

            async def held() -> bool:
                return server.admission.request_bytes > 40 * 1024

            await eventually(held)

            too_much = campaign_of_size(customer, 40 * 1024)
            refused = await fails(create_call(stub, too_much), Code.RESOURCE_EXHAUSTED)
            assert refused.info.reason == "REQUEST_BYTES_IN_FLIGHT"
            assert refused.info.metadata["limit"] == str(64 * 1024)
            assert refused.quota_subjects == {"server"}
            # Small requests still fit in what is left.
            await never_written(stub, customer, new_id())
        await asyncio.wait_for(stuck, 10)
        assert server.admission.request_bytes == 0
        await never_written(stub, customer, too_much.id)
        await serves_on(stub, health, customer)
