"""The deadline gate, and the order in which a call's gates are asked."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ...domain.errors import CampaignError, DeadlineExceeded
from .call import Call, Context, Gate
from .intake import Refused


class DeadlineGate:
    """Refuses a unary call whose deadline passed before its handler ran: its client has
    given up, and a write started for it would commit anyway."""

    def guards(self, call: Call) -> bool:
        return call.kind == "unary"

    def refusal(self, call: Call, request: Any | None, context: Context) -> CampaignError | None:
        remaining = context.time_remaining()
        if remaining is not None and remaining <= 0:
            return DeadlineExceeded("the deadline passed before the call started")
        return None


def first_refusal(
    gates: Sequence[Gate], call: Call, request: Any, context: Context
) -> CampaignError | None:
    """Why a call may not start, if it may not. The gates come first: a caller without a
    token is told so, and nothing else, not even that its request does not parse."""
    refused = request if isinstance(request, Refused) else None
    parsed = None if refused is not None else request
    for gate in gates:
        refusal = gate.refusal(call, parsed, context)
        if refusal is not None:
            return refusal
    return refused.error if refused is not None else None
