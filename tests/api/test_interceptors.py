"""The gates of the call interceptor: which calls each one guards, and when it refuses."""

from __future__ import annotations

from typing import Any

from campaign_grpc.api.interceptors import Call, DeadlineGate

GET = Call(
    "/campaign.v1.CampaignService/GetCampaign", "campaign.v1.CampaignService", "Get", "unary"
)
WATCH = Call(
    "/campaign.v1.CampaignService/WatchStatus",
    "campaign.v1.CampaignService",
    "WatchStatus",
    "server_stream",
)


class Deadline:
    """What a gate reads of a call's context: the seconds left (None: no deadline)."""

    def __init__(self, remaining: float | None) -> None:
        self.remaining = remaining

    def time_remaining(self) -> float | None:
        return self.remaining


NO_DEADLINE: Any = Deadline(None)


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
