"""Applies the token table to every call of one service, before its servicer sees the request.

A gate of interceptors.Observe: the token is checked before anything else about a call is
answered, even that its request does not parse; the customer the request names, before any
field is validated or any row read, so a caller learns nothing of another customer's
campaigns. Other services (health, reflection) pass untouched: a load balancer checks health
without a token.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import grpc
from google.protobuf.descriptor import Descriptor, ServiceDescriptor

from ..domain.errors import CampaignError
from ..ops.auth import TokenFile, authenticate, authorize
from .callers import authorize_later, identify
from .interceptors import Call

Context = grpc.aio.ServicerContext[Any, Any]
CustomerOf = Callable[[Any], str]

AUTHORIZATION = "authorization"


def _every_customer(request: Any) -> str:
    return ""


def customer_of(request_type: Descriptor) -> CustomerOf:
    """How to read the customer a request names: its customer_id, or its campaign's.

    A request that names none counts as one for every customer, which only a token for
    every customer may make.
    """
    fields = request_type.fields_by_name
    if "customer_id" in fields:
        return lambda request: str(request.customer_id)
    if "campaign" in fields:
        return lambda request: str(request.campaign.customer_id)
    return _every_customer


def customers_of(service: ServiceDescriptor) -> dict[str, CustomerOf]:
    """How to read the customer of each method's request, by method path."""
    return {f"/{service.full_name}/{m.name}": customer_of(m.input_type) for m in service.methods}


class Authorize:
    """The gate: who the token is, then whether it may act for the customer requested."""

    def __init__(self, tokens: TokenFile, service: ServiceDescriptor) -> None:
        self._tokens = tokens
        self._service = service.full_name
        self._customer_of = customers_of(service)

    def guards(self, call: Call) -> bool:
        return call.service == self._service

    def refusal(self, call: Call, request: Any | None, context: Context) -> CampaignError | None:
        metadata = context.invocation_metadata() or ()
        values = [str(value) for key, value in metadata if key == AUTHORIZATION]
        try:
            grant = authenticate(self._tokens.table, values)
            identify(grant.principal)
            # A request that did not parse names no customer: refused by Observe as such.
            if request is not None:
                authorize(grant, self._customer_of.get(call.method, _every_customer)(request))
            elif call.kind == "bidi_stream":
                authorize_later(functools.partial(authorize, grant))
        except CampaignError as exc:
            return exc
        return None
