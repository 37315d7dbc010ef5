"""A call as the interceptor's steps see it, and what each kind of step is asked about it."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any, Protocol, TypeAlias

import grpc

from ...domain.errors import CampaignError

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


class DoneObserver(Observer, Protocol):
    """An observer also told when a call is over for grpc too: its status sent, or the call
    cancelled. A handler's end comes before that: its response is still to be sent."""

    def done(self, call: Call) -> None: ...


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
