"""The gates of the call interceptor: which calls each one guards, and when it refuses."""

from __future__ import annotations

from typing import Any

from campaign_grpc.api.interceptors import Call, DeadlineGate, UnaryCallsInFlight

GET = Call(
    "/campaign.v1.CampaignService/GetCampaign", "campaign.v1.CampaignService", "Get", "unary"
)
WATCH = Call(
    "/campaign.v1.CampaignService/WatchStatus",
    "campaign.v1.CampaignService",
    "WatchStatus",
    "server_stream",
)
HEALTH = Call("/grpc.health.v1.Health/Check", "grpc.health.v1.Health", "Check", "unary")


class Deadline:
    """What a gate reads of a call's context: the seconds left (None: no deadline)."""

    def __init__(self, remaining: float | None) -> None:
        self.remaining = remaining

    def time_remaining(self) -> float | None:
        return self.remaining


NO_DEADLINE: Any = Deadline(None)


def test_calls_past_the_limit_are_refused_until_one_finishes() -> None:
    in_flight = UnaryCallsInFlight(2, exempt=("grpc.health.v1.Health",))
    for _ in range(2):
        in_flight.started(GET)
        assert in_flight.refusal(GET, None, NO_DEADLINE) is None

    in_flight.started(GET)
    refused = in_flight.refusal(GET, None, NO_DEADLINE)
    assert refused is not None
    assert (refused.code, refused.reason) == ("RESOURCE_EXHAUSTED", "TOO_MANY_CALLS_IN_FLIGHT")
    in_flight.finished(GET, "RESOURCE_EXHAUSTED", 0.0)

    in_flight.finished(GET, "OK", 0.0)
    in_flight.started(GET)
    assert in_flight.refusal(GET, None, NO_DEADLINE) is None


def test_the_in_flight_limit_guards_unary_calls_but_not_health_or_streams() -> None:
    in_flight = UnaryCallsInFlight(2, exempt=("grpc.health.v1.Health",))
    assert in_flight.guards(GET)
    assert not in_flight.guards(HEALTH)
    assert not in_flight.guards(WATCH)
    assert not UnaryCallsInFlight().guards(GET)


def test_a_call_whose_deadline_has_passed_is_refused() -> None:
    gate = DeadlineGate()
    passed: Any = Deadline(0.0)

    refused = gate.refusal(GET, None, passed)

    assert refused is not None
    assert (refused.code, refused.reason) == ("DEADLINE_EXCEEDED", "DEADLINE_EXCEEDED")
    assert gate.refusal(GET, None, Deadline(0.001)) is None  # type: ignore[arg-type]
    assert gate.refusal(GET, None, NO_DEADLINE) is None
    assert gate.guards(GET)
    assert not gate.guards(WATCH)
