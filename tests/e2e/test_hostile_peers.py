"""Hostile and broken peers over a real socket: each attack's connection is closed or its
calls are answered, while legit calls on other connections succeed.

The attackers are raw HTTP/2 peers (tests/hostile_peer.py) that run in a thread, each
bounded in time and frames, to 127.0.0.1 only. Nothing here asserts a duration: each test
asserts what the attacker was answered and that every legit call succeeded.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2, status_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc

import hostile_peer as hp
from campaign_grpc.ops.server import App
from campaign_grpc.settings import Settings
from campaign_grpc.watch import slow_readers
from campaign_grpc_client.v1 import campaign_pb2 as pb
from campaign_grpc_client.v1 import campaign_pb2_grpc
from e2e_helpers import (
    Stream,
    create,
    details_of,
    eventually,
    read_snapshot,
    set_status,
    watch,
)
from factories import big_campaign, new_id, runnable_campaign

Code = grpc.StatusCode
Stub = campaign_pb2_grpc.CampaignServiceStub
ENHANCE_YOUR_CALM = 0xB
# grpc-status values as the raw peer reads them from trailers
INVALID_ARGUMENT, DEADLINE_EXCEEDED = 3, 4


@dataclass
class Legit:
    """Calls made on a connection of their own while an attack runs."""

    ok: int = 0
    failed: list[str] = field(default_factory=list)


async def legit_calls_until(done: asyncio.Future[Any], port: int, customer: str) -> Legit:
    """Health checks and reads, one after the other, until done; at least one round."""
    legit = Legit()
    async with grpc.aio.insecure_channel(
        f"127.0.0.1:{port}", options=[("grpc.use_local_subchannel_pool", 1)]
    ) as channel:
        stub, health = Stub(channel), health_pb2_grpc.HealthStub(channel)
        campaign = await create(stub, runnable_campaign(customer))
        request = pb.GetCampaignRequest(customer_id=customer, id=campaign.id)
        while True:
            try:
                await health.Check(health_pb2.HealthCheckRequest(), timeout=30)
                await stub.GetCampaign(request, timeout=30)
                legit.ok += 1
            except grpc.aio.AioRpcError as err:
                legit.failed.append(err.code().name)
            if done.done():
                return legit


async def during(
    app: App, attack: hp.Attack, seconds: float, customer: str
) -> tuple[hp.Outcome, Legit]:
    attacking = asyncio.ensure_future(asyncio.to_thread(attack, app.port, seconds))
    legit = await legit_calls_until(attacking, app.port, customer)
    return await attacking, legit


async def none_in_flight(app: App) -> bool:
    return app.unary_calls_in_flight == 0


def assert_unharmed(legit: Legit) -> None:
    assert legit.failed == []
    assert legit.ok >= 1


# -- rapid reset and calls that end before their request ------------------------------------


@pytest.mark.parametrize("method", [hp.GET_CAMPAIGN, hp.WATCH_STATUS, hp.HEALTH_CHECK])
async def test_a_rapid_reset_connection_is_closed_and_legit_calls_succeed(
    start_server: Callable[..., Any], settings: Settings, customer: str, method: str
) -> None:
    app = await start_server(settings)
    attack = hp.rapid_reset(method, per_connection=5_000)

    outcome, legit = await during(app, attack, 3.0, customer)

    assert outcome.closed >= 1
    assert app.peer_reports.counts["closed", "ABORTED_CALLS"] >= outcome.closed
    assert_unharmed(legit)


async def test_rapid_reset_of_an_unknown_method_is_refused_by_grpc_core(
    start_server: Callable[..., Any], settings: Settings, customer: str
) -> None:
    app = await start_server(
        settings,
        max_streams_per_connection=100,
        max_watch_streams_per_customer=90,
        max_unary_in_flight_per_customer=10,
    )

    outcome, legit = await during(app, hp.rapid_reset(hp.UNKNOWN_METHOD), 2.0, customer)

    # Core answers an unknown method itself, and refuses the streams past the cap.
    assert outcome.refused_streams > 0
    assert_unharmed(legit)


@pytest.mark.parametrize("truncated", [False, True], ids=["no message", "truncated message"])
async def test_a_call_half_closed_without_its_request_is_answered(
    start_server: Callable[..., Any], settings: Settings, truncated: bool
) -> None:
    app = await start_server(settings)
    with hp.peer(app.port) as peer:
        stream = peer.next_stream()
        if truncated:
            raw = peer.headers(stream, hp.GET_CAMPAIGN) + hp.frame(
                hp.DATA, hp.END_STREAM, stream, hp.grpc_message(b"\x0a", declared=50)
            )
        else:
            raw = peer.headers(stream, hp.GET_CAMPAIGN, end_stream=True)
        peer.flush(raw)

        while stream not in peer.statuses and not peer.closed:
            await asyncio.to_thread(peer.poll, 0.2)

    # Both are the client's mistake, answered at once: the stream ended without a whole
    # message.
    assert peer.statuses[stream] == INVALID_ARGUMENT
    assert app.peer_reports.counts["refused", "MALFORMED_REQUEST"] == 1
    await eventually(lambda: none_in_flight(app))


async def test_a_slowloris_request_is_dropped_when_its_time_is_up(
    start_server: Callable[..., Any], settings: Settings, customer: str
) -> None:
    app = await start_server(settings, request_receive_timeout=0.5)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel:
        await create(Stub(channel), runnable_campaign(customer))
    with hp.peer(app.port) as peer:
        streams = [peer.next_stream() for _ in range(20)]
        for stream in streams:
            peer.flush(
                peer.headers(stream, hp.GET_CAMPAIGN)
                + hp.frame(hp.DATA, 0, stream, hp.grpc_message(b"\x0a\x03abc", declared=100))
            )
        for _ in range(100):
            if len(peer.statuses) == len(streams) or peer.closed:
                break
            await asyncio.to_thread(peer.poll, 0.2)

    assert peer.statuses == dict.fromkeys(streams, DEADLINE_EXCEEDED)
    assert app.receiving.dropped == len(streams)
    assert app.peer_reports.counts["refused", "REQUEST_NOT_RECEIVED"] == len(streams)


async def test_calls_past_the_receiving_limit_drop_the_oldest_and_sound_calls_get_in(
    start_server: Callable[..., Any], settings: Settings, customer: str
) -> None:
    # The receive time is long: only the limit on calls waiting makes room.
    app = await start_server(
        settings,
        max_unary_in_flight=20,
        max_unary_writes_in_flight=15,
        max_unary_in_flight_per_customer=20,
        request_receive_timeout=600,
    )
    outcome, legit = await during(app, hp.slowloris(streams=200), 2.0, customer)

    assert app.receiving.dropped >= 200 - 20
    assert outcome.connections >= 2
    assert_unharmed(legit)


async def test_many_half_closed_calls_close_their_connection(
    start_server: Callable[..., Any], settings: Settings, customer: str
) -> None:
    app = await start_server(settings, max_aborted_calls=10)
    attack = hp.unanswerable_unary(truncated=False, streams=50)

    outcome, legit = await during(app, attack, 3.0, customer)

    assert outcome.closed == 1
    assert app.peer_reports.counts["closed", "ABORTED_CALLS"] == 1
    assert_unharmed(legit)


# -- frame floods ---------------------------------------------------------------------------


async def test_a_ping_flood_gets_goaway_enhance_your_calm(
    start_server: Callable[..., Any], settings: Settings, customer: str
) -> None:
    app = await start_server(settings)

    outcome, legit = await during(app, hp.ping_flood, 2.0, customer)

    # Core sends GOAWAY ENHANCE_YOUR_CALM and closes; the GOAWAY is lost when the close
    # resets a connection whose flood the server left unread.
    assert outcome.closed >= 1
    assert set(outcome.goaways) <= {ENHANCE_YOUR_CALM}
    assert_unharmed(legit)


@pytest.mark.parametrize(
    "attack",
    [hp.settings_flood, hp.window_update_flood, hp.empty_data_flood()],
    ids=["SETTINGS", "WINDOW_UPDATE", "empty DATA"],
)
async def test_a_frame_flood_is_cut_off_and_legit_calls_succeed(
    start_server: Callable[..., Any], settings: Settings, customer: str, attack: hp.Attack
) -> None:
    app = await start_server(settings)

    outcome, legit = await during(app, attack, 2.0, customer)

    # Closed, or no longer read: core stops reading a connection whose frames it must
    # answer faster than the peer takes the answers.
    assert outcome.closed + outcome.throttled >= 1
    assert_unharmed(legit)


# -- header abuse ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "attack",
    [hp.hpack_bomb(), hp.many_metadata(), hp.huge_metadata_value()],
    ids=["HPACK bomb", "5,000 entries", "1 MiB value"],
)
async def test_oversized_metadata_is_refused_and_legit_calls_succeed(
    start_server: Callable[..., Any], settings: Settings, customer: str, attack: hp.Attack
) -> None:
    app = await start_server(settings)

    outcome, legit = await during(app, attack, 1.0, customer)

    # Core refuses each such stream (RST_STREAM, or an error status) before any handler.
    assert outcome.refused_streams + outcome.closed >= 1
    assert_unharmed(legit)
    await eventually(lambda: none_in_flight(app))


# -- connections ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "attack",
    [hp.silent_connections(20), hp.preface_only_connections(20)],
    ids=["silent", "preface only"],
)
async def test_idle_and_unfinished_connections_are_closed_after_their_time(
    start_server: Callable[..., Any], settings: Settings, customer: str, attack: hp.Attack
) -> None:
    app = await start_server(settings, handshake_timeout=0.5, max_connection_idle=0.5)

    outcome, legit = await during(app, attack, 10.0, customer)

    assert outcome.connections == 20
    assert outcome.closed == 20
    assert_unharmed(legit)


async def test_connections_past_the_cap_are_closed_at_once(
    start_server: Callable[..., Any], settings: Settings, customer: str
) -> None:
    app = await start_server(settings, max_connections=5)

    outcome = await asyncio.to_thread(hp.silent_connections(10), app.port, 1.0)

    assert outcome.connections == 10
    assert outcome.dropped >= 5

    # Once the attacker has gone, others get in again: as soon as grpc core has seen its
    # connections close, which on a busy machine is not always before the next one comes.
    async def a_new_connection_gets_in() -> bool:
        async with grpc.aio.insecure_channel(
            f"127.0.0.1:{app.port}", options=[("grpc.use_local_subchannel_pool", 1)]
        ) as channel:
            try:
                await health_pb2_grpc.HealthStub(channel).Check(
                    health_pb2.HealthCheckRequest(), timeout=5
                )
            except grpc.aio.AioRpcError:
                return False
            return True

    await eventually(a_new_connection_gets_in, within=10)
    done = asyncio.get_running_loop().create_future()
    done.set_result(None)
    assert_unharmed(await legit_calls_until(done, app.port, customer))


# -- streams --------------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def health_watches(port: int, n: int) -> AsyncIterator[list[Any]]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        health = health_pb2_grpc.HealthStub(channel)
        calls = [health.Watch(health_pb2.HealthCheckRequest()) for _ in range(n)]
        try:
            yield calls
        finally:
            for call in calls:
                call.cancel()


async def test_health_watches_past_the_cap_are_refused_but_checks_never(
    start_server: Callable[..., Any], settings: Settings
) -> None:
    app = await start_server(settings, max_health_watches=3)
    async with health_watches(app.port, 3) as held:
        for call in held:
            assert (await call.read()).status == health_pb2.HealthCheckResponse.SERVING
        async with health_watches(app.port, 1) as (refused,):
            with pytest.raises(grpc.aio.AioRpcError) as raised:
                await refused.read()
        async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel:
            health = health_pb2_grpc.HealthStub(channel)
            checks = await asyncio.gather(
                *(health.Check(health_pb2.HealthCheckRequest(), timeout=10) for _ in range(20))
            )

    assert raised.value.code() == Code.RESOURCE_EXHAUSTED
    details = details_of(raised.value)
    assert details.info.reason == "TOO_MANY_HEALTH_WATCHES"
    assert details.info.metadata["limit"] == "3"
    assert details.quota_subjects == {"server"}
    assert {c.status for c in checks} == {health_pb2.HealthCheckResponse.SERVING}


async def test_a_watcher_that_never_reads_does_not_hold_back_the_others(
    start_server: Callable[..., Any], settings: Settings, customer: str
) -> None:
    app = await start_server(settings, watch_buffer=16)
    request = pb.WatchStatusRequest(customer_id=customer).SerializeToString()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel:
        stub = Stub(channel)
        campaign = await create(stub, runnable_campaign(customer))
        stalled = hp.Peer(app.port, window=0)
        try:
            for _ in range(5):
                stream = stalled.next_stream()
                stalled.flush(
                    stalled.headers(stream, hp.WATCH_STATUS)
                    + hp.frame(hp.DATA, hp.END_STREAM, stream, hp.grpc_message(request))
                )
            follower = watch(stub, customer)
            await read_snapshot(follower)
            # More changes than a stream may fall behind: the stalled streams are ended,
            # and the follower gets every one of them.
            for n in range(40):
                status = pb.Campaign.STATUS_RUN if n % 2 == 0 else pb.Campaign.STATUS_STOP
                await set_status(stub, customer, campaign.id, status, force=True)
                change = await follower.next_change(within=30)
                assert change.status == status
            await follower.close()
            await asyncio.to_thread(stalled.poll, 0.2)
        finally:
            stalled.close()

    # Nothing was sent to the stalled streams past their window: what they hold is the
    # hub's bounded buffer (watch_buffer changes) and grpc's message in flight.
    assert stalled.received == 0
    assert not stalled.closed


async def test_a_watcher_that_never_reads_is_cancelled_and_its_place_freed(
    start_server: Callable[..., Any], settings: Settings, customer: str
) -> None:
    app = await start_server(settings, watch_send_timeout=0.5, heartbeat_interval=0.1)
    request = pb.WatchStatusRequest(customer_id=customer).SerializeToString()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel:
        stub = Stub(channel)
        for _ in range(3):
            await create(stub, runnable_campaign(customer))
        stalled = hp.Peer(app.port, window=0)
        try:
            stream = stalled.next_stream()
            stalled.flush(
                stalled.headers(stream, hp.WATCH_STATUS)
                + hp.frame(hp.DATA, hp.END_STREAM, stream, hp.grpc_message(request))
            )

            async def held() -> bool:
                return app.hub.streams.held_by(customer) == 1

            await eventually(held)

            # Its first message never leaves: the stream is cancelled, its place given back.
            async def freed() -> bool:
                await asyncio.to_thread(stalled.poll, 0.05)
                return app.hub.streams.held_by(customer) == 0

            await eventually(freed, within=10)
            assert app.hub.stuck_cancelled == 1
            # A reading watcher of the customer is served as before.
            follower = watch(stub, customer)
            snapshot, _ = await read_snapshot(follower)
            await follower.close()
            assert len(snapshot) == 3
        finally:
            stalled.close()


def reasons_of(peer: hp.Peer) -> list[str]:
    """The ErrorInfo reason of each stream the server ended with details."""
    reasons = []
    for details in peer.status_details.values():
        status = status_pb2.Status.FromString(base64.b64decode(details + b"=="))
        for detail in status.details:
            info = error_details_pb2.ErrorInfo()
            if detail.Unpack(info):
                reasons.append(info.reason)
    return reasons


async def test_watchers_that_never_read_hold_no_more_bytes_than_their_customer_s_budget(
    start_server: Callable[..., Any],
    settings: Settings,
    customer: str,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(slow_readers, "UNREAD_LOG_INTERVAL", 0.5)
    budget = 1024 * 1024
    app = await start_server(
        settings,
        max_watch_unread_bytes_per_customer=budget,
        watch_send_timeout=2,
        heartbeat_interval=0.2,
    )
    request = pb.WatchStatusRequest(
        customer_id=customer, view=pb.WATCH_VIEW_FULL
    ).SerializeToString()
    streams = 20
    async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel:
        stub = Stub(channel)
        other = new_id()
        for owner in (customer, customer, other):
            await create(stub, big_campaign(owner))
        stalled = hp.Peer(app.port, window=0)
        try:
            # Full views of 200 KB campaigns whose first message never leaves: more than
            # the customer's budget, were every stream to hold its own.
            for _ in range(streams):
                stream = stalled.next_stream()
                stalled.flush(
                    stalled.headers(stream, hp.WATCH_STATUS)
                    + hp.frame(hp.DATA, hp.END_STREAM, stream, hp.grpc_message(request))
                )
            most = 0

            def held() -> int:
                nonlocal most
                most = max(most, app.hub.unread.held_by(customer))
                return app.hub.streams.held_by(customer)

            async def all_ended() -> bool:
                await asyncio.to_thread(stalled.poll, 0.05)
                return held() == 0 and stalled.responses > 0

            # Every stream has reached the hub: open, or already ended for want of room
            # (on a slow machine the first are refused before the last ones open).
            async def all_arrived() -> bool:
                ended = app.hub.stuck_cancelled + app.hub.unread.refused
                return held() + ended == streams

            await eventually(all_arrived)
            # Another customer's full view is served all along.
            follower = Stream(
                stub.WatchStatus(pb.WatchStatusRequest(customer_id=other, view=pb.WATCH_VIEW_FULL))
            )
            snapshot, _ = await read_snapshot(follower)
            await follower.close()
            assert [len(m.campaign.actions) for m in snapshot] == [1000]

            await eventually(all_ended, within=30)
        finally:
            stalled.close()

    # The streams held their customer's budget at most; those that found no room in it for
    # as long as a send may take were told why, the others were cancelled as stuck.
    assert 0 < most <= budget
    assert app.hub.unread.total == 0
    reasons = reasons_of(stalled)
    assert reasons
    assert set(reasons) == {"WATCH_UNREAD_BYTES_FOR_CUSTOMER"}
    assert set(stalled.statuses.values()) <= {grpc.StatusCode.RESOURCE_EXHAUSTED.value[0]}
    ended = app.hub.stuck_cancelled + app.hub.unread.refused
    assert app.hub.unread.refused == len(reasons)
    assert ended >= streams
    # Their warnings are counted, a line per interval, not a line per stream.
    app.hub._slow.log_now()
    lines = [r.getMessage() for r in caplog.records if "do not read" in r.getMessage()]
    assert 1 <= len(lines) < ended
