"""The servicer through grpcio-testing: each RPC's response, and each error's status and details."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import grpc
import pytest
from google.protobuf import field_mask_pb2, message, struct_pb2, timestamp_pb2
from google.rpc import error_details_pb2, status_pb2

from aio_testing import Harness
from campaign_grpc.domain.campaigns import Campaigns
from campaign_grpc_client.v1 import campaign_pb2 as pb
from factories import new_id, runnable_campaign

if TYPE_CHECKING:
    from conftest import FakeClock

Code = grpc.StatusCode
C = pb.Campaign
W = pb.WatchStatusResponse
DOMAIN = "campaign-grpc"
DETAILS_KEY = "grpc-status-details-bin"


@pytest.fixture
def harness(sqlite_url: str, clock: FakeClock) -> Iterator[Harness]:
    h = Harness(sqlite_url, clock=clock)
    try:
        yield h
    finally:
        h.close()


@pytest.fixture
def other_customer() -> str:
    return str(uuid.uuid4())


# -- helpers ---------------------------------------------------------------------------------


@dataclass
class Failure:
    code: grpc.StatusCode
    status: status_pb2.Status
    info: error_details_pb2.ErrorInfo
    bad_request: error_details_pb2.BadRequest | None
    precondition: error_details_pb2.PreconditionFailure | None
    trailing_metadata: tuple[tuple[str, Any], ...]

    @property
    def fields(self) -> list[str]:
        assert self.bad_request is not None, "no BadRequest in the details"
        return [v.field for v in self.bad_request.field_violations]

    @property
    def violations(self) -> list[tuple[str, str]]:
        assert self.precondition is not None, "no PreconditionFailure in the details"
        return [(v.type, v.subject) for v in self.precondition.violations]


def failure(trailing_metadata: Any, code: grpc.StatusCode, details: str) -> Failure:
    """Decodes the google.rpc.Status a client would read from the trailers."""
    assert code != Code.OK
    packed = [value for key, value in trailing_metadata if key == DETAILS_KEY]
    assert len(packed) == 1, f"{DETAILS_KEY} missing from {trailing_metadata!r}"
    status = status_pb2.Status.FromString(packed[0])
    # What grpc_status.rpc_status.from_call checks: the status agrees with the call's.
    assert status.code == code.value[0]
    assert status.message == details
    found: dict[str, Any] = {}
    for holder in status.details:
        for kind in (
            error_details_pb2.ErrorInfo,
            error_details_pb2.BadRequest,
            error_details_pb2.PreconditionFailure,
        ):
            if holder.Is(kind.DESCRIPTOR):
                detail = kind()
                holder.Unpack(detail)
                assert kind.__name__ not in found, f"two {kind.__name__} in the details"
                found[kind.__name__] = detail
                break
        else:
            raise AssertionError(f"unexpected detail {holder.type_url}")
    info = found.get("ErrorInfo")
    assert info is not None, "no ErrorInfo in the details"
    assert info.domain == DOMAIN
    assert re.fullmatch(r"[A-Z][A-Z0-9_]*[A-Z0-9]", info.reason), info.reason
    return Failure(
        code,
        status,
        info,
        found.get("BadRequest"),
        found.get("PreconditionFailure"),
        tuple(trailing_metadata),
    )


def call(h: Harness, method: str, request: message.Message) -> Any:
    response, _, code, details = h.unary(method, request)
    assert code == Code.OK, f"{method}: {code} {details}"
    # grpc_testing hands the message over as is: check that it survives the wire too.
    assert type(response).FromString(response.SerializeToString()) == response
    return response


def fails(h: Harness, method: str, request: message.Message) -> Failure:
    response, trailing_metadata, code, details = h.unary(method, request)
    assert code != Code.OK, f"{method} succeeded: {response}"
    assert response is None
    return failure(trailing_metadata, code, details)


def watch_fails(h: Harness, request: pb.WatchStatusRequest) -> Failure:
    rpc = h.stream("WatchStatus", request)
    trailing_metadata, code, details = rpc.termination()
    return failure(trailing_metadata, code, details)


def create(h: Harness, campaign: pb.Campaign, request_id: str = "") -> pb.Campaign:
    response = call(
        h, "CreateCampaign", pb.CreateCampaignRequest(campaign=campaign, request_id=request_id)
    )
    return response.campaign


def get(h: Harness, customer: str, campaign_id: str) -> pb.Campaign:
    return call(
        h, "GetCampaign", pb.GetCampaignRequest(customer_id=customer, id=campaign_id)
    ).campaign


def update_request(campaign: pb.Campaign, *paths: str) -> pb.UpdateCampaignRequest:
    return pb.UpdateCampaignRequest(
        campaign=campaign, update_mask=field_mask_pb2.FieldMask(paths=list(paths))
    )


def status_request(
    customer: str, campaign_id: str, status: pb.Campaign.Status.ValueType, force: bool = False
) -> pb.UpdateCampaignStatusRequest:
    return pb.UpdateCampaignStatusRequest(
        customer_id=customer, id=campaign_id, status=status, force=force
    )


def set_status(
    h: Harness, customer: str, campaign_id: str, status: pb.Campaign.Status.ValueType, **kw: bool
) -> pb.Campaign:
    return call(
        h, "UpdateCampaignStatus", status_request(customer, campaign_id, status, **kw)
    ).campaign


def delete(h: Harness, customer: str, campaign_id: str, etag: str = "") -> pb.Campaign:
    return call(
        h,
        "DeleteCampaign",
        pb.DeleteCampaignRequest(customer_id=customer, id=campaign_id, etag=etag),
    ).campaign


def timestamp(us: int) -> timestamp_pb2.Timestamp:
    ts = timestamp_pb2.Timestamp()
    ts.FromMicroseconds(us)
    return ts


def is_uuid(value: str) -> bool:
    return str(uuid.UUID(value)) == value


def listed_ids(h: Harness, customer: str, **filters: Any) -> list[str]:
    request = pb.ListCampaignsRequest(customer_id=customer, page_size=1000, **filters)
    return [c.id for c in call(h, "ListCampaigns", request).campaigns]


# -- CreateCampaign -------------------------------------------------------------------------


def test_create_returns_the_campaign_with_server_made_fields(
    harness: Harness, customer: str, clock: FakeClock
) -> None:
    option = struct_pb2.Struct()
    option.update(
        {
            "text": "hello",
            "count": 3,
            "ratio": 0.25,
            "loud": True,
            "nothing": None,
            "list": [1, "two", {"three": 3}],
            "nested": {"deeper": {"deepest": "x"}},
        }
    )
    kept_id = new_id()
    sent = runnable_campaign(
        customer,
        detail="for the spring",
        service_level=80,
        actions=[
            pb.Action(type="answer"),
            pb.Action(id=kept_id, type="talk", option=option),
            pb.Action(type="hangup"),
        ],
    )
    got = create(harness, sent)

    assert is_uuid(got.id)
    assert got.customer_id == customer
    assert got.type == C.TYPE_CALL
    assert got.status == C.STATUS_STOP
    assert got.end_handle == C.END_HANDLE_STOP
    assert (got.name, got.detail, got.service_level) == ("spring promo", "for the spring", 80)
    assert (got.outplan_id, got.outdial_id) == (sent.outplan_id, sent.outdial_id)
    assert got.tm_create == timestamp(clock.now)
    assert not got.HasField("tm_update")
    assert not got.HasField("tm_delete")
    assert got.etag

    assert [a.type for a in got.actions] == ["answer", "talk", "hangup"]
    made = [a.id for a in got.actions]
    assert made[1] == kept_id
    assert all(is_uuid(i) for i in made)
    assert len(set(made)) == 3
    assert got.actions[1].option == option
    assert not got.actions[0].option.fields

    assert get(harness, customer, got.id) == got


def test_create_ignores_output_only_fields(
    harness: Harness, customer: str, clock: FakeClock
) -> None:
    sent = runnable_campaign(customer, status=C.STATUS_RUN, etag="chosen-by-the-client")
    sent.tm_create.CopyFrom(timestamp(1_000_000))
    sent.tm_update.CopyFrom(timestamp(2_000_000))
    sent.tm_delete.CopyFrom(timestamp(3_000_000))
    got = create(harness, sent)

    assert got.status == C.STATUS_STOP
    assert got.tm_create == timestamp(clock.now)
    assert not got.HasField("tm_update")
    assert not got.HasField("tm_delete")
    assert got.etag != "chosen-by-the-client"
    assert listed_ids(harness, customer) == [got.id]


def test_create_keeps_a_chosen_id_and_end_handle(harness: Harness, customer: str) -> None:
    chosen = new_id()
    got = create(
        harness,
        runnable_campaign(customer, id=chosen, type=C.TYPE_FLOW, end_handle=C.END_HANDLE_CONTINUE),
    )
    assert (got.id, got.type, got.end_handle) == (chosen, C.TYPE_FLOW, C.END_HANDLE_CONTINUE)


def test_a_retried_create_returns_the_first_campaign(harness: Harness, customer: str) -> None:
    request_id = new_id()
    first = create(harness, runnable_campaign(customer), request_id)
    again = create(harness, runnable_campaign(customer, name="retried"), request_id)

    assert again == first
    assert listed_ids(harness, customer) == [first.id]


def test_create_names_every_bad_field_at_once(harness: Harness) -> None:
    twice = new_id()
    big = struct_pb2.Struct()
    big.update({"blob": "x" * (64 * 1024 + 1)})
    sent = C(
        id="NOT-A-UUID",
        customer_id="customer",
        name="n" * 256,
        detail="d" * 4097,
        service_level=101,
        end_handle=9,  # type: ignore[arg-type]
        actions=[
            pb.Action(id=twice, type="no_such_action"),
            pb.Action(id=twice, type="talk"),
            pb.Action(type="talk", next_id=new_id(), option=big),
        ],
        outplan_id="plan",
        outdial_id=str(uuid.uuid4()).upper(),
        queue_id="queue",
        next_campaign_id="next",
    )
    f = fails(harness, "CreateCampaign", pb.CreateCampaignRequest(campaign=sent, request_id="r"))

    assert f.code == Code.INVALID_ARGUMENT
    assert f.info.reason == "INVALID_ARGUMENT"
    assert sorted(f.fields) == sorted(
        [
            "campaign.customer_id",
            "campaign.id",
            "request_id",
            "campaign.type",
            "campaign.name",
            "campaign.detail",
            "campaign.service_level",
            "campaign.end_handle",
            "campaign.actions[0].type",
            "campaign.actions[1].id",
            "campaign.actions[2].next_id",
            "campaign.actions[2].option",
            "campaign.outplan_id",
            "campaign.outdial_id",
            "campaign.queue_id",
            "campaign.next_campaign_id",
        ]
    )
    assert all(v.description for v in f.bad_request.field_violations)  # type: ignore[union-attr]
    assert f.precondition is None


def test_create_with_an_existing_id_is_already_exists(harness: Harness, customer: str) -> None:
    first = create(harness, runnable_campaign(customer))
    f = fails(
        harness,
        "CreateCampaign",
        pb.CreateCampaignRequest(campaign=runnable_campaign(customer, id=first.id)),
    )

    assert f.code == Code.ALREADY_EXISTS
    assert f.info.reason == "CAMPAIGN_ALREADY_EXISTS"
    assert f.info.metadata["id"] == first.id
    assert f.bad_request is None
    assert f.precondition is None
    assert listed_ids(harness, customer) == [first.id]


def test_create_with_broken_references_lists_each_one(harness: Harness, customer: str) -> None:
    holder = create(harness, runnable_campaign(customer))
    f = fails(
        harness,
        "CreateCampaign",
        pb.CreateCampaignRequest(
            campaign=runnable_campaign(
                customer, outdial_id=holder.outdial_id, next_campaign_id=new_id()
            )
        ),
    )

    assert f.code == Code.FAILED_PRECONDITION
    assert sorted(f.violations) == [
        ("NEXT_CAMPAIGN_INVALID", "next_campaign_id"),
        ("OUTDIAL_IN_USE", "outdial_id"),
    ]
    assert f.info.reason in {"NEXT_CAMPAIGN_INVALID", "OUTDIAL_IN_USE"}
    assert listed_ids(harness, customer) == [holder.id]


# -- GetCampaign and ListCampaigns ----------------------------------------------------------


def test_get_with_bad_ids_is_invalid_argument(harness: Harness) -> None:
    f = fails(harness, "GetCampaign", pb.GetCampaignRequest(customer_id="me", id=""))
    assert f.code == Code.INVALID_ARGUMENT
    assert sorted(f.fields) == ["customer_id", "id"]


def test_get_a_missing_campaign_is_not_found(harness: Harness, customer: str) -> None:
    missing = new_id()
    f = fails(harness, "GetCampaign", pb.GetCampaignRequest(customer_id=customer, id=missing))
    assert f.code == Code.NOT_FOUND
    assert f.info.reason == "CAMPAIGN_NOT_FOUND"
    assert f.bad_request is None
    assert f.precondition is None


def test_list_pages_newest_first_with_filters(harness: Harness, customer: str) -> None:
    # The fake clock stands still: all three share a tm_create.
    ids = [create(harness, runnable_campaign(customer)).id for _ in range(3)]
    flow = create(harness, runnable_campaign(customer, type=C.TYPE_FLOW))
    set_status(harness, customer, ids[0], C.STATUS_RUN)

    first = call(
        harness,
        "ListCampaigns",
        pb.ListCampaignsRequest(customer_id=customer, page_size=2, type=C.TYPE_CALL),
    )
    assert [c.id for c in first.campaigns] == [ids[2], ids[1]]
    assert first.next_page_token
    second = call(
        harness,
        "ListCampaigns",
        pb.ListCampaignsRequest(
            customer_id=customer, page_size=2, type=C.TYPE_CALL, page_token=first.next_page_token
        ),
    )
    assert [c.id for c in second.campaigns] == [ids[0]]
    assert second.campaigns[0].status == C.STATUS_RUN
    assert second.next_page_token == ""

    assert listed_ids(harness, customer, status=C.STATUS_RUN) == [ids[0]]
    assert listed_ids(harness, customer) == [flow.id, ids[2], ids[1], ids[0]]


def test_list_rejects_bad_arguments_and_tokens(harness: Harness, customer: str) -> None:
    f = fails(
        harness,
        "ListCampaigns",
        pb.ListCampaignsRequest(customer_id="x", page_size=-1, status=42, type=7),  # type: ignore[arg-type]
    )
    assert f.code == Code.INVALID_ARGUMENT
    assert sorted(f.fields) == ["customer_id", "page_size", "status", "type"]

    f = fails(
        harness,
        "ListCampaigns",
        pb.ListCampaignsRequest(customer_id=customer, page_token="not a token!"),
    )
    assert f.code == Code.INVALID_ARGUMENT
    assert f.fields == ["page_token"]

    for _ in range(2):
        create(harness, runnable_campaign(customer))
    token = call(
        harness, "ListCampaigns", pb.ListCampaignsRequest(customer_id=customer, page_size=1)
    ).next_page_token
    assert token
    f = fails(
        harness,
        "ListCampaigns",
        pb.ListCampaignsRequest(customer_id=customer, page_token=token, show_deleted=True),
    )
    assert f.code == Code.INVALID_ARGUMENT
    assert f.fields == ["page_token"]


# -- UpdateCampaign -------------------------------------------------------------------------


def test_update_changes_only_masked_fields(
    harness: Harness, customer: str, clock: FakeClock
) -> None:
    created = create(harness, runnable_campaign(customer))
    clock.advance(5)
    change = C(
        customer_id=customer,
        id=created.id,
        name="summer promo",
        detail="not in the mask",
        actions=[pb.Action(type="play"), pb.Action(type="hangup")],
    )
    got = call(harness, "UpdateCampaign", update_request(change, "name", "actions")).campaign

    assert got.name == "summer promo"
    assert got.detail == created.detail
    assert [a.type for a in got.actions] == ["play", "hangup"]
    assert all(is_uuid(a.id) for a in got.actions)
    assert got.outdial_id == created.outdial_id
    assert got.tm_create == created.tm_create
    assert got.tm_update == timestamp(clock.now)
    assert not got.HasField("tm_delete")
    assert got.etag
    assert got.etag != created.etag
    assert get(harness, customer, created.id) == got


def test_update_with_the_current_etag_succeeds(harness: Harness, customer: str) -> None:
    created = create(harness, runnable_campaign(customer))
    change = C(customer_id=customer, id=created.id, etag=created.etag, service_level=50)
    got = call(harness, "UpdateCampaign", update_request(change, "service_level")).campaign
    assert got.service_level == 50


def test_update_with_a_stale_etag_is_aborted_and_changes_nothing(
    harness: Harness, customer: str
) -> None:
    created = create(harness, runnable_campaign(customer))
    renamed = call(
        harness,
        "UpdateCampaign",
        update_request(C(customer_id=customer, id=created.id, name="second"), "name"),
    ).campaign
    stale = C(customer_id=customer, id=created.id, etag=created.etag, name="third")
    f = fails(harness, "UpdateCampaign", update_request(stale, "name"))

    assert f.code == Code.ABORTED
    assert f.info.reason == "ETAG_MISMATCH"
    assert f.bad_request is None
    assert f.precondition is None
    assert get(harness, customer, created.id) == renamed


def test_update_rejects_a_missing_or_unknown_mask(harness: Harness, customer: str) -> None:
    created = create(harness, runnable_campaign(customer))
    f = fails(harness, "UpdateCampaign", update_request(C(customer_id=customer, id=created.id)))
    assert f.code == Code.INVALID_ARGUMENT
    assert f.fields == ["update_mask"]

    change = C(customer_id=customer, id=created.id, name="x" * 300, status=C.STATUS_RUN)
    f = fails(harness, "UpdateCampaign", update_request(change, "name", "status", "tm_create"))
    assert f.code == Code.INVALID_ARGUMENT
    assert sorted(f.fields) == ["campaign.name", "update_mask", "update_mask"]
    described = " ".join(v.description for v in f.bad_request.field_violations)  # type: ignore[union-attr]
    assert "status" in described
    assert "tm_create" in described
    assert get(harness, customer, created.id) == created


def test_update_cannot_make_a_running_campaign_unrunnable(harness: Harness, customer: str) -> None:
    created = create(harness, runnable_campaign(customer))
    running = set_status(harness, customer, created.id, C.STATUS_RUN)
    change = C(customer_id=customer, id=created.id, outdial_id="")
    f = fails(harness, "UpdateCampaign", update_request(change, "outdial_id", "actions"))

    assert f.code == Code.FAILED_PRECONDITION
    assert f.info.reason == "RUN_CONDITIONS_UNMET"
    assert sorted(f.violations) == [
        ("NOTHING_TO_RUN", "actions"),
        ("OUTDIAL_MISSING", "outdial_id"),
    ]
    assert get(harness, customer, created.id) == running


def test_update_with_a_next_campaign_that_is_itself_is_failed_precondition(
    harness: Harness, customer: str
) -> None:
    created = create(harness, runnable_campaign(customer))
    change = C(customer_id=customer, id=created.id, next_campaign_id=created.id)
    f = fails(harness, "UpdateCampaign", update_request(change, "next_campaign_id"))
    assert f.code == Code.FAILED_PRECONDITION
    assert f.violations == [("NEXT_CAMPAIGN_INVALID", "next_campaign_id")]


# -- DeleteCampaign and UndeleteCampaign ----------------------------------------------------


def test_delete_is_soft_and_undelete_restores(
    harness: Harness, customer: str, clock: FakeClock
) -> None:
    created = create(harness, runnable_campaign(customer))
    clock.advance(1)
    deleted = delete(harness, customer, created.id, etag=created.etag)

    assert deleted.tm_delete == timestamp(clock.now)
    assert deleted.tm_update == timestamp(clock.now)
    assert deleted.status == C.STATUS_STOP
    assert deleted.etag != created.etag
    assert get(harness, customer, created.id) == deleted
    assert listed_ids(harness, customer) == []
    assert listed_ids(harness, customer, show_deleted=True) == [created.id]

    clock.advance(1)
    restored = call(
        harness, "UndeleteCampaign", pb.UndeleteCampaignRequest(customer_id=customer, id=created.id)
    ).campaign
    assert not restored.HasField("tm_delete")
    assert restored.tm_update == timestamp(clock.now)
    assert restored.status == C.STATUS_STOP
    assert restored.etag not in (created.etag, deleted.etag)
    assert listed_ids(harness, customer) == [created.id]


def test_delete_a_running_campaign_is_failed_precondition(harness: Harness, customer: str) -> None:
    created = create(harness, runnable_campaign(customer))
    running = set_status(harness, customer, created.id, C.STATUS_RUN)
    f = fails(
        harness, "DeleteCampaign", pb.DeleteCampaignRequest(customer_id=customer, id=created.id)
    )

    assert f.code == Code.FAILED_PRECONDITION
    assert f.info.reason == "CAMPAIGN_NOT_STOPPED"
    assert f.violations == [("CAMPAIGN_NOT_STOPPED", "status")]
    assert get(harness, customer, created.id) == running


def test_delete_with_a_stale_etag_is_aborted(harness: Harness, customer: str) -> None:
    created = create(harness, runnable_campaign(customer))
    set_status(harness, customer, created.id, C.STATUS_RUN)
    stopped = set_status(harness, customer, created.id, C.STATUS_STOP, force=True)
    f = fails(
        harness,
        "DeleteCampaign",
        pb.DeleteCampaignRequest(customer_id=customer, id=created.id, etag=created.etag),
    )
    assert f.code == Code.ABORTED
    assert f.info.reason == "ETAG_MISMATCH"
    assert get(harness, customer, created.id) == stopped


def test_undelete_when_the_outdial_is_taken_is_failed_precondition(
    harness: Harness, customer: str
) -> None:
    first = create(harness, runnable_campaign(customer))
    deleted = delete(harness, customer, first.id)
    create(harness, runnable_campaign(customer, outdial_id=first.outdial_id))
    f = fails(
        harness, "UndeleteCampaign", pb.UndeleteCampaignRequest(customer_id=customer, id=first.id)
    )

    assert f.code == Code.FAILED_PRECONDITION
    assert f.info.reason == "OUTDIAL_IN_USE"
    assert f.violations == [("OUTDIAL_IN_USE", "outdial_id")]
    assert get(harness, customer, first.id) == deleted


# -- UpdateCampaignStatus -------------------------------------------------------------------


def test_run_stop_and_confirm(harness: Harness, customer: str, clock: FakeClock) -> None:
    created = create(harness, runnable_campaign(customer))
    clock.advance(1)
    running = set_status(harness, customer, created.id, C.STATUS_RUN)
    assert running.status == C.STATUS_RUN
    assert running.tm_update == timestamp(clock.now)
    assert running.etag != created.etag
    assert set_status(harness, customer, created.id, C.STATUS_RUN) == running

    stopping = set_status(harness, customer, created.id, C.STATUS_STOP)
    assert stopping.status == C.STATUS_STOPPING
    assert stopping.stop_revision > 0
    assert set_status(harness, customer, created.id, C.STATUS_STOP) == stopping
    confirm = pb.ConfirmDrainedRequest(
        customer_id=customer, id=created.id, stop_revision=stopping.stop_revision
    )
    stopped = call(harness, "ConfirmDrained", confirm).campaign
    assert stopped.status == C.STATUS_STOP
    assert stopped.stop_revision == stopping.stop_revision
    assert call(harness, "ConfirmDrained", confirm).campaign == stopped

    set_status(harness, customer, created.id, C.STATUS_RUN)
    forced = set_status(harness, customer, created.id, C.STATUS_STOP, force=True)
    assert forced.status == C.STATUS_STOP


def test_run_lists_every_unmet_condition(harness: Harness, customer: str) -> None:
    following = create(harness, runnable_campaign(customer))
    bare = create(harness, C(customer_id=customer, type=C.TYPE_CALL, next_campaign_id=following.id))
    delete(harness, customer, bare.id)
    delete(harness, customer, following.id)
    call(harness, "UndeleteCampaign", pb.UndeleteCampaignRequest(customer_id=customer, id=bare.id))
    f = fails(harness, "UpdateCampaignStatus", status_request(customer, bare.id, C.STATUS_RUN))

    assert f.code == Code.FAILED_PRECONDITION
    assert f.info.reason == "RUN_CONDITIONS_UNMET"
    assert sorted(f.violations) == [
        ("NEXT_CAMPAIGN_INVALID", "next_campaign_id"),
        ("NOTHING_TO_RUN", "actions"),
        ("OUTDIAL_MISSING", "outdial_id"),
        ("OUTPLAN_MISSING", "outplan_id"),
    ]
    assert get(harness, customer, bare.id).status == C.STATUS_STOP


def test_a_confirmation_of_another_stop_is_a_precondition_failure(
    harness: Harness, customer: str
) -> None:
    created = create(harness, runnable_campaign(customer))
    set_status(harness, customer, created.id, C.STATUS_RUN)
    first = set_status(harness, customer, created.id, C.STATUS_STOP)
    set_status(harness, customer, created.id, C.STATUS_RUN)
    second = set_status(harness, customer, created.id, C.STATUS_STOP)
    late = pb.ConfirmDrainedRequest(
        customer_id=customer, id=created.id, stop_revision=first.stop_revision
    )
    f = fails(harness, "ConfirmDrained", late)
    assert f.code == Code.FAILED_PRECONDITION
    assert f.info.reason == "STOP_REVISION_MISMATCH"
    assert f.info.metadata["stop_revision"] == str(second.stop_revision)
    assert f.violations == [("STOP_REVISION_MISMATCH", "stop_revision")]
    assert get(harness, customer, created.id) == second


def test_confirming_without_a_stop_revision_is_invalid(harness: Harness, customer: str) -> None:
    created = create(harness, runnable_campaign(customer))
    f = fails(
        harness, "ConfirmDrained", pb.ConfirmDrainedRequest(customer_id=customer, id=created.id)
    )
    assert f.code == Code.INVALID_ARGUMENT
    assert f.fields == ["stop_revision"]


def test_a_status_change_with_a_stale_etag_is_aborted(harness: Harness, customer: str) -> None:
    created = create(harness, runnable_campaign(customer))
    running = set_status(harness, customer, created.id, C.STATUS_RUN)
    stale = status_request(customer, created.id, C.STATUS_STOP)
    stale.etag = created.etag
    f = fails(harness, "UpdateCampaignStatus", stale)
    assert f.code == Code.ABORTED
    assert f.info.reason == "ETAG_MISMATCH"
    assert f.info.metadata["etag"] == running.etag
    assert get(harness, customer, created.id) == running


@pytest.mark.parametrize("status", [C.STATUS_UNSPECIFIED, C.STATUS_STOPPING, 17])
def test_only_run_and_stop_may_be_requested(harness: Harness, customer: str, status: int) -> None:
    created = create(harness, runnable_campaign(customer))
    f = fails(
        harness,
        "UpdateCampaignStatus",
        status_request(customer, created.id, status),  # type: ignore[arg-type]
    )
    assert f.code == Code.INVALID_ARGUMENT
    assert f.fields == ["status"]
    assert get(harness, customer, created.id) == created


# -- WatchStatus ----------------------------------------------------------------------------


def test_watch_sends_the_snapshot_then_changes_and_ends_on_cancel(
    harness: Harness, customer: str, other_customer: str
) -> None:
    a = create(harness, runnable_campaign(customer))
    b = create(harness, runnable_campaign(customer))
    create(harness, runnable_campaign(other_customer))
    rpc = harness.stream("WatchStatus", pb.WatchStatusRequest(customer_id=customer))

    first, second, end = rpc.take_response(), rpc.take_response(), rpc.take_response()
    assert [(m.kind, m.campaign_id, m.status) for m in (first, second)] == [
        (W.KIND_SNAPSHOT, a.id, C.STATUS_STOP),
        (W.KIND_SNAPSHOT, b.id, C.STATUS_STOP),
    ]
    assert (first.revision, second.revision) == (1, 2)
    assert first.customer_id == customer
    assert first.tm_event == a.tm_create
    assert (end.kind, end.campaign_id, end.revision) == (W.KIND_SNAPSHOT_END, "", 3)

    running = set_status(harness, customer, b.id, C.STATUS_RUN)
    change = rpc.take_response()
    assert (change.kind, change.campaign_id, change.customer_id) == (
        W.KIND_CHANGE,
        b.id,
        customer,
    )
    assert (change.status, change.previous_status) == (C.STATUS_RUN, C.STATUS_STOP)
    assert (change.revision, change.reason, change.deleted) == (4, W.REASON_REQUESTED, False)
    assert change.tm_event == running.tm_update
    assert harness.subscribers() == 1

    rpc.cancel()
    harness.wait_streams_done()
    assert harness.subscribers(settle=0) == 0


def test_watch_one_campaign(harness: Harness, customer: str) -> None:
    create(harness, runnable_campaign(customer))
    watched = create(harness, runnable_campaign(customer))
    rpc = harness.stream(
        "WatchStatus", pb.WatchStatusRequest(customer_id=customer, campaign_id=watched.id)
    )
    snapshot, end = rpc.take_response(), rpc.take_response()
    assert (snapshot.kind, snapshot.campaign_id) == (W.KIND_SNAPSHOT, watched.id)
    assert (end.kind, end.revision) == (W.KIND_SNAPSHOT_END, 2)
    rpc.cancel()
    harness.wait_streams_done()
    assert harness.subscribers(settle=0) == 0


def test_watch_with_bad_arguments_is_invalid_argument(harness: Harness) -> None:
    f = watch_fails(
        harness, pb.WatchStatusRequest(customer_id="", campaign_id=new_id(), after_revision=-1)
    )
    assert f.code == Code.INVALID_ARGUMENT
    assert sorted(f.fields) == ["after_revision", "customer_id"]
    assert harness.subscribers() == 0


def test_watch_ahead_of_the_log_is_out_of_range(harness: Harness, customer: str) -> None:
    create(harness, runnable_campaign(customer))
    f = watch_fails(harness, pb.WatchStatusRequest(customer_id=customer, after_revision=5))
    assert f.code == Code.OUT_OF_RANGE
    assert f.info.metadata["head_revision"] == "1"


# -- another customer's campaign --------------------------------------------------------------


def _by_key(method: str, customer: str, campaign_id: str) -> message.Message:
    match method:
        case "GetCampaign":
            return pb.GetCampaignRequest(customer_id=customer, id=campaign_id)
        case "UpdateCampaign":
            return update_request(C(customer_id=customer, id=campaign_id, name="mine"), "name")
        case "DeleteCampaign":
            return pb.DeleteCampaignRequest(customer_id=customer, id=campaign_id)
        case "UndeleteCampaign":
            return pb.UndeleteCampaignRequest(customer_id=customer, id=campaign_id)
        case "UpdateCampaignStatus":
            return status_request(customer, campaign_id, C.STATUS_RUN)
        case "WatchStatus":
            return pb.WatchStatusRequest(customer_id=customer, campaign_id=campaign_id)
    raise AssertionError(method)


def _fails_by_key(h: Harness, method: str, customer: str, campaign_id: str) -> Failure:
    request = _by_key(method, customer, campaign_id)
    if method == "WatchStatus":
        return watch_fails(h, request)  # type: ignore[arg-type]
    return fails(h, method, request)


def _shape(f: Failure, asked: str) -> bytes:
    """The failure with the id the client asked for blanked out."""
    return f.status.SerializeToString().replace(asked.encode(), b"<id>") + repr(f.code).encode()


@pytest.mark.parametrize(
    "method",
    [
        "GetCampaign",
        "UpdateCampaign",
        "DeleteCampaign",
        "UndeleteCampaign",
        "UpdateCampaignStatus",
        "WatchStatus",
    ],
)
def test_another_customers_campaign_answers_like_a_missing_one(
    harness: Harness, customer: str, other_customer: str, method: str
) -> None:
    theirs = create(harness, runnable_campaign(other_customer, name="their secret name"))
    missing = new_id()

    foreign = _fails_by_key(harness, method, customer, theirs.id)
    absent = _fails_by_key(harness, method, customer, missing)

    assert foreign.code == Code.NOT_FOUND
    assert foreign.info.reason == "CAMPAIGN_NOT_FOUND"
    assert _shape(foreign, theirs.id) == _shape(absent, missing)
    leaked = b"".join(
        v if isinstance(v, bytes) else v.encode() for _, v in foreign.trailing_metadata
    )
    for secret in (other_customer, theirs.name, theirs.outdial_id, theirs.outplan_id, theirs.etag):
        assert secret.encode() not in leaked
        assert secret not in foreign.status.message
    assert get(harness, other_customer, theirs.id) == theirs


def test_a_reference_to_another_customers_campaign_answers_like_a_missing_one(
    harness: Harness, customer: str, other_customer: str
) -> None:
    theirs = create(harness, runnable_campaign(other_customer))
    missing = new_id()

    def refer_to(campaign_id: str) -> Failure:
        sent = runnable_campaign(customer, next_campaign_id=campaign_id)
        return fails(harness, "CreateCampaign", pb.CreateCampaignRequest(campaign=sent))

    foreign, absent = refer_to(theirs.id), refer_to(missing)
    assert foreign.code == Code.FAILED_PRECONDITION
    assert foreign.violations == [("NEXT_CAMPAIGN_INVALID", "next_campaign_id")]
    assert _shape(foreign, theirs.id) == _shape(absent, missing)


# -- what a client never sees ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "request_"),
    [
        ("CreateCampaign", pb.CreateCampaignRequest()),
        ("GetCampaign", pb.GetCampaignRequest()),
        ("ListCampaigns", pb.ListCampaignsRequest()),
        ("UpdateCampaign", pb.UpdateCampaignRequest()),
        ("DeleteCampaign", pb.DeleteCampaignRequest()),
        ("UndeleteCampaign", pb.UndeleteCampaignRequest()),
        ("UpdateCampaignStatus", pb.UpdateCampaignStatusRequest()),
    ],
)
def test_an_empty_request_is_invalid_argument(
    harness: Harness, method: str, request_: message.Message
) -> None:
    f = fails(harness, method, request_)
    assert f.code == Code.INVALID_ARGUMENT
    assert f.fields


@pytest.mark.parametrize("number", [float("nan"), float("inf"), float("-inf")])
def test_an_option_number_json_cannot_hold_is_invalid_argument(
    harness: Harness, customer: str, number: float
) -> None:
    option = struct_pb2.Struct()
    option.update({"volume": {"gain": number}})
    sent = runnable_campaign(customer, actions=[pb.Action(type="talk", option=option)])
    f = fails(harness, "CreateCampaign", pb.CreateCampaignRequest(campaign=sent))

    assert f.code == Code.INVALID_ARGUMENT
    assert f.fields == ["campaign.actions[0].option"]
    assert listed_ids(harness, customer) == []


def test_an_unexpected_error_is_internal_with_a_generic_message(
    harness: Harness,
    customer: str,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    secret = "Traceback: /srv/secret/path.py line 42"

    async def broken(self: Campaigns, customer_id: str, campaign_id: str) -> None:
        raise RuntimeError(secret)

    monkeypatch.setattr(Campaigns, "get", broken)
    f = fails(harness, "GetCampaign", pb.GetCampaignRequest(customer_id=customer, id=new_id()))

    assert f.code == Code.INTERNAL
    assert f.info.reason == "INTERNAL"
    assert f.bad_request is None
    assert f.precondition is None
    wire = f.status.SerializeToString()
    for text in (secret, "RuntimeError", "Traceback"):
        assert text not in f.status.message
        assert text.encode() not in wire
    # The operator still finds it in the log.
    assert any(r.exc_info and secret in str(r.exc_info[1]) for r in caplog.records)


def test_an_unexpected_error_in_a_watch_is_internal(
    harness: Harness, customer: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def broken(self: Campaigns, *args: object, **kwargs: object) -> None:
        raise RuntimeError("boom")

    monkeypatch.setattr(Campaigns, "snapshot_page", broken)
    f = watch_fails(harness, pb.WatchStatusRequest(customer_id=customer))
    assert f.code == Code.INTERNAL
    assert "boom" not in f.status.message
    assert harness.subscribers() == 0


def test_report_outdial_exhausted_finishes_a_running_campaign(
    harness: Harness, customer: str
) -> None:
    c = create(harness, runnable_campaign(customer))
    set_status(harness, customer, c.id, pb.Campaign.STATUS_RUN)
    request = pb.ReportOutdialExhaustedRequest(customer_id=customer, id=c.id)
    finishing = call(harness, "ReportOutdialExhausted", request).campaign
    assert finishing.status == pb.Campaign.STATUS_STOPPING
    assert finishing.HasField("tm_update")
    assert call(harness, "ReportOutdialExhausted", request).campaign == finishing


def test_report_outdial_exhausted_maps_its_errors(harness: Harness, customer: str) -> None:
    c = create(harness, runnable_campaign(customer))
    stopped = fails(
        harness,
        "ReportOutdialExhausted",
        pb.ReportOutdialExhaustedRequest(customer_id=customer, id=c.id),
    )
    assert stopped.code == Code.FAILED_PRECONDITION
    assert stopped.info.reason == "CAMPAIGN_NOT_RUNNING"
    assert stopped.precondition is not None
    missing = fails(
        harness,
        "ReportOutdialExhausted",
        pb.ReportOutdialExhaustedRequest(customer_id=customer, id=new_id()),
    )
    assert missing.code == Code.NOT_FOUND
    bad = fails(harness, "ReportOutdialExhausted", pb.ReportOutdialExhaustedRequest())
    assert bad.code == Code.INVALID_ARGUMENT
    assert bad.fields == ["customer_id", "id"]
