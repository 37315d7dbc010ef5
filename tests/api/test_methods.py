"""Each method's traits come from the contract's options, and every consumer takes them from
campaign_grpc_client.methods: admission, the audit log and the client's retries agree with the
.proto."""

from __future__ import annotations

from pathlib import Path

import pytest
from google.protobuf import descriptor_pb2
from google.protobuf.descriptor_pb2 import MethodOptions

from campaign_grpc.api.admission import Admission, Budgets
from campaign_grpc.api.audit import AuditLog
from campaign_grpc.api.interceptors import Call
from campaign_grpc.api.reflection import DOCUMENTED
from campaign_grpc_client import _requests as requests
from campaign_grpc_client import methods
from campaign_grpc_client.methods import METHODS, READS, WRITES, Method
from campaign_grpc_client.v1 import campaign_pb2 as pb
from campaign_grpc_client.v1 import options_pb2

ROOT = Path(__file__).resolve().parents[2]
PREFIX = "/campaign.v1.CampaignService/"

# (read, retry safe as it is, retry safe when this request field is set), as the contract
# means them: a change here is a change of what clients may do, to be made in the .proto.
EXPECTED = {
    "CreateCampaign": (False, False, "request_id"),
    "GetCampaign": (True, True, ""),
    "ListCampaigns": (True, True, ""),
    "UpdateCampaign": (False, False, "campaign.etag"),
    "DeleteCampaign": (False, False, "etag"),
    "UndeleteCampaign": (False, True, ""),
    "UpdateCampaignStatus": (False, True, ""),
    "ConfirmDrained": (False, True, ""),
    "ReportOutdialExhausted": (False, True, ""),
    "WatchStatus": (True, True, ""),
    "ListCampaignEvents": (True, True, ""),
    "HoldLeases": (False, True, ""),
}


def test_the_table_is_the_contract_s() -> None:
    table = {m.name: (m.read, m.retry_safe, m.retry_safe_when_set) for m in METHODS.values()}
    assert table == EXPECTED
    reads = {PREFIX + name for name, traits in EXPECTED.items() if traits[0]}
    assert (reads, {m.path for m in METHODS.values()} - reads) == (READS, WRITES)


def proto_methods() -> list[descriptor_pb2.MethodDescriptorProto]:
    """The methods as protoc read them from protos/ (the descriptor set of `make proto`)."""
    files = descriptor_pb2.FileDescriptorSet.FromString(DOCUMENTED.read_bytes()).file
    (contract,) = [f for f in files if f.name == "campaign/v1/campaign.proto"]
    (service,) = contract.service
    return list(service.method)


def test_every_rpc_states_its_idempotency_level() -> None:
    missing = [m.name for m in proto_methods() if not m.options.HasField("idempotency_level")]
    assert missing == []


def test_a_method_marked_no_side_effects_is_a_read_and_safe_to_retry() -> None:
    for method in pb.DESCRIPTOR.services_by_name["CampaignService"].methods:
        options = method.GetOptions()
        if options.idempotency_level == MethodOptions.NO_SIDE_EFFECTS:
            assert (METHODS[method.name].read, METHODS[method.name].retry_safe) == (True, True)
        traits = options.Extensions[options_pb2.traits]
        if traits.read:
            assert METHODS[method.name].read


def test_list_campaign_events_is_a_read() -> None:
    events = METHODS["ListCampaignEvents"]
    assert (events.read, events.write, events.streaming) == (True, False, False)


def test_admission_and_the_audit_log_take_the_contract_s_reads_and_writes() -> None:
    admission = Admission(Budgets(calls=1, writes=1, per_customer=1, request_bytes=1))
    audit = AuditLog()
    for method in METHODS.values():
        assert (method.path in admission._reads) == method.read, method.name
        assert audit.guards(call(method)) == method.write, method.name


def call(method: Method) -> Call:
    kind = "server_stream" if method.streaming else "unary"
    return Call(method.path, "campaign.v1.CampaignService", method.name, kind)


CAMPAIGN = pb.Campaign(customer_id="c", id="x")


@pytest.mark.parametrize(
    ("name", "request_safe"),
    [
        ("CreateCampaign", requests.create(CAMPAIGN, "")),
        ("GetCampaign", requests.get("c", "x")),
        ("ListCampaigns", requests.list_page("c", 0, "", 0, 0, False)),
        ("ListCampaignEvents", requests.list_events("c", "x", 0, "", 0)),
        ("UpdateCampaign", requests.update(CAMPAIGN, ["name"])),
        ("UpdateCampaign", requests.update(pb.Campaign(id="x", etag="e"), ["name"])),
        ("DeleteCampaign", requests.delete("c", "x", "")),
        ("DeleteCampaign", requests.delete("c", "x", "e")),
        ("UndeleteCampaign", requests.undelete("c", "x")),
        ("UpdateCampaignStatus", requests.update_status("c", "x", 0, False, "")),
        ("ConfirmDrained", requests.confirm_drained("c", "x", 1)),
        ("ReportOutdialExhausted", requests.report_outdial_exhausted("c", "x")),
    ],
)
def test_the_client_retries_what_the_contract_says_is_safe(
    name: str, request_safe: tuple[object, bool]
) -> None:
    request, safe = request_safe
    _, retry_safe, when_set = EXPECTED[name]
    expected = retry_safe or bool(when_set and methods.is_set(request, when_set))  # type: ignore[arg-type]
    assert safe == expected


def test_the_client_retries_keyed_and_conditional_writes_only_with_their_field() -> None:
    assert requests.create(CAMPAIGN, "")[1]  # the client makes a request_id
    assert not requests.update(CAMPAIGN, ["name"])[1]
    assert requests.update(pb.Campaign(id="x", etag="e"), ["name"])[1]
    assert not requests.delete("c", "x", "")[1]
    assert requests.delete("c", "x", "e")[1]


def test_a_field_path_that_names_no_field_is_refused() -> None:
    service = pb.DESCRIPTOR.services_by_name["CampaignService"]
    method = service.methods_by_name["DeleteCampaign"]
    with pytest.raises(ValueError, match=r"no field 'campaign\.etag'"):
        methods.check_path(method.input_type, "campaign.etag")
