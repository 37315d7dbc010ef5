"""Distributed tracing with OpenTelemetry: off unless asked for, and then nothing is paid.

With `--tracing on`, tracing is set up the OpenTelemetry way: the standard environment
variables choose the sampler (OTEL_TRACES_SAMPLER, OTEL_TRACES_SAMPLER_ARG), the propagators
(OTEL_PROPAGATORS, W3C trace context by default), and, in the exporting process, the exporter
and its endpoint (OTEL_TRACES_EXPORTER, otlp by default; OTEL_EXPORTER_OTLP_ENDPOINT, ...), the
service name and resource (OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES).

The SDK's own spans are costly to make here and as costly again to encode for OTLP, all of
it under the interpreter lock the calls need: three spans a call (the call, the wait for a
database thread, the database work) took a large share of the server's throughput (see
bench/tracing.py for what tracing costs now). So a
call's spans are recorded as plain tuples, with the sampler's decision and W3C ids made as the
SDK makes them, and the current span is a CallSpan that carries those ids (for the trace
context of the call's writes, its log lines and its children); a process of its own
(span_export.py) turns the tuples into the SDK's spans and exports them with the official
exporter. A slow or stopped exporter never holds the server up: past a bound, spans are
dropped and counted.

The call's span is current in a context variable of this module, not in OpenTelemetry's
context: attaching a context there and detaching it again cost a call about what all the
rest of its span costs here, and only this module's readers (current_traceparent,
current_ids, capture) look for it. For the same reason a call that starts a trace does not ask
the default samplers, whose answer for it is always the same.
"""

from __future__ import annotations

import contextlib
import logging
import pickle
import random
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, TypeAlias

from opentelemetry import context as otel_context
from opentelemetry import propagate
from opentelemetry.sdk.trace import TracerProvider, sampling
from opentelemetry.sdk.trace.export import SpanExporter
from opentelemetry.sdk.trace.sampling import Decision, Sampler
from opentelemetry.trace import SpanKind, get_current_span

log = logging.getLogger(__name__)

# A finished span as this process records it; span_export.readable() makes the SDK's of it.
# (name, kind, trace_id, span_id, parent_id, parent_is_remote, start_ns, end_ns, attributes,
#  error): parent_id 0 for a root; error the status description of a failed span, or None.
Record: TypeAlias = tuple[
    str, int, int, int, int, bool, int, int, dict[str, Any] | None, str | None
]

# The status codes of a server span that are the server's failure (OpenTelemetry's gRPC
# conventions); the others are the client's, and leave the span's status unset.
SERVER_ERRORS = frozenset(
    {"UNKNOWN", "DEADLINE_EXCEEDED", "UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE", "DATA_LOSS"}
)
_CODES = {
    name: number
    for number, name in enumerate(
        (
            "OK",
            "CANCELLED",
            "UNKNOWN",
            "INVALID_ARGUMENT",
            "DEADLINE_EXCEEDED",
            "NOT_FOUND",
            "ALREADY_EXISTS",
            "PERMISSION_DENIED",
            "RESOURCE_EXHAUSTED",
            "FAILED_PRECONDITION",
            "ABORTED",
            "OUT_OF_RANGE",
            "UNIMPLEMENTED",
            "INTERNAL",
            "UNAVAILABLE",
            "DATA_LOSS",
            "UNAUTHENTICATED",
        )
    )
}
_SERVER = int(SpanKind.SERVER.value)
_INTERNAL = int(SpanKind.INTERNAL.value)
# Spans waiting for the exporting process, at most: beyond, new ones are dropped.
MAX_PENDING = 20_000
FLUSH_EVERY_S = 0.2
_FRAME = struct.Struct(">I")


class _Method:
    """What every span of a method's calls shares: its name and, by status code, its
    attributes (one dict per code, shared by the spans: they are never changed)."""

    __slots__ = ("attributes", "name")

    def __init__(self, service: str, method: str) -> None:
        self.name = f"{service}/{method}"
        self.attributes = {
            code: {
                "rpc.system": "grpc",
                "rpc.service": service,
                "rpc.method": method,
                "rpc.grpc.status_code": number,
            }
            for code, number in _CODES.items()
        }


