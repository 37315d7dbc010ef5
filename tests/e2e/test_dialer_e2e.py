"""The contract as the dialer and a gateway meet it over a socket, on SQLite and PostgreSQL:
a STOP that only asks, the drain confirmed by revision, the full view, global ids, resume
points, and a server that will not share a port by accident."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import field_mask_pb2

from campaign_grpc.ops.server import App
from campaign_grpc_client.v1 import campaign_pb2 as pb
from campaign_grpc_client.v1 import campaign_pb2_grpc
from e2e_helpers import (
    Process,
    Stream,
    W,
    confirm_drained,
    create,
    details_of,
    eventually,
    fails,
    free_port,
    get,
    read_snapshot,
    set_status,
    wait_serving,
)
from factories import new_id, runnable_campaign

Code = grpc.StatusCode
C = pb.Campaign
Stub = campaign_pb2_grpc.CampaignServiceStub


def watch(stub: Stub, customer: str = "", *, after_revision: int = 0, full: bool = False) -> Stream:
    view = pb.WATCH_VIEW_FULL if full else pb.WATCH_VIEW_STATUS
    request = pb.WatchStatusRequest(customer_id=customer, after_revision=after_revision, view=view)
    return Stream(stub.WatchStatus(request))


async def update(stub: Stub, campaign: pb.Campaign, *paths: str) -> pb.Campaign:
    request = pb.UpdateCampaignRequest(
        campaign=campaign, update_mask=field_mask_pb2.FieldMask(paths=list(paths))
    )
    return (await stub.UpdateCampaign(request, timeout=10)).campaign


async def changes(stream: Stream, count: int) -> list[Any]:
    out = []
    for _ in range(count):
        message = await stream.next_change()
        assert message is not None
        assert message.kind == W.KIND_CHANGE, message
        out.append(message)
    return out


def step(m: Any) -> tuple[int, int, int]:
    return (m.previous_status, m.status, m.reason)


async def running(stub: Stub, customer: str, **changes: Any) -> pb.Campaign:
    c = await create(stub, runnable_campaign(customer, **changes))
    return await set_status(stub, customer, c.id, C.STATUS_RUN)


# -- stop and confirm -------------------------------------------------------------------------


async def test_a_double_stop_and_eight_racing_stops_leave_the_drain_to_the_dialer(
    stub: Stub, customer: str
) -> None:
    c = await running(stub, customer)
    stream = watch(stub, customer)
    try:
        await read_snapshot(stream)
        first = await set_status(stub, customer, c.id, C.STATUS_STOP)
        second = await set_status(stub, customer, c.id, C.STATUS_STOP)  # a double click
        racing = await asyncio.gather(
            *(set_status(stub, customer, c.id, C.STATUS_STOP) for _ in range(8))
        )
        assert {(m.status, m.etag) for m in [second, *racing]} == {(C.STATUS_STOPPING, first.etag)}
        (asked,) = await changes(stream, 1)
        await stream.nothing_but_heartbeats(0.6)
        assert step(asked) == (C.STATUS_RUN, C.STATUS_STOPPING, W.REASON_REQUESTED)
        assert asked.stop_revision == asked.revision == first.stop_revision

        done = await confirm_drained(stub, customer, c.id, asked.stop_revision)
        (drained,) = await changes(stream, 1)
        assert done.status == C.STATUS_STOP
        assert step(drained) == (C.STATUS_STOPPING, C.STATUS_STOP, W.REASON_DRAINED)
    finally:
        await stream.close()


async def test_a_late_confirmation_of_an_earlier_stop_never_completes_a_later_one(
    stub: Stub, customer: str
) -> None:
    c = await running(stub, customer)
    first = await set_status(stub, customer, c.id, C.STATUS_STOP)
    await set_status(stub, customer, c.id, C.STATUS_RUN)
    second = await set_status(stub, customer, c.id, C.STATUS_STOP)

    late = await fails(
        confirm_drained(stub, customer, c.id, first.stop_revision), Code.FAILED_PRECONDITION
    )
    assert late.info.reason == "STOP_REVISION_MISMATCH"
    assert late.info.metadata["stop_revision"] == str(second.stop_revision)
    assert late.precondition_types == {"STOP_REVISION_MISMATCH"}
    assert await get(stub, customer, c.id) == second

    done = await confirm_drained(stub, customer, c.id, second.stop_revision)
    assert done.status == C.STATUS_STOP
    # The dialer retries a confirmation whose reply it lost: nothing changes.
    assert await confirm_drained(stub, customer, c.id, second.stop_revision) == done
    idle = await create(stub, runnable_campaign(customer))
    refused = await fails(confirm_drained(stub, customer, idle.id, 1), Code.FAILED_PRECONDITION)
    assert refused.info.reason == "CAMPAIGN_NOT_STOPPING"


async def test_an_operators_stop_on_a_finishing_campaign_calls_the_chain_off(
    stub: Stub, customer: str
) -> None:
    following = await create(stub, runnable_campaign(customer))
    c = await running(stub, customer, next_campaign_id=following.id)
    stream = watch(stub, customer)
    try:
        await read_snapshot(stream)
        await stub.ReportOutdialExhausted(
            pb.ReportOutdialExhaustedRequest(customer_id=customer, id=c.id), timeout=10
        )
        (finishing,) = await changes(stream, 1)
        assert step(finishing) == (C.STATUS_RUN, C.STATUS_STOPPING, W.REASON_FINISHED)

        asked = await set_status(stub, customer, c.id, C.STATUS_STOP)  # an operator
        assert (asked.status, asked.stop_revision) == (C.STATUS_STOPPING, finishing.revision)
        (called_off,) = await changes(stream, 1)
        assert step(called_off) == (C.STATUS_STOPPING, C.STATUS_STOPPING, W.REASON_REQUESTED)
        assert "will not be started" in called_off.detail

        # The dialer drains and confirms the stop it saw: the next campaign stays stopped.
        await confirm_drained(stub, customer, c.id, finishing.stop_revision)
        (drained,) = await changes(stream, 1)
        await stream.nothing_but_heartbeats(0.6)
    finally:
        await stream.close()
    assert step(drained) == (C.STATUS_STOPPING, C.STATUS_STOP, W.REASON_DRAINED)
    assert drained.next_campaign_result == W.NEXT_CAMPAIGN_RESULT_UNSPECIFIED
    assert (await get(stub, customer, following.id)).status == C.STATUS_STOP


# -- the full view ----------------------------------------------------------------------------


async def test_the_full_view_follows_each_campaign_from_the_stream_alone(
    stub: Stub, customer: str
) -> None:
    c = await running(stub, customer)
    stream = watch(stub, customer, full=True)
    try:
        (item,), end = await read_snapshot(stream)
        assert item.campaign == await get(stub, customer, c.id)
        renamed = await update(stub, pb.Campaign(customer_id=customer, id=c.id, name="n2"), "name")
        relevel = await update(
            stub, pb.Campaign(customer_id=customer, id=c.id, service_level=70), "service_level"
        )
        stopping = await set_status(stub, customer, c.id, C.STATUS_STOP)
        got = await changes(stream, 3)
    finally:
        await stream.close()
    assert [m.reason for m in got] == [W.REASON_UPDATED, W.REASON_UPDATED, W.REASON_REQUESTED]
    assert [m.campaign for m in got] == [renamed, relevel, stopping]
    assert [m.status for m in got] == [C.STATUS_RUN, C.STATUS_RUN, C.STATUS_STOPPING]

    # Replayed later, each change still shows the campaign as it was then.
    replay = watch(stub, customer, after_revision=end, full=True)
    try:
        again = await changes(replay, 3)
        caught_up = await replay.next()
    finally:
        await replay.close()
    assert [m.campaign for m in again] == [renamed, relevel, stopping]
    assert (caught_up.kind, caught_up.revision) == (W.KIND_HEARTBEAT, got[-1].revision)

    # The status view stays light.
    light = watch(stub, customer, after_revision=end)
    try:
        plain = await changes(light, 3)
    finally:
        await light.close()
    assert [m.HasField("campaign") for m in plain] == [False] * 3
    assert [m.revision for m in plain] == [m.revision for m in got]


async def test_a_full_replay_from_before_the_log_kept_campaigns_is_out_of_range(
    server: App, stub: Stub, customer: str
) -> None:
    for _ in range(3):
        await create(stub, runnable_campaign(customer))
    # As a database upgraded at revision 2 has it: the events up to it hold no campaign.
    server.store.db.execute_sql(
        f"UPDATE meta SET value = 2 WHERE key = {server.store.db.param}", ("full_history_from",)
    )
    early = watch(stub, customer, after_revision=1, full=True)
    try:
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await early.next()
    finally:
        await early.close()
    refused = details_of(raised.value)
    assert (refused.code, refused.info.reason) == (Code.OUT_OF_RANGE, "FULL_VIEW_NOT_RECORDED")
    assert refused.info.metadata["oldest_revision"] == "3"
    # From there on it can, and the status view could all along.
    for after, full in ((2, True), (1, False)):
        stream = watch(stub, customer, after_revision=after, full=full)
        try:
            assert len(await changes(stream, 3 - after)) == 3 - after
        finally:
            await stream.close()


# -- ids --------------------------------------------------------------------------------------


async def test_an_id_of_another_customers_campaign_is_refused_without_naming_them(
    stub: Stub, customer: str
) -> None:
    other = new_id()
    theirs = await create(stub, runnable_campaign(other))
    refused = await fails(
        create(stub, runnable_campaign(customer, id=theirs.id)), Code.ALREADY_EXISTS
    )
    assert refused.info.reason == "CAMPAIGN_ALREADY_EXISTS"
    assert other not in refused.status.message
    assert other not in refused.info.metadata.values()
    await fails(get(stub, customer, theirs.id), Code.NOT_FOUND)

    # The watch of every customer (the dialer's) names each campaign id once.
    mine = await create(stub, runnable_campaign(customer))
    stream = watch(stub)
    try:
        snapshot, _ = await read_snapshot(stream)
    finally:
        await stream.close()
    owners = {m.campaign_id: m.customer_id for m in snapshot}
    assert len(owners) == len(snapshot)
    assert owners[theirs.id] == other
    assert owners[mine.id] == customer


# -- resume points ----------------------------------------------------------------------------


async def test_a_stream_cut_after_any_message_of_a_snapshot_resumes_missing_nothing(
    stub: Stub, customer: str
) -> None:
    campaigns = [await create(stub, runnable_campaign(customer)) for _ in range(6)]
    # Last changes in an order other than creation: the snapshot comes in revision order.
    for c in reversed(campaigns[:3]):
        await set_status(stub, customer, c.id, C.STATUS_RUN)
    gone = await create(stub, runnable_campaign(customer))
    await stub.DeleteCampaign(pb.DeleteCampaignRequest(customer_id=customer, id=gone.id))
    expected = {c.id: (await get(stub, customer, c.id)).status for c in campaigns}

    whole = watch(stub, customer)
    try:
        snapshot, end = await read_snapshot(whole)
    finally:
        await whole.close()
    assert [m.revision for m in snapshot] == sorted(m.revision for m in snapshot)
    for cut in range(1, len(snapshot) + 2):  # after each item, and after SNAPSHOT_END
        seen: dict[str, int] = {}
        revisions: list[int] = []
        first = watch(stub, customer)
        try:
            for _ in range(cut):
                m = await first.next()
                revisions.append(m.revision)
                if m.kind == W.KIND_SNAPSHOT:
                    seen[m.campaign_id] = m.status
        finally:
            await first.close()
        resumed = watch(stub, customer, after_revision=revisions[-1])
        try:
            while (m := await resumed.next()).kind != W.KIND_HEARTBEAT:
                assert m.kind == W.KIND_CHANGE, m
                revisions.append(m.revision)
                seen[m.campaign_id] = m.status
        finally:
            await resumed.close()
        live = {cid: status for cid, status in seen.items() if cid != gone.id}
        assert live == expected, cut
        # Never back, never twice: each message a point to resume from.
        assert revisions == sorted(revisions), cut
        assert len(set(revisions[cut:])) == len(revisions[cut:]), cut
        assert m.revision == end, cut


# -- the port -----------------------------------------------------------------------------------


async def test_a_second_server_on_a_port_in_use_refuses_to_start(tmp_path: Path) -> None:
    target = f"127.0.0.1:{free_port()}"
    first = Process(
        ["--listen", target, "--database-url", f"sqlite:///{tmp_path / 'a.db'}"],
        tmp_path / "a.log",
    )
    try:
        await wait_serving(target, first)
        second = Process(
            ["--listen", target, "--database-url", f"sqlite:///{tmp_path / 'b.db'}"],
            tmp_path / "b.log",
        )
        try:
            assert await second.exit_code(within=20) == 2
            assert target in second.log
            assert "in use" in second.log
        finally:
            second.kill()
        assert first.proc.poll() is None
    finally:
        first.kill()


async def test_a_port_is_shared_only_on_purpose(tmp_path: Path) -> None:
    target = f"127.0.0.1:{free_port()}"
    database = f"sqlite:///{tmp_path / 'shared.db'}"
    servers = [
        Process(["--listen", target, "--database-url", database, "--reuse-port"], tmp_path / n)
        for n in ("a.log", "b.log")
    ]
    try:
        for server in servers:
            await wait_serving(target, server)

            async def listening(server: Process = server) -> bool:
                assert server.proc.poll() is None, server.log
                return "serving campaign.v1" in server.log

            await eventually(listening, within=15)
    finally:
        for server in servers:
            server.kill()
