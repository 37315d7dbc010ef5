"""CRUD and the status lifecycle as a client sees them over a socket, on a real database file."""

from __future__ import annotations

import uuid

import grpc
import pytest
from google.protobuf import field_mask_pb2

from campaign_grpc.domain.types import Status
from campaign_grpc.settings import Settings
from campaign_grpc.storage.connect import close_database, open_database
from campaign_grpc.storage.store import Store
from campaign_grpc_client.v1 import campaign_pb2 as pb
from campaign_grpc_client.v1 import campaign_pb2_grpc
from e2e_helpers import W, confirm_drained, create, eventually, fails, get, set_status, watch
from factories import new_id, runnable_campaign

Code = grpc.StatusCode
C = pb.Campaign
Stub = campaign_pb2_grpc.CampaignServiceStub


def is_uuid(value: str) -> bool:
    return str(uuid.UUID(value)) == value


async def update(stub: Stub, campaign: pb.Campaign, *paths: str) -> pb.Campaign:
    response = await stub.UpdateCampaign(
        pb.UpdateCampaignRequest(
            campaign=campaign, update_mask=field_mask_pb2.FieldMask(paths=list(paths))
        ),
        timeout=10,
    )
    return response.campaign


async def delete(stub: Stub, customer: str, campaign_id: str, etag: str = "") -> pb.Campaign:
    response = await stub.DeleteCampaign(
        pb.DeleteCampaignRequest(customer_id=customer, id=campaign_id, etag=etag), timeout=10
    )
    return response.campaign


async def undelete(stub: Stub, customer: str, campaign_id: str) -> pb.Campaign:
    response = await stub.UndeleteCampaign(
        pb.UndeleteCampaignRequest(customer_id=customer, id=campaign_id), timeout=10
    )
    return response.campaign


async def list_page(stub: Stub, customer: str, **kwargs: object) -> pb.ListCampaignsResponse:
    return await stub.ListCampaigns(  # type: ignore[no-any-return]
        pb.ListCampaignsRequest(customer_id=customer, **kwargs),  # type: ignore[arg-type]
        timeout=10,
    )


async def list_all(stub: Stub, customer: str, page_size: int, **kwargs: object) -> list[str]:
    ids: list[str] = []
    token = ""
    for _ in range(100):
        page = await list_page(stub, customer, page_size=page_size, page_token=token, **kwargs)
        assert len(page.campaigns) <= (page_size or 50)
        ids += [c.id for c in page.campaigns]
        token = page.next_page_token
        if not token:
            return ids
    raise AssertionError("the listing never ended")


# -- create and get -----------------------------------------------------------------------


async def test_create_then_get_returns_the_stored_campaign(stub: Stub, customer: str) -> None:
    sent = runnable_campaign(customer, name="spring promo", service_level=40)
    created = await create(stub, sent)

    assert is_uuid(created.id)
    assert created.customer_id == customer
    assert created.status == C.STATUS_STOP
    assert created.end_handle == C.END_HANDLE_STOP
    assert created.name == "spring promo"
    assert created.service_level == 40
    assert created.outplan_id == sent.outplan_id
    assert created.outdial_id == sent.outdial_id
    assert [a.type for a in created.actions] == ["answer", "talk"]
    assert all(is_uuid(a.id) for a in created.actions)
    assert dict(created.actions[1].option) == {"text": "hello"}
    assert created.HasField("tm_create")
    assert not created.HasField("tm_update")
    assert not created.HasField("tm_delete")
    assert created.etag

    assert await get(stub, customer, created.id) == created


async def test_create_ignores_output_only_fields(stub: Stub, customer: str) -> None:
    sent = runnable_campaign(customer, status=C.STATUS_RUN, etag="made-up")
    sent.tm_update.FromSeconds(1_000)
    sent.tm_delete.FromSeconds(2_000)

    created = await create(stub, sent)

    assert created.status == C.STATUS_STOP
    assert created.etag != "made-up"
    assert not created.HasField("tm_update")
    assert not created.HasField("tm_delete")
    page = await list_page(stub, customer)
    assert [c.id for c in page.campaigns] == [created.id]


