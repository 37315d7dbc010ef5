"""Server interceptors: the access log, and the count of unary calls in flight."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import time
from collections.abc import AsyncGenerator, Awaitable, Callable
from typing import Any, TypeAlias

import grpc

log = logging.getLogger("campaign_grpc.access")

Context = grpc.aio.ServicerContext[Any, Any]
Handler: TypeAlias = "grpc.RpcMethodHandler[Any, Any]"


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


def _log(method: str, context: Context, started: float, error: BaseException | None) -> None:
    ms = (time.perf_counter() - started) * 1000
    code = code_name(context, error)
    log.info(
        "%s %s %.2fms",
        method,
        code,
        ms,
        extra={"method": method, "code": code, "duration_ms": round(ms, 3)},
    )


class AccessLog(grpc.aio.ServerInterceptor):
    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Handler | None]],
        details: grpc.HandlerCallDetails,
    ) -> Handler | None:
        handler = await continuation(details)
        if handler is None or not log.isEnabledFor(logging.INFO):
            return handler
        method = details.method
        # The stubs describe the sync handler types; on an aio server they are coroutines.
        unary_unary: Any = handler.unary_unary
        unary_stream: Any = handler.unary_stream
        stream_stream: Any = handler.stream_stream
        if unary_unary is not None:
            return grpc.unary_unary_rpc_method_handler(
                _logged_unary(method, unary_unary),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        if unary_stream is not None:
            return grpc.unary_stream_rpc_method_handler(
                _logged_stream(method, unary_stream),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        if stream_stream is not None:
            return grpc.stream_stream_rpc_method_handler(
                _logged_stream(method, stream_stream),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        return handler


def _logged_unary(
    method: str, behavior: Callable[[Any, Context], Awaitable[Any]]
) -> Callable[[Any, Context], Awaitable[Any]]:
    async def call(request: Any, context: Context) -> Any:
        started = time.perf_counter()
        error: BaseException | None = None
        try:
            return await behavior(request, context)
        except BaseException as exc:
            error = exc
            raise
        finally:
            _log(method, context, started, error)

    return call


def _logged_stream(method: str, behavior: Any) -> Any:
    # A streaming handler either yields its messages or awaits context.write (as
    # grpc's own health Watch does); each needs a wrapper of its own kind.
    if not inspect.isasyncgenfunction(behavior):
        return _logged_unary(method, behavior)

    async def call(request: Any, context: Context) -> AsyncGenerator[Any, None]:
        started = time.perf_counter()
        error: BaseException | None = None
        try:
            async with contextlib.aclosing(behavior(request, context)) as responses:
                async for response in responses:
                    yield response
        except BaseException as exc:
            error = exc
            raise
        finally:
            _log(method, context, started, error)

    return call


class UnaryCallsInFlight(grpc.aio.ServerInterceptor):
    """Counts unary calls in flight, so that shutdown knows when they have all finished."""

    def __init__(self) -> None:
        self.count = 0
        self._idle = asyncio.Event()
        self._idle.set()

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Handler | None]],
        details: grpc.HandlerCallDetails,
    ) -> Handler | None:
        handler = await continuation(details)
        if handler is None or handler.unary_unary is None:
            return handler
        unary_unary: Any = handler.unary_unary

        async def counted(request: Any, context: Context) -> Any:
            self.count += 1
            self._idle.clear()
            try:
                return await unary_unary(request, context)
            finally:
                self.count -= 1
                if self.count == 0:
                    self._idle.set()

        return grpc.unary_unary_rpc_method_handler(
            counted,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )

    async def wait_idle(self) -> None:
        await self._idle.wait()
