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
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NoReturn, Protocol, TypeAlias, cast

import grpc

from ..domain.errors import CampaignError, DeadlineExceeded, FieldViolation, InvalidArgument
from ..ops.limits import request_not_received, request_too_large
from .rpc_errors import abort

if TYPE_CHECKING:
    from .admission import Admission, Ticket

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


class Gate(Protocol):
    """Refuses calls before their handler runs (the observers have seen them start)."""

    def guards(self, call: Call) -> bool:
        """Whether the gate is asked about calls to this method; asked once per method."""
        ...

    def refusal(self, call: Call, request: Any | None, context: Context) -> CampaignError | None:
        """Why the call may not start, or None; request is None when it did not parse."""
        ...


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


class DoneObserver(Observer, Protocol):
    """An observer also told when a call is over for grpc too: its status sent, or the call
    cancelled. A handler's end comes before that: its response is still to be sent."""

    def done(self, call: Call) -> None: ...


class UnaryCallsInFlight:
    """Counts unary calls from their start (before their request has arrived) until their
    status has gone out, so that shutdown cancels none whose answer is still being sent.
    Admission (admission.py) decides which of them may run."""

    def __init__(self) -> None:
        self.count = 0
        self._idle = asyncio.Event()
        self._idle.set()

    def started(self, call: Call) -> None:
        if call.kind == "unary":
            self.count += 1
            self._idle.clear()

    def finished(self, call: Call, code: str, seconds: float) -> None:
        pass

    def done(self, call: Call) -> None:
        if call.kind == "unary":
            self.count -= 1
            if self.count == 0:
                self._idle.set()

    async def wait_idle(self) -> None:
        await self._idle.wait()


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


@dataclass(slots=True)
class _Intake:
    """What a call has taken in: its request (or what stands for one refused as it was
    parsed), and the request bytes it holds of the admission's budget."""

    request: Any = None
    held_bytes: int = 0


@dataclass(frozen=True, slots=True)
class _Refused:
    """Stands for a request refused as it was parsed: too large, or bytes that do not parse."""

    error: CampaignError


def _malformed(error: str) -> InvalidArgument:
    return InvalidArgument(
        [FieldViolation("request", f"is not a valid protobuf message: {error}")],
        reason="MALFORMED_REQUEST",
    )


def _parse(deserialize: Callable[[bytes], Any] | None, data: bytes, limit: int) -> Any | _Refused:
    """The request, or why it is refused: too large, or bytes that do not parse."""
    if len(data) > limit:
        return _Refused(request_too_large(len(data), limit))
    if deserialize is None:
        return data
    try:
        return deserialize(data)
    except Exception as exc:  # DecodeError, or anything a parser can raise on bad bytes
        return _Refused(_malformed(str(exc)))


async def _parsed(
    requests: AsyncIterator[bytes], deserialize: Callable[[bytes], Any] | None, limit: int
) -> AsyncIterator[Any]:
    """A stream of requests parsed one by one; the first refused ends it with its error."""
    async for data in requests:
        request = _parse(deserialize, data, limit)
        if isinstance(request, _Refused):
            raise request.error
        yield request


def _no_request() -> InvalidArgument:
    return InvalidArgument(
        [FieldViolation("request", "the call ended before its request message")],
        reason="MALFORMED_REQUEST",
    )


