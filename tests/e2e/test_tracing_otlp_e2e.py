"""`campaign-grpc serve --tracing` exporting over OTLP to a real receiver, over gRPC (the trace
service of opentelemetry-proto) and over HTTP (protobuf bodies POSTed to /v1/traces), served by
the test, configured only by OTEL_* variables; and refusing at start what it cannot honour."""

from __future__ import annotations

import subprocess
import threading
from collections.abc import AsyncIterator, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import grpc
import pytest
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

from campaign_grpc_client.v1 import campaign_pb2 as pb
from campaign_grpc_client.v1 import campaign_pb2_grpc
from e2e_helpers import Process, eventually, free_port, wait_serving
from factories import runnable_campaign
from toolchains import CLI, child_env

TRACE_ID = "0af7651916cd43dd8448eb211c80319c"
TRACEPARENT = f"00-{TRACE_ID}-b7ad6b7169203331-01"


class Receiver(trace_service_pb2_grpc.TraceServiceServicer):
    """Keeps every span exported to it, with the resource it came from."""

    def __init__(self) -> None:
        self.spans: list[tuple[dict[str, Any], Any]] = []

    def take(self, request: trace_service_pb2.ExportTraceServiceRequest) -> None:
        for resource_spans in request.resource_spans:
            resource = {a.key: a.value.string_value for a in resource_spans.resource.attributes}
            for scope in resource_spans.scope_spans:
                self.spans.extend((resource, span) for span in scope.spans)

    async def Export(
        self, request: trace_service_pb2.ExportTraceServiceRequest, context: Any
    ) -> trace_service_pb2.ExportTraceServiceResponse:
        self.take(request)
        return trace_service_pb2.ExportTraceServiceResponse()


@pytest.fixture
async def grpc_receiver() -> AsyncIterator[tuple[Receiver, int]]:
    server = grpc.aio.server()
    got = Receiver()
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(got, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        yield got, port
    finally:
        await server.stop(0)


@pytest.fixture
def http_receiver() -> Iterator[tuple[Receiver, int]]:
    """OTLP/HTTP as a collector serves it: protobuf bodies POSTed to /v1/traces."""
    got = Receiver()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            assert self.path == "/v1/traces", self.path
            assert self.headers["Content-Type"] == "application/x-protobuf"
            got.take(trace_service_pb2.ExportTraceServiceRequest.FromString(body))
            answer = trace_service_pb2.ExportTraceServiceResponse().SerializeToString()
            self.send_response(200)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield got, server.server_address[1]
    finally:
        server.shutdown()
        thread.join(10)
        server.server_close()


async def test_spans_reach_an_otlp_receiver_configured_by_the_standard_variables(
    grpc_receiver: tuple[Receiver, int], tmp_path: Path, customer: str
) -> None:
    await spans_reach(grpc_receiver, {}, tmp_path, customer)


async def test_spans_reach_an_otlp_http_receiver_when_the_protocol_says_so(
    http_receiver: tuple[Receiver, int], tmp_path: Path, customer: str
) -> None:
    await spans_reach(
        http_receiver, {"OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf"}, tmp_path, customer
    )


@pytest.mark.parametrize(
    ("variables", "named"),
    [
        ({"OTEL_EXPORTER_OTLP_PROTOCOL": "http/json"}, "OTEL_EXPORTER_OTLP_PROTOCOL='http/json'"),
        (
            {"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "h2"},
            "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL='h2'",
        ),
        ({"OTEL_TRACES_EXPORTER": "otlp,zipkin"}, "OTEL_TRACES_EXPORTER names 'zipkin'"),
    ],
)
def test_serve_refuses_to_start_on_an_exporter_it_cannot_honour(
    variables: dict[str, str], named: str, tmp_path: Path
) -> None:
    args = ["--listen", f"127.0.0.1:{free_port()}", "--database-url", "sqlite:///c.db"]
    done = subprocess.run(
        [str(CLI), "serve", *args, "--tracing"],
        cwd=tmp_path,
        env={**child_env(), **variables},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2, done.stderr
    assert named in done.stderr, done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "c.db").exists()  # refused before anything was opened


async def spans_reach(
    receiver: tuple[Receiver, int], variables: dict[str, str], tmp_path: Path, customer: str
) -> None:
    got, port = receiver
    target = f"127.0.0.1:{free_port()}"
    env = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{port}",
        "OTEL_SERVICE_NAME": "campaigns-under-test",
        "OTEL_BSP_SCHEDULE_DELAY": "100",
        **variables,
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
