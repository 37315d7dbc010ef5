"""The admission gate on its own: each budget refuses past its limit with its own reason,
gives back what a call held when it ends, and leaves health checks alone."""

from __future__ import annotations

from typing import Any

import pytest

from campaign_grpc.api.admission import Admission, Budgets, HealthWatches, Ticket
from campaign_grpc.api.auth_gate import customers_of
from campaign_grpc.api.interceptors import Call
from campaign_grpc.domain.errors import LimitExceeded
from campaign_grpc_client.v1 import campaign_pb2 as pb

SERVICE = pb.DESCRIPTOR.services_by_name["CampaignService"]
PREFIX = "/campaign.v1.CampaignService/"


def call(name: str, kind: str = "unary") -> Call:
    return Call(PREFIX + name, "campaign.v1.CampaignService", name, kind)


GET, CREATE, EVENTS, WATCH = (
    call("GetCampaign"),
    call("CreateCampaign"),
    call("ListCampaignEvents"),
    call("WatchStatus", "server_stream"),
)
HEALTH = Call("/grpc.health.v1.Health/Check", "grpc.health.v1.Health", "Check", "unary")
HEALTH_WATCH = Call(
    "/grpc.health.v1.Health/Watch", "grpc.health.v1.Health", "Watch", "server_stream"
)


def admission(
    calls: int = 10, writes: int = 10, per_customer: int = 10, nbytes: int = 1000
) -> Admission:
    return Admission(
        Budgets(calls=calls, writes=writes, per_customer=per_customer, request_bytes=nbytes),
        customer_of=customers_of(SERVICE),
        exempt=("grpc.health.v1.Health",),
    )


def get(customer: str) -> pb.GetCampaignRequest:
    return pb.GetCampaignRequest(customer_id=customer, id="x")


def create(customer: str) -> pb.CreateCampaignRequest:
    return pb.CreateCampaignRequest(campaign=pb.Campaign(customer_id=customer))


def admitted(gate: Admission, c: Call, request: Any) -> Ticket:
    ticket = gate.admit(c, request)
    assert isinstance(ticket, Ticket), ticket
    return ticket


def refused(gate: Admission, c: Call, request: Any) -> LimitExceeded:
    error = gate.admit(c, request)
    assert isinstance(error, LimitExceeded), error
    assert error.code == "RESOURCE_EXHAUSTED"
    return error


def test_calls_past_the_server_budget_are_refused_until_one_ends() -> None:
    gate = admission(calls=2)
    first = admitted(gate, GET, get("a"))
    admitted(gate, CREATE, create("b"))

    error = refused(gate, GET, get("c"))

    assert error.reason == "TOO_MANY_CALLS_IN_FLIGHT"
    assert error.metadata == {"limit": "2"}
    assert [v.subject for v in error.violations] == ["server"]
    gate.release(first)
    admitted(gate, GET, get("c"))


def test_writes_stuck_behind_the_database_leave_the_reads_their_share() -> None:
    gate = admission(calls=4, writes=2)
    for customer in ("a", "b"):
        admitted(gate, CREATE, create(customer))

    error = refused(gate, CREATE, create("c"))

    assert error.reason == "TOO_MANY_WRITES_IN_FLIGHT"
    assert error.metadata == {"limit": "2"}
    admitted(gate, GET, get("c"))
    admitted(gate, GET, get("d"))
    assert refused(gate, GET, get("e")).reason == "TOO_MANY_CALLS_IN_FLIGHT"


def test_the_contract_s_reads_are_not_charged_to_the_writes() -> None:
    gate = admission(calls=4, writes=1)
    admitted(gate, CREATE, create("a"))
    assert refused(gate, CREATE, create("b")).reason == "TOO_MANY_WRITES_IN_FLIGHT"

    events = admitted(gate, EVENTS, pb.ListCampaignEventsRequest(customer_id="c"))

    assert not events.write
    assert gate.writes == 1
    admitted(gate, GET, get("d"))


def test_a_customer_past_its_share_is_refused_and_another_is_not() -> None:
    gate = admission(per_customer=2)
    held = [admitted(gate, GET, get("a")), admitted(gate, CREATE, create("a"))]

    error = refused(gate, GET, get("a"))

    assert error.reason == "TOO_MANY_CALLS_IN_FLIGHT_FOR_CUSTOMER"
    assert error.metadata == {"limit": "2", "customer_id": "a"}
    assert [v.subject for v in error.violations] == ["customer_id:a"]
    admitted(gate, GET, get("b"))
    for ticket in held:
        gate.release(ticket)
    assert gate.held_by("a") == 0
    admitted(gate, GET, get("a"))


def test_request_bytes_past_the_budget_are_refused_and_given_back_when_answered() -> None:
    gate = admission(nbytes=1000)
    assert gate.take_bytes(600) is None

    error = gate.take_bytes(600)

    assert error is not None
    assert (error.code, error.reason) == ("RESOURCE_EXHAUSTED", "REQUEST_BYTES_IN_FLIGHT")
    assert error.metadata == {"limit": "1000"}
    assert [v.subject for v in error.violations] == ["server"]
    assert gate.take_bytes(400) is None
    gate.give_bytes(600)
    gate.give_bytes(400)
    assert gate.request_bytes == 0


def test_a_request_larger_than_the_whole_budget_is_let_in_alone() -> None:
    gate = admission(nbytes=1000)
    assert gate.take_bytes(5000) is None
    assert gate.take_bytes(1) is not None
    gate.give_bytes(5000)
    assert gate.take_bytes(1) is None


@pytest.mark.parametrize("other", [HEALTH, WATCH, HEALTH_WATCH])
def test_health_and_streams_are_not_guarded(other: Call) -> None:
    assert admission().guards(GET)
    assert not admission().guards(other)


def test_health_watches_past_the_cap_are_refused_and_checks_are_not_guarded() -> None:
    watches = HealthWatches(HEALTH_WATCH.method, limit=1)
    watches.started(HEALTH_WATCH)
    assert watches.refusal(HEALTH_WATCH, None, None) is None
    watches.started(HEALTH_WATCH)

    error = watches.refusal(HEALTH_WATCH, None, None)

    assert error is not None
    assert (error.reason, error.metadata) == ("TOO_MANY_HEALTH_WATCHES", {"limit": "1"})
    assert not watches.guards(HEALTH)
    watches.finished(HEALTH_WATCH, "RESOURCE_EXHAUSTED", 0.0)
    assert watches.refusal(HEALTH_WATCH, None, None) is None