class Receiving:
    """Unary calls whose request message has not arrived yet, each with its time left.

    grpc core hands a call to the server as soon as its headers arrive, and then waits as
    long as the client likes for its message: a client that half-closes without one, sends
    a part of one, or trickles it (slowloris) would hold the call, its buffers and its place
    for the life of the connection. Here each one has a bounded time, and at most `limit`
    wait at once: past it the one waiting longest is dropped to make room, so that calls
    whose message is already there (every sound client's) always get their turn.
    """

    def __init__(
        self, timeout: float, limit: int, aborted: Callable[[str], None] | None = None
    ) -> None:
        self.timeout = timeout
        self.limit = limit
        self.dropped = 0
        # Told the peer of each call that ended before its request: reset by the client
        # (rapid reset), or half-closed without a message.
        self._aborted = aborted
        self._waiting: dict[int, asyncio.Timeout] = {}
        self._next = 0

    def __len__(self) -> int:
        return len(self._waiting)

    async def receive(self, context: Context) -> bytes | CampaignError:
        key = self._next
        self._next += 1
        try:
            async with asyncio.timeout(self.timeout) as timeout:
                if len(self._waiting) >= self.limit:
                    _, oldest = self._pop_oldest()
                    oldest.reschedule(asyncio.get_running_loop().time())
                self._waiting[key] = timeout
                message = await context.read()
        except TimeoutError:
            self.dropped += 1
            return request_not_received(self.timeout)
        except BaseException:
            # The client reset the call (or the server is stopping, which ends it all).
            if self._aborted is not None:
                self._aborted(context.peer())
            raise
        finally:
            self._waiting.pop(key, None)
        if message is grpc.aio.EOF:
            if self._aborted is not None:
                self._aborted(context.peer())
            return _no_request()
        return cast(bytes, message)

    def _pop_oldest(self) -> tuple[int, asyncio.Timeout]:
        key = next(iter(self._waiting))
        return key, self._waiting.pop(key)


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
        admission: Admission | None = None,
        receiving: Receiving | None = None,
        on_refusal: Callable[[CampaignError, str], None] | None = None,
        recorders: Sequence[Recorder] = (),
        tracing: CallTracing | None = None,
    ) -> None:
        self._observers = tuple(observers)
        self._gates = tuple(gates)
        self._max_request_bytes = sys.maxsize if max_request_bytes is None else max_request_bytes
        self._admission = admission
        self._receiving = (
            receiving if receiving is not None else Receiving(sys.maxsize, sys.maxsize)
        )
        self._on_refusal = on_refusal
        self._recorders = tuple(recorders)
        self._tracing = tracing
        self._message_observers: tuple[MessageObserver, ...] = tuple(
            cast(MessageObserver, o) for o in observers if hasattr(o, "sent")
        )
        self._done_observers: tuple[DoneObserver, ...] = tuple(
            cast(DoneObserver, o) for o in observers if hasattr(o, "done")
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
        # A method with a single request is served as one with a stream of requests (the same
        # on the wire), so that the wrapper runs from the call's start: it reads the request
        # itself, within a bounded time, and parses it where a bad one can still be answered
        # properly, after the request's bytes have been admitted.
        deserialize = handler.request_deserializer
        serialize = handler.response_serializer
        if unary_unary is not None:
            call = Call(method, service, name, "unary")
            return grpc.stream_unary_rpc_method_handler(
                self._awaited(call, unary_unary, deserialize), response_serializer=serialize
            )
        if unary_stream is not None:
            call = Call(method, service, name, "server_stream")
            return grpc.stream_stream_rpc_method_handler(
                self._streamed(call, unary_stream, deserialize), response_serializer=serialize
            )
        if stream_stream is not None:
            # Each request parsed here too, so that bytes that do not parse are answered as
            # the client's mistake, not raised inside the handler.
            call = Call(method, service, name, "bidi_stream")
            return grpc.stream_stream_rpc_method_handler(
                self._streamed(call, stream_stream, deserialize), response_serializer=serialize
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

    def _end_span(self, span: tuple[Any, object] | None, code: str) -> None:
        if span is not None and self._tracing is not None:
            self._tracing.end_server_span(*span, code)

    def _started(self, call: Call, context: Context) -> float:
        for observer in self._observers:
            observer.started(call)
        if self._done_observers:
            done = self._done_observers

            def over(_: Context) -> None:
                for observer in done:
                    observer.done(call)

            # The stubs name the callback type as a class of their own: a function is one.
            context.add_done_callback(over)  # type: ignore[arg-type]
        return time.perf_counter()

    async def _refuse(self, context: Context, error: CampaignError) -> NoReturn:
        """Ends a call its handler never saw, and tells on_refusal (with the peer)."""
        if self._on_refusal is not None:
            self._on_refusal(error, context.peer())
        await abort(context, error)

    async def _request(
        self,
        call: Call,
        deserialize: Callable[[bytes], Any] | None,
        gates: Sequence[Gate],
        context: Context,
        intake: _Intake,
    ) -> Any:
        """The call's request once received, admitted and parsed; or the refusal, raised as
        an abort. intake keeps the request (or what stands for it) and the bytes it holds."""
        received = await self._receiving.receive(context)
        if isinstance(received, CampaignError):
            await self._refuse(context, received)
        admission = self._admission
        if admission is not None and admission.guards(call):
            too_much = admission.take_bytes(len(received))
            if too_much is not None:
                # The gates first all the same: a caller without a token learns nothing else.
                await self._refuse(context, _refusal(gates, call, None, context) or too_much)
            intake.held_bytes = len(received)
        request = intake.request = _parse(deserialize, received, self._max_request_bytes)
        refusal = _refusal(gates, call, request, context)
        if refusal is not None:
            await self._refuse(context, refusal)
        return request

    async def _opened(
        self,
        call: Call,
        deserialize: Callable[[bytes], Any] | None,
        gates: Sequence[Gate],
        requests: Any,
        context: Context,
        single: bool,
    ) -> Any:
        """What a streaming handler is given: its one request, or the stream of them."""
        if single:
            return await self._request(call, deserialize, gates, context, _Intake())
        refusal = _refusal(gates, call, None, context)
        if refusal is not None:
            await self._refuse(context, refusal)
        return _parsed(requests, deserialize, self._max_request_bytes)

    def _awaited(
        self,
        call: Call,
        behavior: Callable[[Any, Context], Awaitable[Any]],
        deserialize: Callable[[bytes], Any] | None,
    ) -> Any:
        gates = tuple(gate for gate in self._gates if gate.guards(call))
        admission = self._admission if self._admission and self._admission.guards(call) else None
        recorders = tuple(r for r in self._recorders if r.guards(call))

        async def observed(requests: Any, context: Context) -> Any:
            started = self._started(call, context)
            span = self._span(call, context)
            error: BaseException | None = None
            intake = _Intake()
            ticket: Ticket | None = None
            response = None
            try:
                request = await self._request(call, deserialize, gates, context, intake)
                if admission is not None:
                    admitted = admission.admit(call, request)
                    if isinstance(admitted, CampaignError):
                        await self._refuse(context, admitted)
                    ticket = admitted
                response = await behavior(request, context)
                return response
            except BaseException as exc:
                error = exc
                raise
            finally:
                if admission is not None:
                    if ticket is not None:
                        admission.release(ticket)
                    if intake.held_bytes:
                        admission.give_bytes(intake.held_bytes)
                # The access log and the audit line while the span is current: theirs too.
                code = self._finished(call, context, started, error)
                for recorder in recorders:
                    recorder.record(call, intake.request, response, code, context)
                self._end_span(span, code)

        return observed

    def _streamed(
        self, call: Call, behavior: Any, deserialize: Callable[[bytes], Any] | None
    ) -> Any:
        # A streaming handler either yields its messages or awaits context.write (as
        # grpc's own health Watch does); the latter is observed as a whole.
        single = call.kind != "bidi_stream"
        if not inspect.isasyncgenfunction(behavior):
            return self._awaited_stream(call, behavior, deserialize, single)
        watchers = self._message_observers
        gates = tuple(gate for gate in self._gates if gate.guards(call))

        async def observed(requests: Any, context: Context) -> AsyncGenerator[Any, None]:
            started = self._started(call, context)
            span = self._span(call, context)
            error: BaseException | None = None
            try:
                request = await self._opened(call, deserialize, gates, requests, context, single)
                async with contextlib.aclosing(behavior(request, context)) as responses:
                    async for response in responses:
                        for watcher in watchers:
                            watcher.sent(call, response)
                        yield response
            except BaseException as exc:
                error = exc
                raise
            finally:
                self._end_span(span, self._finished(call, context, started, error))

        return observed

    def _awaited_stream(
        self,
        call: Call,
        behavior: Callable[[Any, Context], Awaitable[None]],
        deserialize: Callable[[bytes], Any] | None,
        single: bool,
    ) -> Any:
        gates = tuple(gate for gate in self._gates if gate.guards(call))

        async def observed(requests: Any, context: Context) -> None:
            started = self._started(call, context)
            span = self._span(call, context)
            error: BaseException | None = None
            try:
                request = await self._opened(call, deserialize, gates, requests, context, single)
                await behavior(request, context)
            except BaseException as exc:
                error = exc
                raise
            finally:
                self._end_span(span, self._finished(call, context, started, error))

        return observed
