"""The server interceptor: each method's handler wrapped in its chain once, on its first call."""

from __future__ import annotations

import sys
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any

import grpc

from ...domain.errors import CampaignError
from .call import Call, CallTracing, Gate, Handler, Observer, Recorder
from .chain import Chain, Steps
from .intake import Receiving
from .wrappers import as_request_stream

if TYPE_CHECKING:
    from ..admission import Admission


class Observe(grpc.aio.ServerInterceptor):
    def __init__(
        self,
        observers: Sequence[Observer],
        *,
        gates: Sequence[Gate] = (),
        max_request_bytes: int | None = None,
        admission: Admission | None = None,
        receiving: Receiving | None = None,
        on_refusal: Callable[[CampaignError, str], None] | None = None,
        recorders: Sequence[Recorder] = (),
        tracing: CallTracing | None = None,
    ) -> None:
        self._steps = Steps(
            observers=tuple(observers),
            gates=tuple(gates),
            recorders=tuple(recorders),
            admission=admission,
            receiving=receiving if receiving is not None else Receiving(sys.maxsize, sys.maxsize),
            max_request_bytes=sys.maxsize if max_request_bytes is None else max_request_bytes,
            tracing=tracing,
            on_refusal=on_refusal,
        )
        # Per method: the handler as registered, and its wrapper.
        self._wrapped: dict[str, tuple[Handler, Handler]] = {}

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Handler | None]],
        details: grpc.HandlerCallDetails,
    ) -> Handler | None:
        handler = await continuation(details)
        if handler is None:
            return None
        cached = self._wrapped.get(details.method)
        if cached is not None and cached[0] is handler:
            return cached[1]
        wrapped = self._wrap(details.method, handler)
        self._wrapped[details.method] = (handler, wrapped)
        return wrapped

    def _wrap(self, method: str, handler: Handler) -> Handler:
        service, _, name = method.strip("/").partition("/")
        # The stubs describe the sync handler types; on an aio server they are coroutines.
        behavior: Any
        if handler.unary_unary is not None:
            kind, behavior = "unary", handler.unary_unary
        elif handler.unary_stream is not None:
            kind, behavior = "server_stream", handler.unary_stream
        elif handler.stream_stream is not None:
            kind, behavior = "bidi_stream", handler.stream_stream
        else:
            return handler
        chain = Chain(Call(method, service, name, kind), handler.request_deserializer, self._steps)
        return as_request_stream(chain, behavior, handler.response_serializer)
