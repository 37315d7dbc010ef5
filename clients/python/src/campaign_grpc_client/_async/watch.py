"""AsyncWatch: the asyncio stream of watch(), which reconnects by itself (see _watch)."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncGenerator
from types import TracebackType
from typing import Any

import grpc

from .._backends import AsyncEvent
from .._channel import Metadata
from .._retry import Retry
from .._silence import AsyncWatchdog
from .._watch import Resume, WatchItem
from ..exceptions import CampaignServiceError, Unavailable, from_grpc_error

log = logging.getLogger("campaign_grpc_client")


def _ended() -> Unavailable:
    return Unavailable("the server ended the stream")


class AsyncWatch:
    """The asyncio watch: iterate it with async for; aclose() (or its async with) stops it."""

    def __init__(
        self, stub: Any, resume: Resume, retry: Retry, metadata: Metadata | None = None
    ) -> None:
        self._stub = stub
        self._resume = resume
        self._retry = retry
        self._metadata = metadata
        self._call: Any = None
        self._closed = AsyncEvent()
        self._items = self._run()

    @property
    def revision(self) -> int:
        """Every change up to this revision has been delivered: resume after it."""
        return self._resume.revision

    @property
    def timeline(self) -> str:
        """The log's timeline of revision: pass both to a later watch()."""
        return self._resume.timeline

    def __aiter__(self) -> AsyncWatch:
        return self

    async def __anext__(self) -> WatchItem:
        return await anext(self._items)

    async def aclose(self) -> None:
        self._closed.set()
        if self._call is not None:
            self._call.cancel()
        with contextlib.suppress(RuntimeError):  # iterating in another task: it ends by itself
            await self._items.aclose()

    async def __aenter__(self) -> AsyncWatch:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def _run(self) -> AsyncGenerator[WatchItem, None]:
        # One generator, not a loop around another: closing it cancels the call at once.
        watchdog = AsyncWatchdog()
        try:
            delays = None
            failures = 0
            while not self._closed.is_set():
                self._call = call = self._stub.WatchStatus(
                    self._resume.request(), metadata=self._metadata
                )
                if self._closed.is_set():  # close() ran between the check and the call
                    call.cancel()
                    return
                error: CampaignServiceError = _ended()
                try:
                    while True:
                        # Only the wait for the server counts, not the caller's time with an item.
                        bound = self._resume.silence()
                        message = await watchdog.read(call, bound)
                        if message is None:
                            break
                        delays, failures = None, 0
                        item = self._resume.accept(message)
                        if item is not None:
                            yield item
                except grpc.RpcError as exc:
                    if self._closed.is_set():
                        return
                    error = from_grpc_error(exc)
                except TimeoutError:
                    if self._closed.is_set():
                        return
                    assert bound is not None
                    error = self._resume.silent(bound)
                finally:
                    call.cancel()
                reset = self._resume.after(error)
                if reset is not None:
                    yield reset
                    continue
                failures += 1
                if self._retry.attempts is not None and failures >= self._retry.attempts:
                    raise error
                delays = delays or self._retry.delays()
                delay = next(delays)
                log.info("watch: %s; reconnecting in %.2f s", error, delay)
                if self._retry.on_error is not None:
                    self._retry.on_error(error)
                if await self._closed.wait(delay):
                    return
        finally:
            watchdog.stop()
