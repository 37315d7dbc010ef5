"""WatchStatus over a socket: snapshot, changes, heartbeats, resume, and resume across restarts."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import grpc
import pytest

from campaign_grpc.ops.server import App
from campaign_grpc.settings import Settings
from campaign_grpc_client.v1 import campaign_pb2 as pb
from campaign_grpc_client.v1 import campaign_pb2_grpc
from e2e_helpers import (
    Stream,
    W,
    confirm_drained,
    create,
    details_of,
    eventually,
    read_snapshot,
    set_status,
    watch,
)
from factories import new_id, runnable_campaign

Code = grpc.StatusCode
C = pb.Campaign
Stub = campaign_pb2_grpc.CampaignServiceStub


def summary(m: Any) -> tuple[str, int, int, bool, int]:
    """What a change says: which campaign, to what, from what, deleted, why."""
    return (m.campaign_id, m.status, m.previous_status, m.deleted, m.reason)


async def delete(stub: Stub, customer: str, campaign_id: str) -> pb.Campaign:
    response = await stub.DeleteCampaign(
        pb.DeleteCampaignRequest(customer_id=customer, id=campaign_id), timeout=10
    )
    return response.campaign


async def undelete(stub: Stub, customer: str, campaign_id: str) -> pb.Campaign:
    response = await stub.UndeleteCampaign(
        pb.UndeleteCampaignRequest(customer_id=customer, id=campaign_id), timeout=10
    )
    return response.campaign


async def changes(stream: Stream, count: int) -> list[Any]:
    out = []
    for _ in range(count):
        m = await stream.next_change()
        assert m is not None
        assert m.kind == W.KIND_CHANGE, m
        out.append(m)
    return out


async def test_snapshot_holds_every_live_campaign_of_the_customer(
    stub: Stub, customer: str
) -> None:
    idle = await create(stub, runnable_campaign(customer))
    running = await create(stub, runnable_campaign(customer))
    await set_status(stub, customer, running.id, C.STATUS_RUN)
    gone = await create(stub, runnable_campaign(customer))
    await delete(stub, customer, gone.id)
    await create(stub, runnable_campaign(new_id()))  # another customer's: revision 6

    stream = watch(stub, customer)
    try:
        snapshot, revision = await read_snapshot(stream)
    finally:
        await stream.close()

    assert revision == 6
    assert {(m.campaign_id, m.status, m.deleted) for m in snapshot} == {
        (idle.id, C.STATUS_STOP, False),
        (running.id, C.STATUS_RUN, False),
    }
    assert all(m.customer_id == customer for m in snapshot)
    assert all(0 < m.revision <= revision for m in snapshot)
    assert all(m.HasField("tm_event") for m in snapshot)


async def test_changes_arrive_for_create_status_delete_and_undelete(
    stub: Stub, customer: str
) -> None:
    stream = watch(stub, customer)
    try:
        snapshot, start = await read_snapshot(stream)
        assert snapshot == []

        c = await create(stub, runnable_campaign(customer))
        await create(stub, runnable_campaign(new_id()))  # never seen by this stream
        await set_status(stub, customer, c.id, C.STATUS_RUN)
        stopping = await set_status(stub, customer, c.id, C.STATUS_STOP)
        await confirm_drained(stub, customer, c.id, stopping.stop_revision)
        await delete(stub, customer, c.id)
        await undelete(stub, customer, c.id)

        got = await changes(stream, 6)
        assert [summary(m) for m in got] == [
            (c.id, C.STATUS_STOP, C.STATUS_UNSPECIFIED, False, W.REASON_CREATED),
            (c.id, C.STATUS_RUN, C.STATUS_STOP, False, W.REASON_REQUESTED),
            (c.id, C.STATUS_STOPPING, C.STATUS_RUN, False, W.REASON_REQUESTED),
            (c.id, C.STATUS_STOP, C.STATUS_STOPPING, False, W.REASON_DRAINED),
            (c.id, C.STATUS_STOP, C.STATUS_STOP, True, W.REASON_DELETED),
            (c.id, C.STATUS_STOP, C.STATUS_STOP, False, W.REASON_UNDELETED),
        ]
        revisions = [m.revision for m in got]
        assert revisions == sorted(set(revisions))
        assert revisions[0] == start + 1
        assert revisions[1] == start + 3  # the other customer's create took start + 2
        assert all(m.customer_id == customer and m.HasField("tm_event") for m in got)
    finally:
        await stream.close()


async def test_a_watch_by_campaign_id_sees_only_that_campaign(stub: Stub, customer: str) -> None:
    mine = await create(stub, runnable_campaign(customer))
    other = await create(stub, runnable_campaign(customer))

    stream = watch(stub, customer, mine.id)
    try:
        snapshot, _ = await read_snapshot(stream)
        assert [(m.campaign_id, m.status) for m in snapshot] == [(mine.id, C.STATUS_STOP)]

        await set_status(stub, customer, other.id, C.STATUS_RUN)
        await set_status(stub, customer, mine.id, C.STATUS_RUN)
        await set_status(stub, customer, other.id, C.STATUS_STOP, force=True)
        await set_status(stub, customer, mine.id, C.STATUS_STOP, force=True)

        got = await changes(stream, 2)
        assert [summary(m)[:3] for m in got] == [
            (mine.id, C.STATUS_RUN, C.STATUS_STOP),
            (mine.id, C.STATUS_STOP, C.STATUS_RUN),
        ]
        await stream.nothing_but_heartbeats(0.6)
    finally:
        await stream.close()


async def test_heartbeats_carry_the_latest_revision(stub: Stub, customer: str) -> None:
    stream = watch(stub, customer)
    try:
        _, start = await read_snapshot(stream)
        first = await stream.next(within=3)
        assert first.kind == W.KIND_HEARTBEAT
        assert first.revision == start

        # Another customer's change: not sent, but the heartbeat moves past it.
        await create(stub, runnable_campaign(new_id()))
        for _ in range(10):
            beat = await stream.next(within=3)
            assert beat.kind == W.KIND_HEARTBEAT, beat
            if beat.revision == start + 1:
                break
        else:
            raise AssertionError("no heartbeat carried the new revision")
    finally:
        await stream.close()


async def test_after_revision_replays_from_the_log_then_follows_live(
    stub: Stub, customer: str
) -> None:
    a = await create(stub, runnable_campaign(customer))  # revision 1
    b = await create(stub, runnable_campaign(customer))  # 2
    await set_status(stub, customer, a.id, C.STATUS_RUN)  # 3
    await delete(stub, customer, b.id)  # 4

    stream = watch(stub, customer, after_revision=2)
    try:
        replayed = await changes(stream, 2)
        assert [(m.revision, m.campaign_id, m.reason) for m in replayed] == [
            (3, a.id, W.REASON_REQUESTED),
            (4, b.id, W.REASON_DELETED),
        ]
        await undelete(stub, customer, b.id)  # 5
        (live,) = await changes(stream, 1)
        assert (live.revision, live.campaign_id, live.reason) == (5, b.id, W.REASON_UNDELETED)
    finally:
        await stream.close()

    # A deleted campaign is still watchable by id from a revision.
    stream = watch(stub, customer, b.id, after_revision=1)
    try:
        got = await changes(stream, 3)
        assert [m.revision for m in got] == [2, 4, 5]
    finally:
        await stream.close()


async def test_a_restart_between_two_connections_misses_nothing(
    start_server: Callable[..., Any], settings: Settings, customer: str
) -> None:
    expected: list[tuple[str, int, int, bool, int]] = []

    def made(cid: str, to: int, was: int, deleted: bool, reason: int) -> None:
        expected.append((cid, to, was, deleted, reason))

    first: App = await start_server(settings)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{first.port}") as channel:
        stub = campaign_pb2_grpc.CampaignServiceStub(channel)
        a = await create(stub, runnable_campaign(customer))
        b = await create(stub, runnable_campaign(customer))
        stream = watch(stub, customer)
        try:
            await read_snapshot(stream)
            await set_status(stub, customer, a.id, C.STATUS_RUN)
            (seen,) = await changes(stream, 1)
            assert summary(seen) == (a.id, C.STATUS_RUN, C.STATUS_STOP, False, W.REASON_REQUESTED)
            last = seen.revision
        finally:
            await stream.close()
        # Changed while no watch is connected.
        stopping = await set_status(stub, customer, a.id, C.STATUS_STOP)
        made(a.id, C.STATUS_STOPPING, C.STATUS_RUN, False, W.REASON_REQUESTED)
        c = await create(stub, runnable_campaign(customer))
        made(c.id, C.STATUS_STOP, C.STATUS_UNSPECIFIED, False, W.REASON_CREATED)
    await first.stop()

    second: App = await start_server(settings)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{second.port}") as channel:
        stub = campaign_pb2_grpc.CampaignServiceStub(channel)
        await confirm_drained(stub, customer, a.id, stopping.stop_revision)
        made(a.id, C.STATUS_STOP, C.STATUS_STOPPING, False, W.REASON_DRAINED)
        await delete(stub, customer, b.id)
        made(b.id, C.STATUS_STOP, C.STATUS_STOP, True, W.REASON_DELETED)
        await undelete(stub, customer, b.id)
        made(b.id, C.STATUS_STOP, C.STATUS_STOP, False, W.REASON_UNDELETED)
        await set_status(stub, customer, c.id, C.STATUS_RUN)
        made(c.id, C.STATUS_RUN, C.STATUS_STOP, False, W.REASON_REQUESTED)
    await second.stop()

    third: App = await start_server(settings)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{third.port}") as channel:
        stub = campaign_pb2_grpc.CampaignServiceStub(channel)
        stream = watch(stub, customer, after_revision=last)
        try:
            replayed = await changes(stream, len(expected))
            await set_status(stub, customer, c.id, C.STATUS_STOP, force=True)
            made(c.id, C.STATUS_STOP, C.STATUS_RUN, False, W.REASON_REQUESTED)
            replayed += await changes(stream, 1)
            await stream.nothing_but_heartbeats(0.6)
        finally:
            await stream.close()

    assert [summary(m) for m in replayed] == expected
    # Only this customer wrote: its revisions follow each other with no gap.
    assert [m.revision for m in replayed] == list(range(last + 1, last + 1 + len(expected)))


async def test_a_watch_sees_changes_made_through_another_server_on_the_same_file(
    start_server: Callable[..., Any], settings: Settings, customer: str
) -> None:
    watched: App = await start_server(settings)
    writer: App = await start_server(settings)
    async with (
        grpc.aio.insecure_channel(f"127.0.0.1:{watched.port}") as watch_channel,
        grpc.aio.insecure_channel(f"127.0.0.1:{writer.port}") as write_channel,
    ):
        stream = watch(campaign_pb2_grpc.CampaignServiceStub(watch_channel), customer)
        try:
            _, start = await read_snapshot(stream)
            created = await create(
                campaign_pb2_grpc.CampaignServiceStub(write_channel), runnable_campaign(customer)
            )
            (change,) = await changes(stream, 1)
            assert (change.campaign_id, change.reason, change.revision) == (
                created.id,
                W.REASON_CREATED,
                start + 1,
            )
        finally:
            await stream.close()


async def test_a_cancelled_watch_frees_its_subscription(
    server: App, stub: Stub, customer: str
) -> None:
    streams = [watch(stub, customer), watch(stub, customer, after_revision=0)]
    try:
        for stream in streams:
            await read_snapshot(stream)
        assert server.hub.subscriber_count == 2
        await streams[0].close()

        async def one_left() -> bool:
            return server.hub.subscriber_count == 1

        await eventually(one_left, within=5)
    finally:
        await streams[1].close()

    async def none_left() -> bool:
        return server.hub.subscriber_count == 0

    await eventually(none_left, within=5)


async def test_server_stop_ends_an_open_watch_with_unavailable(
    server: App, stub: Stub, customer: str
) -> None:
    stream = watch(stub, customer)
    try:
        await read_snapshot(stream)
        await server.stop()
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await stream.next_change()
        assert raised.value.code() == Code.UNAVAILABLE
        assert details_of(raised.value).info.reason == "SHUTTING_DOWN"
    finally:
        await stream.close()


async def test_a_revision_ahead_of_the_log_is_out_of_range(stub: Stub, customer: str) -> None:
    await create(stub, runnable_campaign(customer))  # the log is at 1

    stream = watch(stub, customer, after_revision=2)
    try:
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await stream.next()
    finally:
        await stream.close()

    assert raised.value.code() == Code.OUT_OF_RANGE
    err = details_of(raised.value)
    assert err.info.reason == "REVISION_AHEAD_OF_LOG"
    assert err.info.metadata["head_revision"] == "1"


@pytest.mark.parametrize(
    ("campaign_id", "after_revision", "field"),
    [("not-a-uuid", 0, "campaign_id"), ("", -1, "after_revision")],
)
async def test_a_bad_watch_request_is_invalid_argument(
    stub: Stub, customer: str, campaign_id: str, after_revision: int, field: str
) -> None:
    stream = watch(stub, customer, campaign_id, after_revision)
    try:
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await stream.next()
    finally:
        await stream.close()
    assert raised.value.code() == Code.INVALID_ARGUMENT
    assert details_of(raised.value).fields == {field}