async def test_a_chosen_id_is_kept_and_a_duplicate_is_already_exists(
    stub: Stub, customer: str
) -> None:
    chosen = new_id()
    created = await create(stub, runnable_campaign(customer, id=chosen))
    assert created.id == chosen

    err = await fails(
        create(stub, runnable_campaign(customer, id=chosen, name="again")), Code.ALREADY_EXISTS
    )
    assert err.info.reason == "CAMPAIGN_ALREADY_EXISTS"
    assert (await get(stub, customer, chosen)).name == "spring promo"


async def test_invalid_create_names_every_bad_field_at_once(stub: Stub, customer: str) -> None:
    bad = runnable_campaign(
        customer,
        type=C.TYPE_UNSPECIFIED,
        name="x" * 256,
        detail="d" * 4097,
        service_level=101,
        outplan_id="not-a-uuid",
        actions=[pb.Action(type="answer"), pb.Action(type="fly_to_the_moon")],
    )

    err = await fails(create(stub, bad, request_id="nope"), Code.INVALID_ARGUMENT)

    assert err.fields == {
        "campaign.type",
        "campaign.name",
        "campaign.detail",
        "campaign.service_level",
        "campaign.outplan_id",
        "campaign.actions[1].type",
        "request_id",
    }
    assert err.precondition is None
    assert (await list_page(stub, customer)).campaigns == []


async def test_a_retried_create_with_the_same_request_id_returns_the_first_campaign(
    stub: Stub, customer: str
) -> None:
    request_id = new_id()
    first = await create(stub, runnable_campaign(customer), request_id=request_id)
    retried = await create(stub, runnable_campaign(customer), request_id=request_id)
    other = await create(stub, runnable_campaign(customer), request_id=new_id())

    assert retried == first
    assert other.id != first.id
    ids = await list_all(stub, customer, page_size=10)
    assert sorted(ids) == sorted([first.id, other.id])


async def test_broken_references_are_failed_precondition(stub: Stub, customer: str) -> None:
    missing = new_id()
    err = await fails(
        create(stub, runnable_campaign(customer, next_campaign_id=missing)),
        Code.FAILED_PRECONDITION,
    )
    assert err.info.reason == "NEXT_CAMPAIGN_INVALID"
    assert err.subjects == {"next_campaign_id"}
    err_missing_message = err.status.message

    first = await create(stub, runnable_campaign(customer))
    err = await fails(
        create(stub, runnable_campaign(customer, outdial_id=first.outdial_id)),
        Code.FAILED_PRECONDITION,
    )
    assert err.info.reason == "OUTDIAL_IN_USE"
    assert err.precondition_types == {"OUTDIAL_IN_USE"}
    assert err.subjects == {"outdial_id"}

    # Another customer's campaign is no reference either, and looks like a missing one.
    other = await create(stub, runnable_campaign(new_id()))
    theirs = await fails(
        create(stub, runnable_campaign(customer, next_campaign_id=other.id)),
        Code.FAILED_PRECONDITION,
    )
    assert theirs.precondition_types == {"NEXT_CAMPAIGN_INVALID"}
    assert theirs.status.message.replace(other.id, missing) == err_missing_message

    chained = await create(stub, runnable_campaign(customer, next_campaign_id=first.id))
    assert chained.next_campaign_id == first.id


# -- tenant isolation ---------------------------------------------------------------------


