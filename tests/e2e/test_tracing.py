"""Tracing with OpenTelemetry on a real server, its spans caught by an in-memory exporter: a
caller's trace continued, the database work as child spans, the trace of a write on the watch
stream, and the trace ids in the log lines."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
import pytest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from campaign_grpc.ops import span_export
from campaign_grpc.ops.logs import JsonFormatter, TraceIds
from campaign_grpc.ops.server import App
from campaign_grpc.ops.tracing import Tracing, current_traceparent
from campaign_grpc.settings import Settings
from campaign_grpc_client.v1 import campaign_pb2 as pb
from campaign_grpc_client.v1 import campaign_pb2_grpc
from e2e_helpers import W, eventually, read_snapshot, watch
from factories import new_id, runnable_campaign

Stub = campaign_pb2_grpc.CampaignServiceStub
SERVICE = "campaign.v1.CampaignService"
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER_SPAN = "00f067aa0ba902b7"
TRACEPARENT = f"00-{TRACE_ID}-{CALLER_SPAN}-01"


@pytest.fixture
def spans() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture
async def traced(
    start_server: Callable[..., Any], settings: Settings, spans: InMemorySpanExporter
) -> AsyncIterator[Stub]:
    app: App = await start_server(settings, tracing=Tracing.in_memory(spans))
    async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel:
        yield Stub(channel)


def named(spans: InMemorySpanExporter, name: str) -> list[ReadableSpan]:
    return [s for s in spans.get_finished_spans() if s.name == name]


def children(spans: InMemorySpanExporter, parent: ReadableSpan) -> list[ReadableSpan]:
    return [
        s
        for s in spans.get_finished_spans()
        if s.parent is not None and s.parent.span_id == parent.context.span_id
    ]


async def test_a_callers_trace_is_continued_with_the_database_work_as_children(
    traced: Stub, spans: InMemorySpanExporter, customer: str
) -> None:
    metadata = (("traceparent", TRACEPARENT),)
    request = pb.CreateCampaignRequest(campaign=runnable_campaign(customer))
    created = (await traced.CreateCampaign(request, metadata=metadata, timeout=10)).campaign
    get = pb.GetCampaignRequest(customer_id=customer, id=created.id)
    await traced.GetCampaign(get, metadata=metadata, timeout=10)

    (create,) = named(spans, f"{SERVICE}/CreateCampaign")
    (read,) = named(spans, f"{SERVICE}/GetCampaign")
    for span, method in ((create, "CreateCampaign"), (read, "GetCampaign")):
        assert span.kind == SpanKind.SERVER
        assert f"{span.context.trace_id:032x}" == TRACE_ID
        assert span.parent is not None
        assert f"{span.parent.span_id:016x}" == CALLER_SPAN
        assert span.parent.is_remote
        assert dict(span.attributes or {}) == {
            "rpc.system": "grpc",
            "rpc.service": SERVICE,
            "rpc.method": method,
            "rpc.grpc.status_code": 0,
        }
        assert span.status.status_code == StatusCode.UNSET
    # The wait for the database thread and the transaction (or read), told apart.
    create_work = {s.name: s for s in children(spans, create)}
    assert set(create_work) == {"db.wait", "db.transaction"}
    transaction = create_work["db.transaction"]
    assert transaction.attributes is not None
    assert transaction.attributes["db.batch.size"] >= 1
    assert transaction.attributes["db.system"] in ("sqlite", "postgresql")
    wait = create_work["db.wait"]
    assert wait.end_time is not None
    assert transaction.start_time is not None
    assert wait.end_time <= transaction.start_time
    assert {s.name for s in children(spans, read)} == {"db.wait", "db.read"}


async def test_a_call_without_a_trace_starts_one_and_its_status_code_is_recorded(
    traced: Stub, spans: InMemorySpanExporter, customer: str
) -> None:
    with pytest.raises(grpc.aio.AioRpcError):
        await traced.GetCampaign(pb.GetCampaignRequest(customer_id=customer, id=new_id()))

    # An error's status goes out as the call aborts, before its span is closed.
    async def ended() -> bool:
        return bool(named(spans, f"{SERVICE}/GetCampaign"))

    await eventually(ended)
    (span,) = named(spans, f"{SERVICE}/GetCampaign")
    assert span.parent is None
    assert span.attributes is not None
    assert span.attributes["rpc.grpc.status_code"] == grpc.StatusCode.NOT_FOUND.value[0]
    # A client's mistake is not the server's failure.
    assert span.status.status_code == StatusCode.UNSET


async def test_the_trace_of_a_write_arrives_with_its_change_on_the_stream(
    traced: Stub, spans: InMemorySpanExporter, customer: str
) -> None:
    stream = watch(traced, customer)
    try:
        await read_snapshot(stream)
        request = pb.CreateCampaignRequest(campaign=runnable_campaign(customer))
        await traced.CreateCampaign(request, metadata=(("traceparent", TRACEPARENT),), timeout=10)
        change = await stream.next_change()
    finally:
        await stream.close()
    assert change.kind == W.KIND_CHANGE
    (create,) = named(spans, f"{SERVICE}/CreateCampaign")
    # The write's own span: a subscriber that reacts continues the request's trace.
    assert change.traceparent == (
        f"00-{TRACE_ID}-{create.context.span_id:016x}-{int(create.context.trace_flags):02x}"
    )


async def test_every_log_line_of_a_traced_call_has_its_ids(
    traced: Stub, spans: InMemorySpanExporter, customer: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    caplog.handler.addFilter(TraceIds())
    request = pb.CreateCampaignRequest(campaign=runnable_campaign(customer))
    await traced.CreateCampaign(request, metadata=(("traceparent", TRACEPARENT),), timeout=10)
    (create,) = named(spans, f"{SERVICE}/CreateCampaign")
    lines = [
        json.loads(JsonFormatter().format(r))
        for r in caplog.records
        if r.name in ("campaign_grpc.access", "campaign_grpc.audit")
    ]
    assert {line["logger"] for line in lines} == {"campaign_grpc.access", "campaign_grpc.audit"}
    for line in lines:
        assert (line["trace_id"], line["span_id"]) == (TRACE_ID, f"{create.context.span_id:016x}")


async def test_without_tracing_no_span_and_no_trace_context(stub: Stub, customer: str) -> None:
    stream = watch(stub, customer)
    try:
        await read_snapshot(stream)
        request = pb.CreateCampaignRequest(campaign=runnable_campaign(customer))
        await stub.CreateCampaign(request, metadata=(("traceparent", TRACEPARENT),), timeout=10)
        change = await stream.next_change()
    finally:
        await stream.close()
    assert change.traceparent == ""


@pytest.mark.parametrize(
    ("sampler", "arg", "root", "under_a_sampled_caller"),
    [
        (None, "", True, True),
        ("parentbased_always_on", "", True, True),
        ("parentbased_always_off", "", False, True),
        ("always_on", "", True, True),
        ("always_off", "", False, False),
        ("traceidratio", "0", False, False),
        ("parentbased_traceidratio", "0", False, True),
        ("parentbased_traceidratio", "1", True, True),
    ],
)
def test_the_sampler_the_environment_names_decides_which_calls_are_traced(
    monkeypatch: pytest.MonkeyPatch,
    sampler: str | None,
    arg: str,
    root: bool,
    under_a_sampled_caller: bool,
) -> None:
    if sampler is None:
        monkeypatch.delenv("OTEL_TRACES_SAMPLER", raising=False)
    else:
        monkeypatch.setenv("OTEL_TRACES_SAMPLER", sampler)
    monkeypatch.setenv("OTEL_TRACES_SAMPLER_ARG", arg)
    spans = InMemorySpanExporter()
    tracing = Tracing.in_memory(spans)
    for metadata, sampled in (
        ((("user-agent", "test"),), root),
        ((("traceparent", TRACEPARENT),), under_a_sampled_caller),
    ):
        spans.clear()
        span, token = tracing.server_span(SERVICE, "GetCampaign", metadata)
        # Sampled or not, the call has a trace context, for its writes and its log lines.
        traceparent = current_traceparent()
        tracing.end_server_span(span, token, "OK")
        assert current_traceparent() == ""
        assert traceparent.endswith("-01" if sampled else "-00")
        if metadata[0][0] == "traceparent":
            assert traceparent.startswith(f"00-{TRACE_ID}-")
        assert len(spans.get_finished_spans()) == (1 if sampled else 0)


def test_the_exporting_process_resource_is_the_sdks_with_its_hash_kept(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OTEL_SERVICE_NAME", "campaigns-under-test")
    monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment=test")
    kept = span_export.resource()
    plain = Resource.create({"service.name": "campaign-grpc"}).merge(Resource.create())
    assert kept == plain
    assert hash(kept) == hash(plain)
    assert kept.attributes["service.name"] == "campaigns-under-test"
    assert kept.attributes["deployment.environment"] == "test"
