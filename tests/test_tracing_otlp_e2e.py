"""`campaign-grpc serve --tracing` exporting over OTLP/gRPC to a real receiver: the trace
service of opentelemetry-proto, served by the test, configured only by OTEL_* variables."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

from campaign_grpc_client.v1 import campaign_pb2 as pb
from campaign_grpc_client.v1 import campaign_pb2_grpc
from e2e_helpers import Process, eventually, free_port, wait_serving
from factories import runnable_campaign

TRACE_ID = "0af7651916cd43dd8448eb211c80319c"
TRACEPARENT = f"00-{TRACE_ID}-b7ad6b7169203331-01"


class Receiver(trace_service_pb2_grpc.TraceServiceServicer):
    """Keeps every span exported to it, with the resource it came from."""

    def __init__(self) -> None:
        self.spans: list[tuple[dict[str, Any], Any]] = []

    async def Export(
        self, request: trace_service_pb2.ExportTraceServiceRequest, context: Any
    ) -> trace_service_pb2.ExportTraceServiceResponse:
        for resource_spans in request.resource_spans:
            resource = {a.key: a.value.string_value for a in resource_spans.resource.attributes}
            for scope in resource_spans.scope_spans:
                self.spans.extend((resource, span) for span in scope.spans)
        return trace_service_pb2.ExportTraceServiceResponse()


@pytest.fixture
async def receiver() -> AsyncIterator[tuple[Receiver, int]]:
    server = grpc.aio.server()
    got = Receiver()
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(got, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        yield got, port
    finally:
        await server.stop(0)


async def test_spans_reach_an_otlp_receiver_configured_by_the_standard_variables(
    receiver: tuple[Receiver, int], tmp_path: Path, customer: str
) -> None:
    got, port = receiver
    target = f"127.0.0.1:{free_port()}"
    env = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{port}",
        "OTEL_SERVICE_NAME": "campaigns-under-test",
        "OTEL_BSP_SCHEDULE_DELAY": "100",
    }
    args = ["--listen", target, "--database-url", f"sqlite:///{tmp_path / 'c.db'}", "--tracing"]
    proc = Process(args, tmp_path / "server.log", env=env)
    try:
        await wait_serving(target, proc)
        async with grpc.aio.insecure_channel(target) as channel:
            stub = campaign_pb2_grpc.CampaignServiceStub(channel)
            request = pb.CreateCampaignRequest(campaign=runnable_campaign(customer))
            await stub.CreateCampaign(request, metadata=(("traceparent", TRACEPARENT),), timeout=10)

        async def exported() -> bool:
            return any(s.name.endswith("/CreateCampaign") for _, s in got.spans)

        await eventually(exported, within=15)
    finally:
        proc.terminate()
        await proc.exit_code(within=15)
        proc.kill()
    resource, create = next((r, s) for r, s in got.spans if s.name.endswith("/CreateCampaign"))
    assert resource["service.name"] == "campaigns-under-test"
    assert create.trace_id.hex() == TRACE_ID
    assert create.parent_span_id.hex() == "b7ad6b7169203331"
    attributes = {a.key: a.value for a in create.attributes}
    assert attributes["rpc.system"].string_value == "grpc"
    assert attributes["rpc.method"].string_value == "CreateCampaign"
    assert attributes["rpc.grpc.status_code"].int_value == 0
    # Its database work, exported too, as its children.
    kids = {s.name for _, s in got.spans if s.parent_span_id == create.span_id}
    assert kids == {"db.wait", "db.transaction"}