async def test_another_customers_campaign_answers_exactly_like_a_missing_one(
    stub: Stub, customer: str
) -> None:
    theirs = await create(stub, runnable_campaign(new_id()))
    missing = new_id()

    def as_seen(err_message: str, campaign_id: str) -> str:
        return err_message.replace(campaign_id, "<id>")

    calls = {
        "get": lambda cid: get(stub, customer, cid),
        "update": lambda cid: update(
            stub, runnable_campaign(customer, id=cid, name="mine now"), "name"
        ),
        "delete": lambda cid: delete(stub, customer, cid),
        "undelete": lambda cid: undelete(stub, customer, cid),
        "run": lambda cid: set_status(stub, customer, cid, C.STATUS_RUN),
    }
    for name, call in calls.items():
        for_theirs = await fails(call(theirs.id), Code.NOT_FOUND)
        for_missing = await fails(call(missing), Code.NOT_FOUND)
        assert for_theirs.info.reason == for_missing.info.reason == "CAMPAIGN_NOT_FOUND", name
        assert as_seen(for_theirs.status.message, theirs.id) == as_seen(
            for_missing.status.message, missing
        ), name
        assert set(for_theirs.info.metadata) == set(for_missing.info.metadata), name
        assert theirs.customer_id not in str(for_theirs.status), name

    assert (await list_page(stub, customer, show_deleted=True)).campaigns == []
    # Nothing changed for the owner.
    assert await get(stub, theirs.customer_id, theirs.id) == theirs

    stream = watch(stub, customer, theirs.id)
    try:
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await stream.next()
        assert raised.value.code() == Code.NOT_FOUND
    finally:
        await stream.close()


# -- update ---------------------------------------------------------------------------------


async def test_update_changes_only_the_masked_fields_and_gives_a_new_etag(
    stub: Stub, customer: str
) -> None:
    created = await create(stub, runnable_campaign(customer, name="before", detail="kept"))
    change = pb.Campaign(
        customer_id=customer, id=created.id, name="after", detail="ignored", service_level=70
    )

    updated = await update(stub, change, "name", "service_level")

    assert updated.name == "after"
    assert updated.service_level == 70
    assert updated.detail == "kept"
    assert updated.outdial_id == created.outdial_id
    assert updated.etag != created.etag
    assert updated.HasField("tm_update")
    assert updated.tm_create == created.tm_create
    assert await get(stub, customer, created.id) == updated


async def test_update_mask_is_required_and_names_only_updatable_fields(
    stub: Stub, customer: str
) -> None:
    created = await create(stub, runnable_campaign(customer))
    change = pb.Campaign(customer_id=customer, id=created.id, name="x", status=C.STATUS_RUN)

    err = await fails(update(stub, change), Code.INVALID_ARGUMENT)
    assert err.fields == {"update_mask"}
    err = await fails(update(stub, change, "name", "status"), Code.INVALID_ARGUMENT)
    assert err.fields == {"update_mask"}
    assert "status" in err.bad_request.field_violations[0].description  # type: ignore[union-attr]

    assert await get(stub, customer, created.id) == created


async def test_a_stale_etag_is_aborted_and_changes_nothing(stub: Stub, customer: str) -> None:
    created = await create(stub, runnable_campaign(customer, name="v1"))
    current = await update(
        stub, pb.Campaign(customer_id=customer, id=created.id, name="v2"), "name"
    )

    stale = pb.Campaign(customer_id=customer, id=created.id, name="v3", etag=created.etag)
    err = await fails(update(stub, stale, "name"), Code.ABORTED)
    assert err.info.reason == "ETAG_MISMATCH"
    await fails(delete(stub, customer, created.id, etag=created.etag), Code.ABORTED)
    assert await get(stub, customer, created.id) == current

    fresh = pb.Campaign(customer_id=customer, id=created.id, name="v3", etag=current.etag)
    assert (await update(stub, fresh, "name")).name == "v3"


async def test_a_running_campaign_cannot_be_updated_into_one_that_could_not_run(
    stub: Stub, customer: str
) -> None:
    created = await create(stub, runnable_campaign(customer))
    running = await set_status(stub, customer, created.id, C.STATUS_RUN)

    err = await fails(
        update(stub, pb.Campaign(customer_id=customer, id=created.id), "outdial_id", "actions"),
        Code.FAILED_PRECONDITION,
    )
    assert err.precondition_types == {"OUTDIAL_MISSING", "NOTHING_TO_RUN"}
    assert await get(stub, customer, created.id) == running

    renamed = await update(
        stub, pb.Campaign(customer_id=customer, id=created.id, name="still running"), "name"
    )
    assert renamed.status == C.STATUS_RUN