@dataclass(slots=True)
class CallSpan:
    """A call's span while it runs: the parent of its database work's spans, and the trace
    context of its writes and its log lines."""

    method: _Method
    trace_id: int
    span_id: int
    sampled: bool
    parent_id: int
    remote: bool
    start_ns: int
    _ids: tuple[str, str] | None = None

    def ids(self) -> tuple[str, str]:
        # Formatted once, for the call's log lines (its access line and audit line both).
        if self._ids is None:
            self._ids = f"{self.trace_id:032x}", f"{self.span_id:016x}"
        return self._ids


_current: ContextVar[CallSpan | None] = ContextVar("campaign_grpc_span", default=None)


def current_traceparent() -> str:
    """The W3C traceparent of the current span, "" when nothing is traced."""
    span = _current.get()
    if span is None:
        return ""
    trace_id, span_id = span.ids()
    return f"00-{trace_id}-{span_id}-{'01' if span.sampled else '00'}"


def current_ids() -> tuple[str, str] | None:
    """The trace id and span id of the current span, as log lines show them; None when none."""
    span = _current.get()
    return None if span is None else span.ids()


def _root_decision(sampler: Sampler) -> bool | None:
    """Whether the sampler takes every trace a call starts, or none, without looking at the
    call (as the default parent-based always-on does); None when it has to be asked."""
    if sampler is sampling.ALWAYS_ON or sampler is sampling.DEFAULT_ON:
        return True
    if sampler is sampling.ALWAYS_OFF or sampler is sampling.DEFAULT_OFF:
        return False
    return None


class SpanSink:
    """Where finished spans go."""

    def put(self, record: Record) -> None:
        raise NotImplementedError

    def close(self) -> None:
        """Hands over what is left; blocks: run it off the event loop."""


class ExportingProcess(SpanSink):
    """Sends spans in batches, pickled, down a pipe to `python -m campaign_grpc.ops.span_export`,
    which exports them as the OTEL_* variables say. A thread of its own writes the pipe, so that
    an exporter that falls behind blocks it and never the event loop."""

    def __init__(self, command: Sequence[str] | None = None) -> None:
        self._proc = subprocess.Popen(
            list(command or [sys.executable, "-m", "campaign_grpc.ops.span_export"]),
            stdin=subprocess.PIPE,
        )
        self._pending: list[Record] = []
        self.dropped = 0
        self._wake = threading.Event()
        self._closing = False
        self._thread = threading.Thread(target=self._flush_loop, name="span-export", daemon=True)
        self._thread.start()

    def put(self, record: Record) -> None:
        if len(self._pending) >= MAX_PENDING:
            self.dropped += 1
            return
        self._pending.append(record)

    def _flush_loop(self) -> None:
        pipe = self._proc.stdin
        assert pipe is not None
        while True:
            self._wake.wait(FLUSH_EVERY_S)
            batch, self._pending = self._pending, []
            if batch:
                data = pickle.dumps(batch, protocol=pickle.HIGHEST_PROTOCOL)
                try:
                    pipe.write(_FRAME.pack(len(data)) + data)
                    pipe.flush()
                except OSError as exc:
                    self.dropped += len(batch)
                    log.warning("the span exporter is gone (%s); spans are dropped", exc)
                    return
            if self._closing:
                return

    def close(self) -> None:
        self._closing = True
        self._wake.set()
        self._thread.join(10)
        if self._proc.stdin is not None:
            self._proc.stdin.close()
        try:
            self._proc.wait(15)
        except subprocess.TimeoutExpired:
            self._proc.kill()
        if self.dropped:
            log.warning("%d spans were dropped: the exporter fell behind", self.dropped)


class ExporterSink(SpanSink):
    """Hands each span, made into the SDK's, to an exporter at once, in this process (tests)."""

    def __init__(self, exporter: SpanExporter) -> None:
        from .span_export import readable, resource

        self._exporter = exporter
        self._resource = resource()
        self._readable = readable

    def put(self, record: Record) -> None:
        self._exporter.export([self._readable(record, self._resource)])

    def close(self) -> None:
        self._exporter.shutdown()


