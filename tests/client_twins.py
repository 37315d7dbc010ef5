"""Twins for the client tests written once for asyncio (see tools/unasync.py): each AsyncX
here has a blocking X with the same methods, which the generated blocking test uses."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import dataclasses
import queue
import time
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Any

from campaign_grpc.ops.server import App
from campaign_grpc.settings import Settings
from campaign_grpc_client import AsyncWatch, CampaignServiceError, Watch, WatchItem
from client_helpers import Reader as Reader
from client_helpers import ServerThread
from client_helpers import wait_serving as wait_serving
from e2e_helpers import wait_serving as async_wait_serving

__all__ = ["Reader", "async_wait_serving", "wait_serving"]


class AsyncServing:
    """A server on the test's event loop, for an asyncio client: its target, in the block."""

    def __init__(self, settings: Settings, **changes: Any) -> None:
        self._app = App(dataclasses.replace(settings, **changes))

    async def __aenter__(self) -> str:
        await self._app.start()
        return f"127.0.0.1:{self._app.port}"

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if not self._app.stopped:
            await self._app.stop()


class Serving:
    """A server on a thread and loop of its own, for a blocking client: its target."""

    def __init__(self, settings: Settings, **changes: Any) -> None:
        self._server = ServerThread(settings)
        self._changes = changes

    def __enter__(self) -> str:
        try:
            self._server.start(**self._changes)
        except BaseException:
            self._server.close()
            raise
        return self._server.target

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._server.close()


class AsyncPuller:
    """Takes a watch's next item only when asked, within a bound, as a busy caller would."""

    def __init__(self, watch: AsyncWatch) -> None:
        self._watch = watch

    async def next(self, within: float = 10.0) -> Any:
        return await asyncio.wait_for(anext(self._watch), within)

    async def __aenter__(self) -> AsyncPuller:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        pass


class Puller:
    """AsyncPuller's blocking twin: each next() on a thread, so that it is bounded too."""

    def __init__(self, watch: Watch) -> None:
        self._items = iter(watch)
        self._pool = concurrent.futures.ThreadPoolExecutor(1)

    def next(self, within: float = 10.0) -> Any:
        return self._pool.submit(next, self._items).result(within)

    def __enter__(self) -> Puller:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._pool.shutdown()


class AsyncReader:
    """Reads an asyncio watch in a task of its own, as a dialer's loop would, into a queue.

    Reader (client_helpers) is its blocking twin, on a thread.
    """

    def __init__(self, watch: AsyncWatch) -> None:
        self.watch = watch
        self._items: asyncio.Queue[WatchItem | BaseException] = asyncio.Queue()
        self._task = asyncio.create_task(self._pump())

    async def _pump(self) -> None:
        try:
            async for item in self.watch:
                await self._items.put(item)
        except Exception as exc:
            await self._items.put(exc)

    async def next(self, within: float = 10.0) -> Any:
        item = await asyncio.wait_for(self._items.get(), within)
        if isinstance(item, BaseException):
            raise item
        return item

    async def close(self) -> bool:
        """Closes the watch; whether the reading task ended."""
        await self.watch.aclose()
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError, TimeoutError):
            await asyncio.wait_for(self._task, 5)
        return self._task.done()


class _Errors:
    """What a client's retry reports (give it report as on_error), each with when it came.

    asyncio's queue and the blocking one have put_nowait, empty and get_nowait alike.
    """

    _queue: Any

    def report(self, error: CampaignServiceError) -> None:
        self._queue.put_nowait((time.monotonic(), error))

    def rest(self) -> list[CampaignServiceError]:
        """The errors not taken yet by next()."""
        errors = []
        while not self._queue.empty():
            errors.append(self._queue.get_nowait()[1])
        return errors


class AsyncErrors(_Errors):
    """The errors an asyncio client's retry reports, from the event loop."""

    def __init__(self) -> None:
        self._queue: asyncio.Queue[tuple[float, CampaignServiceError]] = asyncio.Queue()

    async def next(self, within: float) -> tuple[float, CampaignServiceError]:
        return await asyncio.wait_for(self._queue.get(), within)


class Errors(_Errors):
    """AsyncErrors' blocking twin: the retry reports from the thread that makes the call."""

    def __init__(self) -> None:
        self._queue: queue.Queue[tuple[float, CampaignServiceError]] = queue.Queue()

    def next(self, within: float) -> tuple[float, CampaignServiceError]:
        return self._queue.get(timeout=within)


class AsyncBeside:
    """One call made beside the test's own steps: in a task of its own."""

    def __init__(self, function: Callable[..., Awaitable[Any]], *args: Any) -> None:
        self._task = asyncio.create_task(function(*args))

    async def wait(self, within: float) -> None:
        """Waits for the call to end, within bound seconds, and leaves it running after."""
        await asyncio.wait([self._task], timeout=within)

    async def result(self, within: float) -> Any:
        return await asyncio.wait_for(self._task, within)


class Beside:
    """AsyncBeside's blocking twin: the call on a thread of its own."""

    def __init__(self, function: Callable[..., Any], *args: Any) -> None:
        pool = concurrent.futures.ThreadPoolExecutor(1)
        self._future = pool.submit(function, *args)
        pool.shutdown(wait=False)  # its thread ends with the call

    def wait(self, within: float) -> None:
        """Waits for the call to end, within bound seconds, and leaves it running after."""
        concurrent.futures.wait([self._future], within)

    def result(self, within: float) -> Any:
        return self._future.result(within)