# -- delete and undelete --------------------------------------------------------------------


async def test_delete_is_soft_and_undelete_restores(stub: Stub, customer: str) -> None:
    created = await create(stub, runnable_campaign(customer))

    deleted = await delete(stub, customer, created.id, etag=created.etag)
    assert deleted.HasField("tm_delete")
    assert deleted.status == C.STATUS_STOP
    assert await get(stub, customer, created.id) == deleted
    assert (await list_page(stub, customer)).campaigns == []
    assert [c.id for c in (await list_page(stub, customer, show_deleted=True)).campaigns] == [
        created.id
    ]
    err = await fails(
        set_status(stub, customer, created.id, C.STATUS_RUN), Code.FAILED_PRECONDITION
    )
    assert "CAMPAIGN_DELETED" in err.precondition_types

    restored = await undelete(stub, customer, created.id)
    assert not restored.HasField("tm_delete")
    assert restored.status == C.STATUS_STOP
    assert [c.id for c in (await list_page(stub, customer)).campaigns] == [created.id]


async def test_only_a_stopped_campaign_can_be_deleted(stub: Stub, customer: str) -> None:
    created = await create(stub, runnable_campaign(customer))
    await set_status(stub, customer, created.id, C.STATUS_RUN)

    err = await fails(delete(stub, customer, created.id), Code.FAILED_PRECONDITION)
    assert err.info.reason == "CAMPAIGN_NOT_STOPPED"
    assert err.precondition is not None

    await set_status(stub, customer, created.id, C.STATUS_STOP, force=True)
    assert (await delete(stub, customer, created.id)).HasField("tm_delete")


async def test_undelete_refuses_when_the_outdial_now_belongs_to_another_campaign(
    stub: Stub, customer: str
) -> None:
    first = await create(stub, runnable_campaign(customer))
    await delete(stub, customer, first.id)
    second = await create(stub, runnable_campaign(customer, outdial_id=first.outdial_id))

    err = await fails(undelete(stub, customer, first.id), Code.FAILED_PRECONDITION)
    assert err.precondition_types == {"OUTDIAL_IN_USE"}
    assert (await get(stub, customer, first.id)).HasField("tm_delete")

    await delete(stub, customer, second.id)
    assert not (await undelete(stub, customer, first.id)).HasField("tm_delete")


# -- list -----------------------------------------------------------------------------------


async def test_list_pages_newest_first_with_tokens_tied_to_their_filters(
    stub: Stub, customer: str
) -> None:
    made = [(await create(stub, runnable_campaign(customer, name=f"c{i}"))).id for i in range(7)]
    await create(stub, runnable_campaign(new_id()))  # another customer's, never listed

    first = await list_page(stub, customer, page_size=3)
    assert [c.id for c in first.campaigns] == made[::-1][:3]
    assert first.next_page_token

    assert await list_all(stub, customer, page_size=3) == made[::-1]
    assert await list_all(stub, customer, page_size=0) == made[::-1]

    token = first.next_page_token
    for filters in (
        {"status": C.STATUS_STOP},
        {"type": C.TYPE_CALL},
        {"show_deleted": True},
    ):
        err = await fails(
            list_page(stub, customer, page_size=3, page_token=token, **filters),
            Code.INVALID_ARGUMENT,
        )
        assert err.fields == {"page_token"}
        assert err.info.reason == "INVALID_PAGE_TOKEN"
    await fails(list_page(stub, new_id(), page_token=token), Code.INVALID_ARGUMENT)
    for garbage in ("garbage", "AAAA", token[:-2], "!!!!" + token):
        err = await fails(list_page(stub, customer, page_token=garbage), Code.INVALID_ARGUMENT)
        assert err.fields == {"page_token"}
    err = await fails(list_page(stub, customer, page_size=-1), Code.INVALID_ARGUMENT)
    assert err.fields == {"page_size"}