class Tracing:
    """The server's tracing: spans of calls and of their database work, sent to a sink."""

    def __init__(self, sink: SpanSink, sampler: Sampler | None = None) -> None:
        self._sink = sink
        # The sampler OTEL_TRACES_SAMPLER names (parent-based always-on by default), as the
        # SDK's provider reads it.
        self._sampler = sampler or TracerProvider().sampler
        self._root_sampled = _root_decision(self._sampler)
        self._random = random.Random()
        # The metadata keys the configured propagators read (traceparent, tracestate, ...).
        self._fields = frozenset(propagate.get_global_textmap().fields)
        self._methods: dict[tuple[str, str], _Method] = {}

    @classmethod
    def from_environment(cls) -> Tracing:
        return cls(ExportingProcess())

    @classmethod
    def in_memory(cls, exporter: SpanExporter) -> Tracing:
        """Spans handed to exporter as each one ends, in this process (tests)."""
        return cls(ExporterSink(exporter))

    def shutdown(self) -> None:
        """Exports what is left and stops the exporter; blocks: run it off the event loop."""
        self._sink.close()

    def server_span(self, service: str, method: str, metadata: Any) -> tuple[Any, object]:
        """Starts a call's span, continuing the caller's trace from its metadata, and makes it
        current; returns what end_server_span needs."""
        of = self._methods.get((service, method))
        if of is None:
            of = self._methods[service, method] = _Method(service, method)
        fields = self._fields
        carrier = {k: v for k, v in metadata or () if k in fields and isinstance(v, str)}
        bits = self._random.getrandbits
        # Most calls carry none of the propagators' fields, and start a trace: with the
        # default sampler, nothing to extract and nothing to ask.
        if not carrier and self._root_sampled is not None:
            trace_id, sampled, parent_id, remote = bits(128), self._root_sampled, 0, False
        else:
            parent_context = propagate.extract(carrier) if carrier else otel_context.Context()
            parent = get_current_span(parent_context).get_span_context()
            trace_id = parent.trace_id if parent.is_valid else bits(128)
            decision = self._sampler.should_sample(
                parent_context, trace_id, of.name, SpanKind.SERVER
            )
            sampled = decision.decision == Decision.RECORD_AND_SAMPLE
            parent_id = parent.span_id if parent.is_valid else 0
            remote = parent.is_remote if parent.is_valid else False
        span = CallSpan(of, trace_id, bits(64), sampled, parent_id, remote, time.time_ns())
        return span, _current.set(span)

    def end_server_span(self, span: Any, token: object, code: str) -> None:
        # An async generator closed by its finalizer runs in another context, which never had
        # the span; the call's own context, that had it, is gone with its task then.
        with contextlib.suppress(ValueError):
            _current.reset(token)  # type: ignore[arg-type]
        if not span.sampled:
            return
        of = span.method
        self._sink.put(
            (
                of.name,
                _SERVER,
                span.trace_id,
                span.span_id,
                span.parent_id,
                span.remote,
                span.start_ns,
                time.time_ns(),
                of.attributes.get(code) or of.attributes["UNKNOWN"],
                code if code in SERVER_ERRORS else None,
            )
        )

    def capture(self) -> CallSpan | None:
        """The current span, when a sampled call's: the parent of the spans of its database
        work."""
        span = _current.get()
        return span if span is not None and span.sampled else None

    def batch_spans(
        self,
        parents: Sequence[object | None],
        *,
        queued_ns: Sequence[int],
        started_ns: int,
        ended_ns: int,
        name: str,
        attributes: dict[str, Any],
    ) -> None:
        """For each traced job of a batch of database work: a span of its wait for the
        database thread, and one of the batch's work (a transaction, for writes), children
        of the call that submitted it."""
        put, bits = self._sink.put, self._random.getrandbits
        for parent, queued in zip(parents, queued_ns, strict=True):
            if not isinstance(parent, CallSpan):
                continue
            tid, pid = parent.trace_id, parent.span_id
            put(("db.wait", _INTERNAL, tid, bits(64), pid, False, queued, started_ns, None, None))
            put(
                (name, _INTERNAL, tid, bits(64), pid, False, started_ns, ended_ns, attributes, None)
            )
