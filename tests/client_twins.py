"""Twins for the client tests written once for asyncio (see tools/unasync.py): each AsyncX
here has a blocking X with the same methods, which the generated blocking test uses."""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
from types import TracebackType
from typing import Any

from campaign_grpc.ops.server import App
from campaign_grpc.settings import Settings
from campaign_grpc_client import AsyncWatch, Watch
from client_helpers import ServerThread


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
