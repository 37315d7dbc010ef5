"""A bare grpc.aio server with one server-streaming method, the fan-out benchmark's baseline.

    python bench/bare_stream.py PORT

Each call of /bench.Bare/Watch sends one message and then waits until it is cancelled: what an
idle stream costs grpc.aio itself, with none of the service's work behind it.
"""

from __future__ import annotations

import asyncio
import signal
import sys
from collections.abc import AsyncIterator
from typing import Any

import grpc

METHOD = "/bench.Bare/Watch"


async def watch(request: bytes, context: Any) -> AsyncIterator[bytes]:
    yield b"\x08\x02"
    await asyncio.Event().wait()


async def serve(port: int) -> None:
    server = grpc.aio.server(
        options=[
            ("grpc.server.max_pending_requests", 20_000),
            ("grpc.server.max_pending_requests_hard_limit", 20_000),
        ]
    )
    handler = grpc.unary_stream_rpc_method_handler(watch)
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler("bench.Bare", {"Watch": handler}),)
    )
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    await server.stop(0)


if __name__ == "__main__":
    asyncio.run(serve(int(sys.argv[1])))
