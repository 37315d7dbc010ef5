"""Drive the grpc.aio CampaignServicer through grpcio-testing, which only knows sync servicers.

grpc_testing calls `servicer.Method(request, context)` in a thread of its own. Harness runs an
asyncio loop in a background thread, builds the domain and the watch hub on it (a real SQLite
file), and hands grpc_testing a servicer whose methods run the coroutines, or pull the async
generators item by item, on that loop.

grpc_testing's context has no abort_with_status (NotImplementedError), and its abort() drops
the trailing metadata. AioContext gives the servicer what grpc.aio's context does instead: the
code, details and trailing metadata are kept for the call's termination, then AbortError is
raised. The wrapped method then ends normally, and grpc_testing reports the status that was
set, with its trailers; an exception escaping the servicer is still UNKNOWN, as on a server.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Callable, Coroutine, Iterator, Sequence
from typing import Any, NoReturn, TypeVar

import grpc
import grpc_testing
from google.protobuf import message

from campaign_grpc.api import convert
from campaign_grpc.api.servicer import CampaignServicer
from campaign_grpc.domain.campaigns import Campaigns, Clock
from campaign_grpc.storage.connect import open_database
from campaign_grpc.storage.read_lanes import Readers
from campaign_grpc.storage.store import Store
from campaign_grpc.storage.writer import Writer
from campaign_grpc.watch.hub import Hub
from campaign_grpc.watch.items import Item
from campaign_grpc_client.v1 import campaign_pb2

T = TypeVar("T")

SERVICE = campaign_pb2.DESCRIPTOR.services_by_name["CampaignService"]

# What one finished unary call looks like: response, trailing metadata, code, details.
Termination = tuple[Any, Sequence[tuple[str, Any]], grpc.StatusCode, str]


class LoopThread:
    """An asyncio event loop running in a thread of its own."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name="aio-testing-loop", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_forever()
        finally:
            self.loop.run_until_complete(self.loop.shutdown_asyncgens())
            self.loop.run_until_complete(self.loop.shutdown_default_executor())
            self.loop.close()

    def submit(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def run(self, coro: Coroutine[Any, Any, T], timeout: float | None = 30) -> T:
        return self.submit(coro).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join()


class AioContext:
    """A grpc.aio servicer context on top of grpc_testing's sync one."""

    def __init__(self, context: grpc.ServicerContext) -> None:
        self._context = context
        self.aborted = False

    def __getattr__(self, name: str) -> Any:
        return getattr(self._context, name)

    def auth_context(self) -> dict[str, list[bytes]]:
        # A plaintext connection's: grpc_testing has none at all.
        return {}

    async def abort(
        self,
        code: grpc.StatusCode,
        details: str = "",
        trailing_metadata: Sequence[tuple[str, Any]] = (),
    ) -> NoReturn:
        # As grpc.aio does: the status supersedes what was set, then AbortError ends the call.
        if self.aborted:
            raise grpc.aio.UsageError("Abort already called!")
        self.aborted = True
        if trailing_metadata:
            self._context.set_trailing_metadata(trailing_metadata)
        self._context.set_code(code)
        self._context.set_details(details)
        raise grpc.aio.AbortError("Locally aborted.")

    async def abort_with_status(self, status: grpc.Status) -> NoReturn:
        await self.abort(status.code, status.details, status.trailing_metadata)


class _Stream:
    """One server-streaming call: pulls the async generator one item per step, on the loop."""

    def __init__(self, loop: LoopThread, agen: Any) -> None:
        self._loop = loop
        self._agen = agen
        self._task: asyncio.Task[Any] | None = None
        self._cancelled = False
        self.done = threading.Event()

    async def _step(self) -> Any:
        self._task = asyncio.current_task()
        if self._cancelled:
            raise asyncio.CancelledError
        return await self._agen.__anext__()

    def cancel(self) -> None:
        """From any thread: cancels the step in progress, or the next one."""
        self._loop.loop.call_soon_threadsafe(self._cancel)

    def _cancel(self) -> None:
        self._cancelled = True
        if self._task is not None:
            self._task.cancel()

    def responses(self) -> Iterator[Any]:
        try:
            while True:
                # The step is cancelled on the loop, so the generator has finished unwinding
                # (its finally blocks ran) by the time result() raises CancelledError.
                try:
                    yield self._loop.submit(self._step()).result()
                except (StopAsyncIteration, grpc.aio.AbortError, concurrent.futures.CancelledError):
                    return
        finally:
            try:
                self._loop.run(self._agen.aclose())
            finally:
                self.done.set()


class SyncServicer:
    """The methods grpc_testing calls, each running the aio servicer's method on the loop."""

    def __init__(self, servicer: CampaignServicer, loop: LoopThread) -> None:
        self._servicer = servicer
        self._loop = loop
        self.streams: list[_Stream] = []
        self._lock = threading.Lock()
        for method in SERVICE.methods:
            fn = getattr(servicer, method.name)
            wrapper = self._streaming(fn) if method.server_streaming else self._unary(fn)
            setattr(self, method.name, wrapper)

    def _unary(self, fn: Callable[..., Any]) -> Callable[[Any, grpc.ServicerContext], Any]:
        def call(request: Any, context: grpc.ServicerContext) -> Any:
            try:
                return _as_sent(self._loop.run(fn(request, AioContext(context)), timeout=None))
            except grpc.aio.AbortError:
                return None  # the status is set on the context

        return call

    def _streaming(
        self, fn: Callable[..., Any]
    ) -> Callable[[Any, grpc.ServicerContext], Iterator[Any]]:
        def call(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
            stream = _Stream(self._loop, fn(request, AioContext(context)))
            with self._lock:
                self.streams.append(stream)
            # grpc_testing calls this when the client cancels (or the call ends otherwise).
            context.add_callback(stream.cancel)
            if not context.is_active():
                stream.cancel()
            return (_as_sent(response) for response in stream.responses())

        return call

    def close_streams(self, timeout: float) -> None:
        with self._lock:
            streams = list(self.streams)
        for stream in streams:
            stream.cancel()
        for stream in streams:
            if not stream.done.wait(timeout):
                raise RuntimeError("a stream did not end after it was cancelled")


def _as_sent(response: Any) -> Any:
    """A WatchStatus item or a ListCampaigns page as the client receives it: encoded by the
    serializer that the real server registers for it (grpc_testing does not serialize),
    then decoded."""
    if isinstance(response, Item):
        return campaign_pb2.WatchStatusResponse.FromString(convert.item_to_wire(response))
    if isinstance(response, convert.EncodedPage):
        return campaign_pb2.ListCampaignsResponse.FromString(convert.page_to_wire(response))
    return response


class Harness:
    """The domain and watch hub on a loop thread, behind a grpc_testing server."""

    def __init__(
        self,
        database_url: str,
        *,
        clock: Clock,
        heartbeat_interval: float = 3600.0,
        stop_grace_s: float = 60.0,
    ) -> None:
        self.loop = LoopThread()
        try:
            self.campaigns, self.hub = self.loop.run(
                self._open(database_url, clock, heartbeat_interval, stop_grace_s)
            )
        except BaseException:
            self.loop.close()
            raise
        self.servicer = CampaignServicer(self.campaigns, self.hub)
        self.adapter = SyncServicer(self.servicer, self.loop)
        self.server = grpc_testing.server_from_dictionary(
            {SERVICE: self.adapter}, grpc_testing.strict_real_time()
        )

    async def _open(
        self, database_url: str, clock: Clock, heartbeat_interval: float, stop_grace_s: float
    ) -> tuple[Campaigns, Hub]:
        self._db = open_database(database_url)
        store = Store(self._db)
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, store.migrate)
        self._writer = Writer(self._db, journal=store)
        self._readers = Readers(self._db, 2)
        campaigns = Campaigns(
            store, self._writer, self._readers, stop_grace_s=stop_grace_s, clock=clock
        )
        hub = Hub(campaigns, heartbeat_interval=heartbeat_interval, poll_interval=0.1)
        self._writer.on_commit = hub.publish
        await hub.start()
        return campaigns, hub

    def unary(self, method: str, request: message.Message) -> Termination:
        rpc = self.server.invoke_unary_unary(SERVICE.methods_by_name[method], (), request, None)
        response, trailing_metadata, code, details = rpc.termination()
        return response, trailing_metadata, code, details

    def stream(self, method: str, request: message.Message) -> Any:
        """A grpc_testing UnaryStreamServerRpc: take_response(), cancel(), termination()."""
        return self.server.invoke_unary_stream(SERVICE.methods_by_name[method], (), request, None)

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return self.loop.run(coro)

    def subscribers(self, settle: int | None = None, timeout: float = 5) -> int:
        """How many watch subscriptions the hub holds, read on its loop.

        With settle, first waits (up to timeout) for the count to reach it: a stream cancelled
        between two items is closed at its yield, and the generators it was iterating are
        finalized by the loop a few iterations later, as on a grpc.aio server.
        """

        async def count() -> int:
            loop = asyncio.get_running_loop()
            deadline = loop.time() + timeout
            while settle is not None and self.hub.subscriber_count != settle:
                if loop.time() >= deadline:
                    break
                await asyncio.sleep(0.005)
            return self.hub.subscriber_count

        return self.run(count())

    def wait_streams_done(self, timeout: float = 10) -> None:
        """Waits until every stream started so far has ended (after cancel or its last item)."""
        for stream in list(self.adapter.streams):
            if not stream.done.wait(timeout):
                raise AssertionError("a stream did not end")

    def close(self) -> None:
        try:
            self.adapter.close_streams(timeout=10)
            self.loop.run(self._close())
        finally:
            self.loop.close()

    async def _close(self) -> None:
        await self.hub.close()
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, self._writer.close)
        await loop.run_in_executor(None, self._readers.close)
        self._db.close()
