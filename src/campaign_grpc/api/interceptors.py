"""One interceptor that tells observers about every call: its start, its messages, its end.

The access log, the count of calls in flight and the metrics all watch the same calls; one
wrapper per method, built once, serves them all instead of a layer of wrapping each per call.
The same wrapper answers a request that does not parse as the client's mistake
(INVALID_ARGUMENT with details) instead of gRPC's own UNKNOWN, a request over the size limit
with RESOURCE_EXHAUSTED and details, and asks the gates whether a call may start at all.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import sys
import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Collection, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeAlias, cast

import grpc

from ..domain.errors import CampaignError, DeadlineExceeded, FieldViolation, InvalidArgument
from ..ops.limits import request_too_large, too_many_calls_in_flight
from .rpc_errors import abort

access_log = logging.getLogger("campaign_grpc.access")

Context = grpc.aio.ServicerContext[Any, Any]
Handler: TypeAlias = "grpc.RpcMethodHandler[Any, Any]"


@dataclass(frozen=True, slots=True)
class Call:
    """What is known of a method before any call to it: its names and its kind."""

    method: str
    service: str
    name: str
    kind: str  # "unary", "server_stream" or "bidi_stream"


class Observer(Protocol):
    def started(self, call: Call) -> None: ...

    def finished(self, call: Call, code: str, seconds: float) -> None: ...


class MessageObserver(Observer, Protocol):
    """An observer that also sees each message a streaming call sends."""

    def sent(self, call: Call, message: Any) -> None: ...


class Recorder(Protocol):
    """Sees each call of the methods it guards end, with its request and response (the
    response is None unless it succeeded; the request may stand for one that did not parse)."""

    def guards(self, call: Call) -> bool: ...

    def record(
        self, call: Call, request: Any, response: Any, code: str, context: Context
    ) -> None: ...


class CallTracing(Protocol):
    """A span around each call (see ops.tracing.Tracing)."""

    def server_span(self, service: str, method: str, metadata: Any) -> tuple[Any, object]: ...

    def end_server_span(self, span: Any, token: object, code: str) -> None: ...


class Gate(Protocol):
    """Refuses calls before their handler runs (the observers have seen them start)."""

    def guards(self, call: Call) -> bool:
        """Whether the gate is asked about calls to this method; asked once per method."""
        ...

    def refusal(self, call: Call, request: Any | None, context: Context) -> CampaignError | None:
        """Why the call may not start, or None; request is None when it did not parse."""
        ...


def code_name(context: Context, error: BaseException | None) -> str:
    """The status code a call ended with, by name (CANCELLED when the client went away)."""
    if isinstance(error, (asyncio.CancelledError, GeneratorExit)):
        return "CANCELLED"
    code = context.code()
    if code is not None and code != grpc.StatusCode.OK:
        return code.name if isinstance(code, grpc.StatusCode) else str(code)
    if error is not None and not isinstance(error, grpc.aio.AbortError):
        return "UNKNOWN"
    return "OK"


class AccessLog:
    """One log line per call: method, status code, duration."""

    def started(self, call: Call) -> None:
        pass

    def finished(self, call: Call, code: str, seconds: float) -> None:
        if access_log.isEnabledFor(logging.INFO):
            ms = seconds * 1000
            access_log.info(
                "%s %s %.2fms",
                call.method,
                code,
                ms,
                extra={"method": call.method, "code": code, "duration_ms": round(ms, 3)},
            )


class UnaryCallsInFlight:
    """Counts unary calls in flight, so that shutdown knows when they have all finished, and
    as a gate refuses those past limit at once, except to the exempt services."""

    def __init__(self, limit: int | None = None, exempt: Collection[str] = ()) -> None:
        self.count = 0
        self.limit = limit
        self._exempt = frozenset(exempt)
        self._idle = asyncio.Event()
        self._idle.set()

    def started(self, call: Call) -> None:
        if call.kind == "unary":
            self.count += 1
            self._idle.clear()

    def finished(self, call: Call, code: str, seconds: float) -> None:
        if call.kind == "unary":
            self.count -= 1
            if self.count == 0:
                self._idle.set()

    async def wait_idle(self) -> None:
        await self._idle.wait()

    def guards(self, call: Call) -> bool:
        return self.limit is not None and call.kind == "unary" and call.service not in self._exempt

    def refusal(self, call: Call, request: Any | None, context: Context) -> CampaignError | None:
        # This call is counted already: the limit calls may run alongside it.
        if self.limit is not None and self.count > self.limit:
            return too_many_calls_in_flight(self.limit)
        return None


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


@dataclass(frozen=True, slots=True)
class _Refused:
    """Stands for a request refused as it was parsed: too large, or bytes that do not parse."""

    error: CampaignError


def _malformed(error: str) -> InvalidArgument:
    return InvalidArgument(
        [FieldViolation("request", f"is not a valid protobuf message: {error}")],
        reason="MALFORMED_REQUEST",
    )


def _tolerant(
    deserialize: Callable[[bytes], Any] | None, max_bytes: int | None
) -> Callable[[bytes], Any] | None:
    if deserialize is None:
        return None
    limit = sys.maxsize if max_bytes is None else max_bytes

    def parse(data: bytes) -> Any:
        if len(data) > limit:
            return _Refused(request_too_large(len(data), limit))
        try:
            return deserialize(data)
        except Exception as exc:  # DecodeError, or anything a parser can raise on bad bytes
            return _Refused(_malformed(str(exc)))

    return parse


def _refusal(
    gates: Sequence[Gate], call: Call, request: Any, context: Context
) -> CampaignError | None:
    """Why a call may not start, if it may not. The gates come first: a caller without a
    token is told so, and nothing else, not even that its request does not parse."""
    refused = request if isinstance(request, _Refused) else None
    parsed = None if refused is not None else request
    for gate in gates:
        refusal = gate.refusal(call, parsed, context)
        if refusal is not None:
            return refusal
    return refused.error if refused is not None else None


class Observe(grpc.aio.ServerInterceptor):
    def __init__(
        self,
        observers: Sequence[Observer],
        *,
        gates: Sequence[Gate] = (),
        max_request_bytes: int | None = None,
        recorders: Sequence[Recorder] = (),
        tracing: CallTracing | None = None,
    ) -> None:
        self._observers = tuple(observers)
        self._gates = tuple(gates)
        self._recorders = tuple(recorders)
        self._tracing = tracing
        self._max_request_bytes = max_request_bytes
        self._message_observers: tuple[MessageObserver, ...] = tuple(
            cast(MessageObserver, o) for o in observers if hasattr(o, "sent")
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
        unary_unary: Any = handler.unary_unary
        unary_stream: Any = handler.unary_stream
        stream_stream: Any = handler.stream_stream
        # A single request is parsed where a bad one can still be answered properly.
        single = {
            "request_deserializer": _tolerant(
                handler.request_deserializer, self._max_request_bytes
            ),
            "response_serializer": handler.response_serializer,
        }
        if unary_unary is not None:
            call = Call(method, service, name, "unary")
            return grpc.unary_unary_rpc_method_handler(self._awaited(call, unary_unary), **single)
        if unary_stream is not None:
            call = Call(method, service, name, "server_stream")
            return grpc.unary_stream_rpc_method_handler(
                self._streamed(call, unary_stream), **single
            )
        if stream_stream is not None:
            call = Call(method, service, name, "bidi_stream")
            return grpc.stream_stream_rpc_method_handler(
                self._streamed(call, stream_stream),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        return handler

    def _finished(
        self, call: Call, context: Context, started: float, error: BaseException | None
    ) -> str:
        code = code_name(context, error)
        seconds = time.perf_counter() - started
        for observer in self._observers:
            observer.finished(call, code, seconds)
        return code

    def _span(self, call: Call, context: Context) -> tuple[Any, object] | None:
        """The call's span, made current, when the server traces."""
        if self._tracing is None:
            return None
        return self._tracing.server_span(call.service, call.name, context.invocation_metadata())

    def _awaited(self, call: Call, behavior: Callable[[Any, Context], Awaitable[Any]]) -> Any:
        observers, tracing = self._observers, self._tracing
        gates = tuple(gate for gate in self._gates if gate.guards(call))
        recorders = tuple(r for r in self._recorders if r.guards(call))

        async def observed(request: Any, context: Context) -> Any:
            for observer in observers:
                observer.started(call)
            started = time.perf_counter()
            span = self._span(call, context)
            error: BaseException | None = None
            response = None
            try:
                refusal = _refusal(gates, call, request, context)
                if refusal is not None:
                    return await abort(context, refusal)
                response = await behavior(request, context)
                return response
            except BaseException as exc:
                error = exc
                raise
            finally:
                # The access log and the audit line while the span is current: theirs too.
                code = self._finished(call, context, started, error)
                for recorder in recorders:
                    recorder.record(call, request, response, code, context)
                if span is not None and tracing is not None:
                    tracing.end_server_span(*span, code)

        return observed

    def _streamed(self, call: Call, behavior: Any) -> Any:
        # A streaming handler either yields its messages or awaits context.write (as
        # grpc's own health Watch does); the latter is observed as a whole.
        if not inspect.isasyncgenfunction(behavior):
            return self._awaited(call, behavior)
        observers, watchers, tracing = self._observers, self._message_observers, self._tracing
        gates = tuple(gate for gate in self._gates if gate.guards(call))

        async def observed(request: Any, context: Context) -> AsyncGenerator[Any, None]:
            for observer in observers:
                observer.started(call)
            started = time.perf_counter()
            span = self._span(call, context)
            error: BaseException | None = None
            try:
                refusal = _refusal(gates, call, request, context)
                if refusal is not None:
                    await abort(context, refusal)
                async with contextlib.aclosing(behavior(request, context)) as responses:
                    async for response in responses:
                        for watcher in watchers:
                            watcher.sent(call, response)
                        yield response
            except BaseException as exc:
                error = exc
                raise
            finally:
                code = self._finished(call, context, started, error)
                if span is not None and tracing is not None:
                    tracing.end_server_span(*span, code)

        return observed
