"""The exporting process of tracing: spans from the server, pickled down its standard input,
made into the SDK's spans and exported with the official exporter the OTEL_* variables name.

    python -m campaign_grpc.ops.span_export      # started by ops.tracing.ExportingProcess

It ends, after exporting what it was sent, when its input closes.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import struct
import sys
from collections.abc import Mapping
from typing import BinaryIO

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import ConsoleSpanExporter, SpanExporter
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import SpanContext, SpanKind, Status, StatusCode, TraceFlags

from . import export_config
from .tracing import Record

DEFAULT_SERVICE_NAME = "campaign-grpc"
_SCOPE = InstrumentationScope("campaign_grpc")
_SAMPLED = TraceFlags(TraceFlags.SAMPLED)
_KINDS = {kind.value: kind for kind in SpanKind}
_UNSET = Status(StatusCode.UNSET)
_FRAME = struct.Struct(">I")
# The most spans one export call sends (OTEL_BSP_MAX_EXPORT_BATCH_SIZE's default).
EXPORT_BATCH = 512


class _HashedOnce(Resource):
    """A resource whose hash is worked out once. The OTLP encoder groups spans by resource,
    hashing each span's, and the SDK's hash writes every attribute out as JSON: a fifth of
    the encoder's time, for the same few attributes every time."""

    def __init__(self, of: Resource) -> None:
        super().__init__(of.attributes, of.schema_url)
        self._hash = super().__hash__()

    def __hash__(self) -> int:
        return self._hash


def resource() -> Resource:
    """campaign-grpc's resource; OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES win."""
    merged = Resource.create({"service.name": DEFAULT_SERVICE_NAME}).merge(Resource.create())
    return _HashedOnce(merged)


def readable(record: Record, of: Resource) -> ReadableSpan:
    name, kind, trace_id, span_id, parent_id, remote, start, end, attributes, error = record
    parent = SpanContext(trace_id, parent_id, remote, _SAMPLED) if parent_id else None
    return ReadableSpan(
        name=name,
        context=SpanContext(trace_id, span_id, False, _SAMPLED),
        parent=parent,
        resource=of,
        attributes=attributes,
        kind=_KINDS[kind],
        status=Status(StatusCode.ERROR, error) if error else _UNSET,
        start_time=start,
        end_time=end,
        instrumentation_scope=_SCOPE,
    )


def exporters(environ: Mapping[str, str] = os.environ) -> list[SpanExporter]:
    """The exporters OTEL_TRACES_EXPORTER names (otlp by default), OTLP over the protocol
    OTEL_EXPORTER_OTLP_(TRACES_)PROTOCOL names (grpc by default); the server refused to start
    on any other value (export_config.problems)."""
    found: list[SpanExporter] = []
    for name in export_config.exporter_names(environ):
        if name == "console":
            found.append(ConsoleSpanExporter())
        elif export_config.otlp_protocol(environ)[0] == "http/protobuf":
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
                OTLPSpanExporter as OTLPOverHTTP,
            )

            found.append(OTLPOverHTTP())
        else:
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

            found.append(OTLPSpanExporter())
    return found


def _read_exactly(stream: BinaryIO, size: int) -> bytes | None:
    data = b""
    while len(data) < size:
        chunk = stream.read(size - len(data))
        if not chunk:
            return None
        data += chunk
    return data


def run(stream: BinaryIO) -> None:
    # Background work: on a busy machine the server's calls come first, and the spans wait
    # (the server drops what waits too long, and counts it).
    with contextlib.suppress(OSError):
        os.nice(10)
    of, targets = resource(), exporters()
    try:
        while (header := _read_exactly(stream, _FRAME.size)) is not None:
            payload = _read_exactly(stream, _FRAME.unpack(header)[0])
            if payload is None:
                return
            records: list[Record] = pickle.loads(payload)
            spans = [readable(r, of) for r in records]
            for start in range(0, len(spans), EXPORT_BATCH):
                for exporter in targets:
                    exporter.export(spans[start : start + EXPORT_BATCH])
    finally:
        for exporter in targets:
            exporter.shutdown()


if __name__ == "__main__":
    run(sys.stdin.buffer)
