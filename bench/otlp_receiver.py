"""An OTLP/gRPC trace receiver that counts what it is sent, standing in for a collector: what
the tracing benchmark exports to, in a process of its own, at a low priority, as a collector
on another machine would not take the server's CPU.

    python bench/otlp_receiver.py PORT      # prints requests and bytes on SIGTERM
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from typing import Any

import grpc

METHOD = "Export"
SERVICE = "opentelemetry.proto.collector.trace.v1.TraceService"


async def serve(port: int) -> None:
    os.nice(10)
    received = {"requests": 0, "bytes": 0}

    async def export(request: bytes, context: Any) -> bytes:
        # Counted, not decoded: decoding is the collector's work, not the server's cost.
        received["requests"] += 1
        received["bytes"] += len(request)
        return b""  # an empty ExportTraceServiceResponse

    handler = grpc.unary_unary_rpc_method_handler(export)
    server = grpc.aio.server()
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(SERVICE, {METHOD: handler}),)
    )
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    print(f"{received['requests']} export requests, {received['bytes']} bytes", flush=True)
    await server.stop(0)


if __name__ == "__main__":
    asyncio.run(serve(int(sys.argv[1])))
