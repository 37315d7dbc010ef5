"""The audit log: one line per write attempt, accepted or refused, on a logger of its own.

Operators ship `campaign_grpc.audit` apart from the access log: who (the principal), what
(the method, the customer and campaign), and how it ended (the status code), with the trace
id when the call is traced. Each accepted change is also in the event log, with its principal
(ListCampaignEvents); these lines keep the refusals too, and as long as the logs are kept.
"""

from __future__ import annotations

import logging
from collections.abc import Collection
from typing import Any

import grpc

from campaign_grpc_client.methods import WRITES

from ..ops import tracing
from .callers import principal_of
from .interceptors import Call

audit_log = logging.getLogger("campaign_grpc.audit")

Context = grpc.aio.ServicerContext[Any, Any]


def _named(request: Any, response: Any) -> tuple[str, str]:
    """The customer and campaign a write names: its key, or its campaign's; a create's new
    campaign, once made."""
    campaign = getattr(request, "campaign", None)
    if campaign is not None:
        made = getattr(response, "campaign", None)
        return campaign.customer_id, (made.id if made is not None else campaign.id)
    return getattr(request, "customer_id", ""), getattr(request, "id", "")


class AuditLog:
    """Records every call of the writes (by method path) as it ends (see
    interceptors.Observe)."""

    def __init__(self, writes: Collection[str] = WRITES) -> None:
        self._writes = frozenset(writes)

    def guards(self, call: Call) -> bool:
        return call.method in self._writes

    def record(self, call: Call, request: Any, response: Any, code: str, context: Context) -> None:
        if not audit_log.isEnabledFor(logging.INFO):
            return
        # A request that did not parse names nothing (interceptors.intake.Refused stands for it).
        parsed = hasattr(request, "DESCRIPTOR")
        customer, campaign = _named(request, response) if parsed else ("", "")
        principal = "unauthenticated" if code == "UNAUTHENTICATED" else principal_of(context)
        ids = tracing.current_ids()
        fields: dict[str, Any] = {
            "principal": principal,
            "method": call.name,
            "customer_id": customer,
            "campaign_id": campaign,
            "code": code,
        }
        if ids is not None:
            fields["trace_id"], fields["span_id"] = ids
        audit_log.info(
            "%s %s by %s: customer %s campaign %s",
            call.name,
            code,
            principal,
            customer or "-",
            campaign or "-",
            extra=fields,
        )
