"""A method's handler wrapped in its chain of steps, in the two shapes grpc tells apart."""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import AsyncGenerator, Awaitable, Callable
from typing import Any

import grpc

from .call import Context, Handler
from .chain import Chain

Wrapper = Callable[[Any, Context], Any]


def as_request_stream(chain: Chain, behavior: Any, serialize: Any) -> Handler:
    """The method's handler, wrapped, registered as taking a stream of raw requests.

    A method with a single request is served as one with a stream of requests (the same on
    the wire), and without its request deserializer, so that the wrapper runs from the call's
    start: it reads the request itself, within a bounded time, and parses it where a bad one
    can still be answered properly, after the request's bytes have been admitted. A stream's
    requests are parsed here too, so that bytes that do not parse are answered as the
    client's mistake, not raised inside the handler.
    """
    if chain.call.kind == "unary":
        return grpc.stream_unary_rpc_method_handler(
            awaited(chain, behavior), response_serializer=serialize
        )
    # A streaming handler either yields its messages or awaits context.write (as grpc's own
    # health Watch does); the latter is observed as a whole.
    wrapper = streamed(chain, behavior) if inspect.isasyncgenfunction(behavior) else None
    return grpc.stream_stream_rpc_method_handler(
        wrapper or awaited(chain, behavior), response_serializer=serialize
    )


def awaited(chain: Chain, behavior: Callable[[Any, Context], Awaitable[Any]]) -> Wrapper:
    """A handler that is awaited: a unary one, or a streaming one that writes its messages."""
    begin, end = chain.begin, chain.end
    take = chain.request if chain.call.kind != "bidi_stream" else chain.requests

    async def handle(requests: Any, context: Context) -> Any:
        state = begin(context)
        try:
            response = await behavior(await take(requests, context, state), context)
        except BaseException as exc:
            end(context, state, exc)
            raise
        end(context, state, None, response)
        return response

    return handle


def streamed(chain: Chain, behavior: Any) -> Wrapper:
    """A streaming handler that yields its messages; the chain's watchers see each one."""
    begin, end = chain.begin, chain.end
    take = chain.request if chain.call.kind != "bidi_stream" else chain.requests
    call, watchers = chain.call, chain.watchers

    async def handle(requests: Any, context: Context) -> AsyncGenerator[Any, None]:
        state = begin(context)
        try:
            request = await take(requests, context, state)
            async with contextlib.aclosing(behavior(request, context)) as responses:
                async for response in responses:
                    for watcher in watchers:
                        watcher.sent(call, response)
                    yield response
        except BaseException as exc:
            end(context, state, exc)
            raise
        end(context, state, None)

    return handle