async def test_list_neither_skips_nor_repeats_while_campaigns_are_created(
    stub: Stub, customer: str
) -> None:
    made = [(await create(stub, runnable_campaign(customer))).id for _ in range(6)]

    seen: list[str] = []
    added: list[str] = []
    token = ""
    while True:
        page = await list_page(stub, customer, page_size=2, page_token=token)
        seen += [c.id for c in page.campaigns]
        token = page.next_page_token
        if not token:
            break
        added.append((await create(stub, runnable_campaign(customer))).id)
        assert len(added) < 10

    assert seen == made[::-1]
    # The new ones are there for the next listing, newest first.
    assert await list_all(stub, customer, page_size=4) == (made + added)[::-1]


async def test_list_filters_by_status_type_and_deletion(stub: Stub, customer: str) -> None:
    running = await create(stub, runnable_campaign(customer))
    await set_status(stub, customer, running.id, C.STATUS_RUN)
    flow = await create(stub, runnable_campaign(customer, type=C.TYPE_FLOW))
    gone = await create(stub, runnable_campaign(customer))
    await delete(stub, customer, gone.id)

    assert await list_all(stub, customer, 10, status=C.STATUS_RUN) == [running.id]
    assert await list_all(stub, customer, 10, type=C.TYPE_FLOW) == [flow.id]
    assert await list_all(stub, customer, 10, status=C.STATUS_STOP) == [flow.id]
    assert await list_all(stub, customer, 10, status=C.STATUS_STOP, show_deleted=True) == [
        gone.id,
        flow.id,
    ]


# -- status lifecycle -------------------------------------------------------------------------


async def test_run_lists_every_unmet_condition(stub: Stub, customer: str) -> None:
    bare = await create(stub, pb.Campaign(customer_id=customer, type=C.TYPE_CALL))

    err = await fails(set_status(stub, customer, bare.id, C.STATUS_RUN), Code.FAILED_PRECONDITION)

    assert err.info.reason == "RUN_CONDITIONS_UNMET"
    assert err.precondition_types == {"OUTPLAN_MISSING", "OUTDIAL_MISSING", "NOTHING_TO_RUN"}
    assert (await get(stub, customer, bare.id)).status == C.STATUS_STOP


async def test_run_needs_a_next_campaign_that_is_still_valid(stub: Stub, customer: str) -> None:
    target = await create(stub, runnable_campaign(customer))
    chained = await create(stub, runnable_campaign(customer, next_campaign_id=target.id))
    # While chained names it, target cannot be deleted; with chained deleted too, it can,
    # and chained restored then names a deleted campaign.
    refused = await fails(delete(stub, customer, target.id), Code.FAILED_PRECONDITION)
    assert (refused.info.reason, refused.subjects) == ("CAMPAIGN_REFERENCED", {chained.id})
    await delete(stub, customer, chained.id)
    await delete(stub, customer, target.id)
    await stub.UndeleteCampaign(
        pb.UndeleteCampaignRequest(customer_id=customer, id=chained.id), timeout=10
    )

    err = await fails(
        set_status(stub, customer, chained.id, C.STATUS_RUN), Code.FAILED_PRECONDITION
    )
    assert err.precondition_types == {"NEXT_CAMPAIGN_INVALID"}


