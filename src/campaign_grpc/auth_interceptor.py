"""Applies the token table to every call of one service, before its servicer sees the request.

A call is refused before any field is validated or any row read, so a caller learns nothing
of another customer's campaigns. Other services (health, reflection) pass untouched: a load
balancer checks health without a token.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncGenerator, Awaitable, Callable
from typing import Any, TypeAlias

import grpc
from google.protobuf.descriptor import Descriptor, ServiceDescriptor

from .auth import TokenFile, authenticate, authorize
from .errors import CampaignError
from .interceptors import Call
from .rpc_errors import abort

Context = grpc.aio.ServicerContext[Any, Any]
Handler: TypeAlias = "grpc.RpcMethodHandler[Any, Any]"
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


def _authorization(context: Context) -> list[str]:
    return [
        str(value) for key, value in context.invocation_metadata() or () if key == AUTHORIZATION
    ]


class Authenticate:
    """A gate of interceptors.Observe: a call to the service without a known token is refused
    before anything else about it is answered, even that its request does not parse."""

    def __init__(self, tokens: TokenFile, service: ServiceDescriptor) -> None:
        self._tokens = tokens
        self._service = service.full_name

    def guards(self, call: Call) -> bool:
        return call.service == self._service

    def refusal(self, context: Context) -> CampaignError | None:
        try:
            authenticate(self._tokens.table, _authorization(context))
        except CampaignError as exc:
            return exc
        return None


class Authorize(grpc.aio.ServerInterceptor):
    def __init__(self, tokens: TokenFile, service: ServiceDescriptor) -> None:
        self._tokens = tokens
        self._prefix = f"/{service.full_name}/"
        self._customer_of = {
            f"{self._prefix}{m.name}": customer_of(m.input_type) for m in service.methods
        }
        # Per method: the handler as registered, and its wrapper.
        self._wrapped: dict[str, tuple[Handler, Handler]] = {}

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Handler | None]],
        details: grpc.HandlerCallDetails,
    ) -> Handler | None:
        handler = await continuation(details)
        if handler is None or not details.method.startswith(self._prefix):
            return handler
        cached = self._wrapped.get(details.method)
        if cached is not None and cached[0] is handler:
            return cached[1]
        wrapped = self._wrap(details.method, handler)
        self._wrapped[details.method] = (handler, wrapped)
        return wrapped

    async def _check(self, request: Any, context: Context, customer: CustomerOf) -> None:
        try:
            authorize(authenticate(self._tokens.table, _authorization(context)), customer(request))
        except CampaignError as exc:
            await abort(context, exc)

    def _wrap(self, method: str, handler: Handler) -> Handler:
        customer = self._customer_of.get(method, _every_customer)
        check = self._check
        # The stubs describe the sync handler types; on an aio server they are coroutines.
        unary_unary: Any = handler.unary_unary
        unary_stream: Any = handler.unary_stream
        single = {
            "request_deserializer": handler.request_deserializer,
            "response_serializer": handler.response_serializer,
        }
        if unary_unary is not None:

            async def checked(request: Any, context: Context) -> Any:
                await check(request, context, customer)
                return await unary_unary(request, context)

            return grpc.unary_unary_rpc_method_handler(checked, **single)
        if unary_stream is not None:

            async def checked_stream(request: Any, context: Context) -> AsyncGenerator[Any, None]:
                await check(request, context, customer)
                async with contextlib.aclosing(unary_stream(request, context)) as responses:
                    async for response in responses:
                        yield response

            return grpc.unary_stream_rpc_method_handler(checked_stream, **single)
        raise TypeError(f"{method}: only calls with one request can be authorized")
