"""The steps of one method's calls, chosen once for the method, run in order for each call.

A call goes through:
  begin     the observers see it start (access log, metrics, calls in flight), its span opens
  request   its request: received in bounded time (intake.Receiving), its bytes admitted
            (admission), parsed within the size limit (intake.parse), passed by the gates
            (auth, deadline, health watches; gates.first_refusal), the call admitted
  requests  for a stream of requests: the gates, then each request parsed as it comes
  end       what it held given back, the observers and recorders (audit) see it end, its
            span closes
A step that refuses the call ends it there, with its error (see rpc_errors.abort).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NoReturn, cast

from ...domain.errors import CampaignError
from ..rpc_errors import abort
from .call import (
    Call,
    CallTracing,
    Context,
    DoneObserver,
    Gate,
    MessageObserver,
    Observer,
    Recorder,
    code_name,
)
from .gates import first_refusal
from .intake import Deserializer, Receiving, parse, parsed

if TYPE_CHECKING:
    from ..admission import Admission, Ticket


@dataclass(slots=True)
class CallState:
    """What one call has of its own: when it started, its span; its request (or what stands
    for one refused as it was parsed), and what it holds of the admission's budgets."""

    started: float
    span: tuple[Any, object] | None
    request: Any = None
    held_bytes: int = 0
    ticket: Ticket | None = None


@dataclass(frozen=True, slots=True)
class Steps:
    """What the interceptor was given, shared by every method's chain."""

    observers: tuple[Observer, ...]
    gates: tuple[Gate, ...]
    recorders: tuple[Recorder, ...]
    admission: Admission | None
    receiving: Receiving
    max_request_bytes: int
    tracing: CallTracing | None
    on_refusal: Callable[[CampaignError, str], None] | None


def _done_callback(call: Call, observers: tuple[DoneObserver, ...]) -> Callable[[Any], None]:
    def over(_: Any) -> None:
        for observer in observers:
            observer.done(call)

    return over


class Chain:
    """One method's steps: only the gates, admission and recorders that guard it."""

    __slots__ = (
        "_admission",
        "_deserialize",
        "_gates",
        "_max_request_bytes",
        "_observers",
        "_on_refusal",
        "_over",
        "_receiving",
        "_recorders",
        "_tracing",
        "call",
        "watchers",
    )

    def __init__(self, call: Call, deserialize: Deserializer, steps: Steps) -> None:
        self.call = call
        self._deserialize = deserialize
        self._observers = steps.observers
        self.watchers: tuple[MessageObserver, ...] = tuple(
            cast(MessageObserver, o) for o in steps.observers if hasattr(o, "sent")
        )
        done = tuple(cast(DoneObserver, o) for o in steps.observers if hasattr(o, "done"))
        self._over = _done_callback(call, done) if done else None
        self._gates = tuple(gate for gate in steps.gates if gate.guards(call))
        admission = steps.admission
        self._admission = admission if admission is not None and admission.guards(call) else None
        # A stream's requests and responses are many: recorders see unary calls alone.
        unary = call.kind == "unary"
        self._recorders = tuple(r for r in steps.recorders if unary and r.guards(call))
        self._receiving = steps.receiving
        self._max_request_bytes = steps.max_request_bytes
        self._tracing = steps.tracing
        self._on_refusal = steps.on_refusal

    def begin(self, context: Context) -> CallState:
        call = self.call
        for observer in self._observers:
            observer.started(call)
        if self._over is not None:
            # The stubs name the callback type as a class of their own: a function is one.
            context.add_done_callback(self._over)  # type: ignore[arg-type]
        started = time.perf_counter()
        tracing = self._tracing
        # The call's span, made current, when the server traces.
        span = (
            None
            if tracing is None
            else tracing.server_span(call.service, call.name, context.invocation_metadata())
        )
        return CallState(started, span)

    async def request(self, requests: Any, context: Context, state: CallState) -> Any:
        """The call's one request, once every step has let it through; or the refusal,
        raised as an abort. state keeps the request (or what stands for it) and what the
        call holds. requests goes unread: the request is read from the context, so that its
        wait is bounded."""
        call = self.call
        # 1. received, within its time
        received = await self._receiving.receive(context)
        if isinstance(received, CampaignError):
            await self._refuse(context, received)
        # 2. its bytes admitted
        admission = self._admission
        if admission is not None:
            too_much = admission.take_bytes(len(received))
            if too_much is not None:
                # The gates first all the same: a caller without a token learns nothing else.
                await self._refuse(
                    context, first_refusal(self._gates, call, None, context) or too_much
                )
            state.held_bytes = len(received)
        # 3. parsed, within the size limit; 4. the gates
        request = state.request = parse(self._deserialize, received, self._max_request_bytes)
        refusal = first_refusal(self._gates, call, request, context)
        if refusal is not None:
            await self._refuse(context, refusal)
        # 5. the call admitted
        if admission is not None:
            admitted = admission.admit(call, request)
            if isinstance(admitted, CampaignError):
                await self._refuse(context, admitted)
            state.ticket = admitted
        return request

    async def requests(
        self, requests: AsyncIterator[bytes], context: Context, state: CallState
    ) -> AsyncIterator[Any]:
        """A stream of requests, once the gates have let the call through, parsed as they
        come."""
        refusal = first_refusal(self._gates, self.call, None, context)
        if refusal is not None:
            await self._refuse(context, refusal)
        return parsed(requests, self._deserialize, self._max_request_bytes)

    def end(
        self, context: Context, state: CallState, error: BaseException | None, response: Any = None
    ) -> None:
        """response is the handler's, when it returned one."""
        call = self.call
        admission = self._admission
        if admission is not None:
            if state.ticket is not None:
                admission.release(state.ticket)
            if state.held_bytes:
                admission.give_bytes(state.held_bytes)
        code = code_name(context, error)
        seconds = time.perf_counter() - state.started
        for observer in self._observers:
            observer.finished(call, code, seconds)
        # The access log and the audit line while the span is current: theirs too.
        for recorder in self._recorders:
            recorder.record(call, state.request, response, code, context)
        if state.span is not None and self._tracing is not None:
            self._tracing.end_server_span(*state.span, code)

    async def _refuse(self, context: Context, error: CampaignError) -> NoReturn:
        """Ends a call its handler never saw, and tells on_refusal (with the peer)."""
        if self._on_refusal is not None:
            self._on_refusal(error, context.peer())
        await abort(context, error)
