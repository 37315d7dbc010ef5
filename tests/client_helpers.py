"""Helpers for the blocking client's tests: a server on a thread of its own, a watch reader."""

from __future__ import annotations

import asyncio
import dataclasses
import queue
import threading
import time
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from campaign_grpc.ops.server import App
from campaign_grpc.settings import Settings
from campaign_grpc_client import Watch, WatchItem
from e2e_helpers import Process


class ServerThread:
    """An App on an event loop of its own thread, so that a blocking client can call it."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.app: App | None = None
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()

    def _run(self, coro: Any, within: float = 15.0) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(within)

    def start(self, **changes: Any) -> App:
        async def start() -> App:
            app = App(dataclasses.replace(self.settings, **changes))
            await app.start()
            return app

        self.app = self._run(start())
        return self.app

    @property
    def target(self) -> str:
        assert self.app is not None
        return f"127.0.0.1:{self.app.port}"

    def stop(self) -> None:
        if self.app is not None and not self.app.stopped:
            self._run(self.app.stop())

    def close(self) -> None:
        try:
            self.stop()
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(5)
            self._loop.close()


class Reader:
    """Reads a blocking watch on a thread into a queue, so that every read is bounded."""

    def __init__(self, watch: Watch) -> None:
        self.watch = watch
        self._items: queue.Queue[Any] = queue.Queue()
        self._thread = threading.Thread(target=self._pump, daemon=True)
        self._thread.start()

    def _pump(self) -> None:
        try:
            for item in self.watch:
                self._items.put(item)
            self._items.put(StopIteration())
        except Exception as exc:
            self._items.put(exc)

    def next(self, within: float = 10.0) -> WatchItem:
        """The next item; raises what the watch raised, StopIteration at its end."""
        item = self._items.get(timeout=within)
        if isinstance(item, BaseException):
            raise item
        return item  # type: ignore[no-any-return]

    def close(self) -> bool:
        """Closes the watch; whether the reading thread ended."""
        self.watch.close()
        self._thread.join(5)
        return not self._thread.is_alive()


def wait_serving(target: str, proc: Process, within: float = 15.0) -> None:
    """Waits until the server subprocess at target answers SERVING."""
    deadline = time.monotonic() + within
    with grpc.insecure_channel(target) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        while True:
            if proc.proc.poll() is not None:
                raise AssertionError(f"the server exited early:\n{proc.log}")
            try:
                answer = health.Check(health_pb2.HealthCheckRequest(), timeout=0.5)
                if answer.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"not SERVING within {within} s\n{proc.log}")
            time.sleep(0.05)
