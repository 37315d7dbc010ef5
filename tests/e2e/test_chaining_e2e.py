"""End-of-list chaining seen by a dialer over the wire: the report, the stream's reasons."""

from __future__ import annotations

import grpc

from campaign_grpc_client.v1 import campaign_pb2 as pb
from campaign_grpc_client.v1 import campaign_pb2_grpc
from e2e_helpers import W, confirm_drained, create, fails, read_snapshot, set_status, watch
from factories import runnable_campaign

C = pb.Campaign
Stub = campaign_pb2_grpc.CampaignServiceStub


async def report(stub: Stub, customer: str, campaign_id: str) -> pb.Campaign:
    response = await stub.ReportOutdialExhausted(
        pb.ReportOutdialExhaustedRequest(customer_id=customer, id=campaign_id), timeout=10
    )
    return response.campaign


async def test_a_finished_campaign_starts_the_next_and_the_stream_says_why(
    stub: Stub, customer: str
) -> None:
    following = await create(stub, runnable_campaign(customer))
    first = await create(stub, runnable_campaign(customer, next_campaign_id=following.id))
    await set_status(stub, customer, first.id, C.STATUS_RUN)
    stream = watch(stub, customer)
    try:
        await read_snapshot(stream)
        reported = await report(stub, customer, first.id)
        assert reported.status == C.STATUS_STOPPING
        finishing = await stream.next_change()
        # The dialer drains, and confirms the stop it saw on the stream.
        await confirm_drained(stub, customer, first.id, finishing.stop_revision)
        completed, chained = [await stream.next_change() for _ in range(2)]
    finally:
        await stream.close()
    assert (finishing.campaign_id, finishing.status, finishing.reason) == (
        first.id,
        C.STATUS_STOPPING,
        W.REASON_FINISHED,
    )
    assert finishing.stop_revision == finishing.revision == reported.stop_revision
    assert (completed.status, completed.reason, completed.next_campaign_id) == (
        C.STATUS_STOP,
        W.REASON_DRAINED,
        following.id,
    )
    assert completed.next_campaign_result == W.NEXT_CAMPAIGN_RESULT_STARTED
    assert "started" in completed.detail
    assert (chained.campaign_id, chained.status, chained.previous_status, chained.reason) == (
        following.id,
        C.STATUS_RUN,
        C.STATUS_STOP,
        W.REASON_CHAINED,
    )
    assert chained.chained_from_campaign_id == first.id
    assert chained.revision == completed.revision + 1


async def test_continue_is_reported_in_the_stream_and_keeps_running(
    stub: Stub, customer: str
) -> None:
    c = await create(stub, runnable_campaign(customer, end_handle=C.END_HANDLE_CONTINUE))
    await set_status(stub, customer, c.id, C.STATUS_RUN)
    stream = watch(stub, customer, c.id)
    try:
        await read_snapshot(stream)
        assert (await report(stub, customer, c.id)).status == C.STATUS_RUN
        change = await stream.next_change()
    finally:
        await stream.close()
    assert (change.status, change.previous_status, change.reason) == (
        C.STATUS_RUN,
        C.STATUS_RUN,
        W.REASON_OUTDIAL_EXHAUSTED,
    )


async def test_a_stopped_campaign_refuses_the_report(stub: Stub, customer: str) -> None:
    c = await create(stub, runnable_campaign(customer))
    details = await fails(report(stub, customer, c.id), grpc.StatusCode.FAILED_PRECONDITION)
    assert details.info.reason == "CAMPAIGN_NOT_RUNNING"
    assert details.precondition_types == {"CAMPAIGN_NOT_RUNNING"}
