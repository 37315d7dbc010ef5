"""Distributed tracing with OpenTelemetry: off unless asked for, and then nothing is paid.

With `--tracing on`, the SDK is set up the OpenTelemetry way: the standard environment
variables choose the exporter and its endpoint (OTEL_TRACES_EXPORTER, otlp by default;
OTEL_EXPORTER_OTLP_ENDPOINT, OTEL_EXPORTER_OTLP_TRACES_ENDPOINT, ...), the service name and
resource (OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES), the sampler (OTEL_TRACES_SAMPLER,
OTEL_TRACES_SAMPLER_ARG), the batching (OTEL_BSP_*) and the propagators (OTEL_PROPAGATORS, W3C
trace context by default). The provider is the server's own, not the process-wide one, so that
servers sharing a process (the tests) keep their spans apart.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import propagate
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    ConsoleSpanExporter,
    SimpleSpanProcessor,
    SpanExporter,
)
from opentelemetry.trace import (
    Span,
    SpanKind,
    Status,
    StatusCode,
    Tracer,
    get_current_span,
    set_span_in_context,
)

INSTRUMENTATION = "campaign_grpc"
DEFAULT_SERVICE_NAME = "campaign-grpc"
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


def current_traceparent() -> str:
    """The W3C traceparent of the current span, "" when nothing is traced."""
    context = get_current_span().get_span_context()
    if not context.is_valid:
        return ""
    return f"00-{context.trace_id:032x}-{context.span_id:016x}-{int(context.trace_flags):02x}"


def current_ids() -> tuple[str, str] | None:
    """The trace id and span id of the current span, as log lines show them; None when none."""
    context = get_current_span().get_span_context()
    if not context.is_valid:
        return None
    return f"{context.trace_id:032x}", f"{context.span_id:016x}"


def _exporter(name: str) -> SpanExporter | None:
    if name == "none":
        return None
    if name == "console":
        return ConsoleSpanExporter()
    if name == "otlp":
        # Only when asked for: its gRPC client is created with it.
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        return OTLPSpanExporter()
    raise ValueError(f"OTEL_TRACES_EXPORTER: unknown exporter {name!r} (otlp, console or none)")


@dataclass
class Tracing:
    """The server's tracer and what it takes to end it."""

    provider: TracerProvider
    tracer: Tracer

    @classmethod
    def from_environment(cls) -> Tracing:
        names = os.environ.get("OTEL_TRACES_EXPORTER", "otlp").split(",")
        processors: list[SpanProcessor] = []
        for name in (n.strip() for n in names if n.strip()):
            exporter = _exporter(name)
            if exporter is not None:
                processors.append(BatchSpanProcessor(exporter))
        return cls.with_processors(processors)

    @classmethod
    def with_processors(cls, processors: Sequence[SpanProcessor]) -> Tracing:
        resource = Resource.create({"service.name": DEFAULT_SERVICE_NAME}).merge(
            Resource.create()  # OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES win
        )
        provider = TracerProvider(resource=resource)
        for processor in processors:
            provider.add_span_processor(processor)
        return cls(provider, provider.get_tracer(INSTRUMENTATION))

    @classmethod
    def in_memory(cls, exporter: SpanExporter) -> Tracing:
        """Spans handed to exporter as each one ends (tests)."""
        return cls.with_processors([SimpleSpanProcessor(exporter)])

    def capture(self) -> Span | None:
        """The current span, when it is one of a traced call: the parent of its database
        work's spans."""
        span = get_current_span()
        return span if span.get_span_context().is_valid else None

    def shutdown(self) -> None:
        """Exports what is left and stops the exporters; blocks: run it off the event loop."""
        self.provider.shutdown()

    def server_span(self, service: str, method: str, metadata: Any) -> tuple[Span, object]:
        """Starts a call's span, the caller's trace continued from its traceparent, and makes
        it current; returns it and the token to end_server_span with."""
        carrier = {key: value for key, value in metadata or () if isinstance(value, str)}
        parent = propagate.extract(carrier)
        span = self.tracer.start_span(
            f"{service}/{method}",
            context=parent,
            kind=SpanKind.SERVER,
            attributes={"rpc.system": "grpc", "rpc.service": service, "rpc.method": method},
        )
        token = otel_context.attach(set_span_in_context(span, parent))
        return span, token

    @staticmethod
    def end_server_span(span: Span, token: object, code: str) -> None:
        span.set_attribute("rpc.grpc.status_code", _CODES.get(code, 2))
        if code in SERVER_ERRORS:
            span.set_status(Status(StatusCode.ERROR, code))
        span.end()
        otel_context.detach(token)  # type: ignore[arg-type]

    def batch_spans(
        self,
        parents: Sequence[object],
        *,
        queued_ns: Sequence[int],
        started_ns: int,
        ended_ns: int,
        name: str,
        attributes: dict[str, Any],
    ) -> None:
        """For each job of a batch of database work: a span of its wait for the database
        thread, and one of the batch's work (a transaction, for writes), as children of the
        call that submitted it."""
        tracer = self.tracer
        for parent, queued in zip(parents, queued_ns, strict=True):
            if parent is None:
                continue
            context = set_span_in_context(parent)  # type: ignore[arg-type]
            wait = tracer.start_span("db.wait", context=context, start_time=queued)
            wait.end(end_time=started_ns)
            work = tracer.start_span(
                name, context=context, start_time=started_ns, attributes=attributes
            )
            work.end(end_time=ended_ns)