async def test_status_lifecycle_run_stopping_stop(stub: Stub, customer: str) -> None:
    created = await create(stub, runnable_campaign(customer))

    running = await set_status(stub, customer, created.id, C.STATUS_RUN)
    assert running.status == C.STATUS_RUN
    assert running.etag != created.etag
    again = await set_status(stub, customer, created.id, C.STATUS_RUN)
    assert again == running  # a no-op

    stopping = await set_status(stub, customer, created.id, C.STATUS_STOP)
    assert stopping.status == C.STATUS_STOPPING
    rerun = await set_status(stub, customer, created.id, C.STATUS_RUN)
    assert rerun.status == C.STATUS_RUN
    again_stopping = await set_status(stub, customer, created.id, C.STATUS_STOP)
    assert again_stopping.stop_revision > stopping.stop_revision
    assert await set_status(stub, customer, created.id, C.STATUS_STOP) == again_stopping
    confirmed = await confirm_drained(stub, customer, created.id, again_stopping.stop_revision)
    assert confirmed.status == C.STATUS_STOP
    assert await set_status(stub, customer, created.id, C.STATUS_STOP) == confirmed

    await set_status(stub, customer, created.id, C.STATUS_RUN)
    forced = await set_status(stub, customer, created.id, C.STATUS_STOP, force=True)
    assert forced.status == C.STATUS_STOP
    assert await get(stub, customer, created.id) == forced


@pytest.mark.parametrize(
    "status", [C.STATUS_STOPPING, C.STATUS_UNSPECIFIED, 99], ids=["stopping", "unset", "unknown"]
)
async def test_only_run_and_stop_may_be_requested(
    stub: Stub, customer: str, status: pb.Campaign.Status.ValueType
) -> None:
    created = await create(stub, runnable_campaign(customer))
    await set_status(stub, customer, created.id, C.STATUS_RUN)

    err = await fails(set_status(stub, customer, created.id, status), Code.INVALID_ARGUMENT)

    assert err.fields == {"status"}
    assert (await get(stub, customer, created.id)).status == C.STATUS_RUN


async def test_a_stopping_campaign_becomes_stop_when_the_grace_runs_out(
    start_server, settings: Settings, customer: str
) -> None:
    app = await start_server(settings, stop_grace=0.3)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel:
        stub = campaign_pb2_grpc.CampaignServiceStub(channel)
        created = await create(stub, runnable_campaign(customer))
        await set_status(stub, customer, created.id, C.STATUS_RUN)
        stopping = await set_status(stub, customer, created.id, C.STATUS_STOP)
        assert stopping.status == C.STATUS_STOPPING

        async def stopped() -> bool:
            return (await get(stub, customer, created.id)).status == C.STATUS_STOP

        await eventually(stopped, within=5)
        assert (await get(stub, customer, created.id)).etag != stopping.etag


async def test_the_stop_deadline_survives_a_restart(
    start_server, settings: Settings, customer: str
) -> None:
    first = await start_server(settings, stop_grace=2)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{first.port}") as channel:
        stub = campaign_pb2_grpc.CampaignServiceStub(channel)
        created = await create(stub, runnable_campaign(customer))
        await set_status(stub, customer, created.id, C.STATUS_RUN)
        stopping = await set_status(stub, customer, created.id, C.STATUS_STOP)
        assert stopping.status == C.STATUS_STOPPING
    await first.stop()

    # Nothing completed it while the server was going down: the restart has work to do.
    db = open_database(settings.database_url)
    try:
        stored = Store(db).get(customer, created.id)
        assert stored is not None
        assert stored.status == Status.STOPPING
        assert stored.stop_deadline is not None
    finally:
        close_database(db)

    # The new server's own grace is long: only the stored deadline can complete the stop.
    second = await start_server(settings, stop_grace=600)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{second.port}") as channel:
        stub = campaign_pb2_grpc.CampaignServiceStub(channel)

        async def stopped() -> bool:
            return (await get(stub, customer, created.id)).status == C.STATUS_STOP

        await eventually(stopped, within=6)

        # The log says why: the grace expired.
        stream = watch(stub, customer, created.id, after_revision=1)
        try:
            changes = [await stream.next_change() for _ in range(3)]
        finally:
            await stream.close()
        assert [(m.previous_status, m.status) for m in changes] == [
            (C.STATUS_STOP, C.STATUS_RUN),
            (C.STATUS_RUN, C.STATUS_STOPPING),
            (C.STATUS_STOPPING, C.STATUS_STOP),
        ]
        assert changes[-1].reason == W.REASON_GRACE_EXPIRED
