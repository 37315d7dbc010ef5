"""A call's request bytes taken in: received within a bounded time, bounded in size, parsed.

The interceptor reads and parses requests itself (see wrappers.as_request_stream), so that a
request over the size limit is answered RESOURCE_EXHAUSTED with details, and one that does
not parse INVALID_ARGUMENT with details, as the client's mistake, instead of gRPC's own
UNKNOWN.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any, cast

import grpc

from ...domain.errors import CampaignError, FieldViolation, InvalidArgument
from ...ops.limits import request_not_received, request_too_large
from .call import Context

Deserializer = Callable[[bytes], Any] | None


@dataclass(frozen=True, slots=True)
class Refused:
    """Stands for a request refused as it was parsed: too large, or bytes that do not parse."""

    error: CampaignError


def _malformed(error: str) -> InvalidArgument:
    return InvalidArgument(
        [FieldViolation("request", f"is not a valid protobuf message: {error}")],
        reason="MALFORMED_REQUEST",
    )


def parse(deserialize: Deserializer, data: bytes, limit: int) -> Any | Refused:
    """The request, or why it is refused: too large, or bytes that do not parse."""
    if len(data) > limit:
        return Refused(request_too_large(len(data), limit))
    if deserialize is None:
        return data
    try:
        return deserialize(data)
    except Exception as exc:  # DecodeError, or anything a parser can raise on bad bytes
        return Refused(_malformed(str(exc)))


async def parsed(
    requests: AsyncIterator[bytes], deserialize: Deserializer, limit: int
) -> AsyncIterator[Any]:
    """A stream of requests parsed one by one; the first refused ends it with its error."""
    async for data in requests:
        request = parse(deserialize, data, limit)
        if isinstance(request, Refused):
            raise request.error
        yield request


def _no_request() -> InvalidArgument:
    return InvalidArgument(
        [FieldViolation("request", "the call ended before its request message")],
        reason="MALFORMED_REQUEST",
    )


class Receiving:
    """Unary calls whose request message has not arrived yet, each with its time left.

    grpc core hands a call to the server as soon as its headers arrive, and then waits as
    long as the client likes for its message: a client that half-closes without one, sends
    a part of one, or trickles it (slowloris) would hold the call, its buffers and its place
    for the life of the connection. Here each one has a bounded time, and at most `limit`
    wait at once: past it the one waiting longest is dropped to make room, so that calls
    whose message is already there (every sound client's) always get their turn.
    """

    def __init__(
        self, timeout: float, limit: int, aborted: Callable[[str], None] | None = None
    ) -> None:
        self.timeout = timeout
        self.limit = limit
        self.dropped = 0
        # Told the peer of each call that ended before its request: reset by the client
        # (rapid reset), or half-closed without a message.
        self._aborted = aborted
        self._waiting: dict[int, asyncio.Timeout] = {}
        self._next = 0

    def __len__(self) -> int:
        return len(self._waiting)

    async def receive(self, context: Context) -> bytes | CampaignError:
        key = self._next
        self._next += 1
        try:
            async with asyncio.timeout(self.timeout) as timeout:
                if len(self._waiting) >= self.limit:
                    _, oldest = self._pop_oldest()
                    oldest.reschedule(asyncio.get_running_loop().time())
                self._waiting[key] = timeout
                message = await context.read()
        except TimeoutError:
            self.dropped += 1
            return request_not_received(self.timeout)
        except BaseException:
            # The client reset the call (or the server is stopping, which ends it all).
            if self._aborted is not None:
                self._aborted(context.peer())
            raise
        finally:
            self._waiting.pop(key, None)
        if message is grpc.aio.EOF:
            if self._aborted is not None:
                self._aborted(context.peer())
            return _no_request()
        return cast(bytes, message)

    def _pop_oldest(self) -> tuple[int, asyncio.Timeout]:
        key = next(iter(self._waiting))
        return key, self._waiting.pop(key)
