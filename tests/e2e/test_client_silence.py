"""The Python client on a connection that went dead without a word: a server paused with
SIGSTOP, as a half-open TCP connection or a NAT that forgot the flow would leave it."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import dataclasses
import queue
import signal
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import grpc
import pytest

from campaign_grpc.ops import server as server_module
from campaign_grpc.ops.server import grpc_options
from campaign_grpc.settings import Settings
from campaign_grpc_client import (
    AsyncCampaignClient,
    AsyncWatch,
    CampaignClient,
    CampaignServiceError,
    Retry,
    WatchItem,
    exceptions,
)
from campaign_grpc_client._channel import KEEPALIVE_OPTIONS
from campaign_grpc_client._retry import CHANNEL_OPTIONS
from campaign_grpc_client._watch import Resume
from campaign_grpc_client.v1 import campaign_pb2 as pb
from client_helpers import Reader, ServerThread, wait_serving
from e2e_helpers import Process, eventually, free_port
from e2e_helpers import wait_serving as wait_serving_async
from factories import runnable_campaign

C = pb.Campaign
W = pb.WatchStatusResponse
QUICK = Retry(initial=0.05, maximum=0.3)
HEARTBEAT = 0.3
# Three intervals, and room for a loaded machine to schedule the watch's timer.
NOTICED_WITHIN = 3 * HEARTBEAT + 1.0
# How long a write made while the server is paused may wait: one the paused server holds a
# lock against (a health probe caught half-way) can go on only once it runs again.
MEANWHILE = 3.0


def change(m: Any) -> tuple[str, int, int]:
    return (m.campaign_id, m.status, m.revision)


def serve_paused_later(settings: Settings, target: str, log: Path) -> Process:
    args = ["--listen", target, "--database-url", settings.database_url]
    return Process([*args, "--heartbeat-interval", str(HEARTBEAT)], log)


@contextlib.contextmanager
def paused(proc: Process) -> Iterator[float]:
    """The server stopped by SIGSTOP (its connections stay open, silent) until the block ends."""
    proc.proc.send_signal(signal.SIGSTOP)
    try:
        yield time.monotonic()
    finally:
        proc.proc.send_signal(signal.SIGCONT)


def test_the_blocking_watch_takes_a_paused_server_for_dead_and_resumes_once_it_runs(
    settings: Settings, tmp_path: Path, customer: str
) -> None:
    target = f"127.0.0.1:{free_port()}"
    errors: queue.Queue[tuple[float, CampaignServiceError]] = queue.Queue()
    retry = dataclasses.replace(QUICK, on_error=lambda e: errors.put((time.monotonic(), e)))
    proc = serve_paused_later(settings, target, tmp_path / "server.log")
    writer = ServerThread(settings)
    try:
        wait_serving(target, proc)
        writer.start()
        with (
            CampaignClient(target, watch_retry=retry) as client,
            CampaignClient(writer.target) as other,
            concurrent.futures.ThreadPoolExecutor(1) as pool,
        ):
            a = other.create_campaign(runnable_campaign(customer))
            reader = Reader(client.watch(customer))
            try:
                first = [reader.next(), reader.next()]
                assert [m.kind for m in first] == [W.KIND_SNAPSHOT, W.KIND_SNAPSHOT_END]
                other.update_campaign_status(customer, a.id, C.STATUS_RUN)
                seen = [reader.next()]

                with paused(proc) as since:
                    noticed, error = errors.get(timeout=10)
                    # Made while the watched server is paused, through another on the database.
                    meanwhile = pool.submit(
                        other.update_campaign_status, customer, a.id, C.STATUS_STOP
                    )
                    concurrent.futures.wait([meanwhile], MEANWHILE)
                meanwhile.result(15)
                seen.append(reader.next(15))
                b = other.create_campaign(runnable_campaign(customer))
                seen.append(reader.next())
            finally:
                assert reader.close()
    finally:
        writer.close()
        proc.kill()

    assert isinstance(error, exceptions.Unavailable)
    assert "no message from the server" in str(error)
    assert noticed - since < NOTICED_WITHIN, f"noticed after {noticed - since:.2f} s"
    assert [change(m) for m in seen] == [
        (a.id, C.STATUS_RUN, 2),
        (a.id, C.STATUS_STOPPING, 3),
        (b.id, C.STATUS_STOP, 4),
    ]
    assert all(m.kind == W.KIND_CHANGE for m in seen)


def test_the_time_the_caller_spends_with_an_item_is_not_silence(
    settings: Settings, customer: str
) -> None:
    errors: list[CampaignServiceError] = []
    retry = dataclasses.replace(QUICK, on_error=errors.append)
    server = ServerThread(settings)
    try:
        server.start(heartbeat_interval=HEARTBEAT)
        with CampaignClient(server.target, watch_retry=retry) as client:
            a = client.create_campaign(runnable_campaign(customer))
            with (
                client.watch(customer, heartbeats=True) as watch,
                concurrent.futures.ThreadPoolExecutor(1) as pool,
            ):
                items = iter(watch)

                def next_item() -> Any:
                    return pool.submit(next, items).result(10)

                assert next_item().kind == W.KIND_SNAPSHOT
                assert next_item().kind == W.KIND_SNAPSHOT_END  # the interval is known now
                assert next_item().kind == W.KIND_HEARTBEAT
                # A dialer busy with an item for longer than three intervals.
                time.sleep(4 * HEARTBEAT)
                client.update_campaign_status(customer, a.id, C.STATUS_RUN)
                while (item := next_item()).kind == W.KIND_HEARTBEAT:
                    pass
                assert change(item) == (a.id, C.STATUS_RUN, 2)
    finally:
        server.close()
    assert errors == []
    assert not [t for t in threading.enumerate() if t.name == "campaign-watch-silence"]


class AsyncReader:
    """Reads an asyncio watch in a task of its own, as a dialer's loop would, into a queue."""

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

    async def close(self) -> None:
        await self.watch.aclose()
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(self._task, 5)


async def test_the_asyncio_watch_counts_only_the_wait_for_the_server_too(
    start_server: Callable[..., Any], settings: Settings, customer: str
) -> None:
    errors: list[CampaignServiceError] = []
    retry = dataclasses.replace(QUICK, on_error=errors.append)
    server = await start_server(settings, heartbeat_interval=HEARTBEAT)
    async with AsyncCampaignClient(f"127.0.0.1:{server.port}", watch_retry=retry) as client:
        a = await client.create_campaign(runnable_campaign(customer))
        async with client.watch(customer, heartbeats=True) as watch:

            async def next_item() -> Any:
                return await asyncio.wait_for(anext(watch), 10)

            assert (await next_item()).kind == W.KIND_SNAPSHOT
            assert (await next_item()).kind == W.KIND_SNAPSHOT_END
            assert (await next_item()).kind == W.KIND_HEARTBEAT
            await asyncio.sleep(4 * HEARTBEAT)  # busy with an item past three intervals
            await client.update_campaign_status(customer, a.id, C.STATUS_RUN)
            while (item := await next_item()).kind == W.KIND_HEARTBEAT:
                pass
            assert change(item) == (a.id, C.STATUS_RUN, 2)
    assert errors == []


@contextlib.asynccontextmanager
async def reading(watch: AsyncWatch) -> AsyncIterator[AsyncReader]:
    reader = AsyncReader(watch)
    try:
        yield reader
    finally:
        await reader.close()


async def test_the_asyncio_watch_takes_a_paused_server_for_dead_and_resumes_once_it_runs(
    start_server: Callable[..., Any], settings: Settings, tmp_path: Path, customer: str
) -> None:
    target = f"127.0.0.1:{free_port()}"
    errors: list[tuple[float, CampaignServiceError]] = []
    retry = dataclasses.replace(QUICK, on_error=lambda e: errors.append((time.monotonic(), e)))
    proc = serve_paused_later(settings, target, tmp_path / "server.log")
    try:
        writer = await start_server(settings)
        await wait_serving_async(target, proc)
        async with (
            AsyncCampaignClient(target, watch_retry=retry) as client,
            AsyncCampaignClient(f"127.0.0.1:{writer.port}") as other,
        ):
            a = await other.create_campaign(runnable_campaign(customer))
            async with reading(client.watch(customer)) as reader:
                first = [await reader.next(), await reader.next()]
                assert [m.kind for m in first] == [W.KIND_SNAPSHOT, W.KIND_SNAPSHOT_END]
                await other.update_campaign_status(customer, a.id, C.STATUS_RUN)
                seen = [await reader.next()]

                with paused(proc) as since:

                    async def noticed() -> bool:
                        return bool(errors)

                    await eventually(noticed, within=10)
                    meanwhile = asyncio.create_task(
                        other.update_campaign_status(customer, a.id, C.STATUS_STOP)
                    )
                    await asyncio.wait([meanwhile], timeout=MEANWHILE)
                await asyncio.wait_for(meanwhile, 15)
                seen.append(await reader.next(15))
                b = await other.create_campaign(runnable_campaign(customer))
                seen.append(await reader.next())
    finally:
        proc.kill()

    at, error = errors[0]
    assert isinstance(error, exceptions.Unavailable)
    assert "no message from the server" in str(error)
    assert at - since < NOTICED_WITHIN, f"noticed after {at - since:.2f} s"
    assert [change(m) for m in seen] == [
        (a.id, C.STATUS_RUN, 2),
        (a.id, C.STATUS_STOPPING, 3),
        (b.id, C.STATUS_STOP, 4),
    ]
    assert all(m.kind == W.KIND_CHANGE for m in seen)


# -- the silence bound and the keepalive, without a server --------------------------------


def test_a_stream_is_dead_after_three_of_the_intervals_it_announced() -> None:
    resume = Resume("", "", 0, heartbeats=False)
    assert resume.silence() == 30.0  # the server's default interval, until one is announced
    end = W(kind=W.KIND_SNAPSHOT_END, revision=4)
    end.heartbeat_interval.FromTimedelta(timedelta(milliseconds=300))
    resume.accept(end)
    assert resume.silence() == pytest.approx(0.9)
    resume.accept(W(kind=W.KIND_CHANGE, revision=5))  # a change names no interval
    assert resume.silence() == pytest.approx(0.9)
    assert Resume("", "", 0, heartbeats=False, silent_intervals=5).silence() == 50.0
    assert Resume("", "", 0, heartbeats=False, silent_intervals=None).silence() is None
    with pytest.raises(ValueError, match="silent_intervals"):
        Resume("", "", 0, heartbeats=False, silent_intervals=0)


def test_the_keepalive_never_earns_a_strike_from_our_server() -> None:
    client = dict(KEEPALIVE_OPTIONS)
    server = dict(grpc_options(Settings()))
    # With a call open the server takes a PING every min_ping_interval: the client's come
    # twice as far apart, so that timer slack never makes one early.
    assert (
        client["grpc.keepalive_time_ms"]
        >= 2 * server["grpc.http2.min_ping_interval_without_data_ms"]
    )
    # With no call open grpc core allows one PING in 2 h unless the server permits them:
    # ours does not, so the client sends none then.
    assert server.get("grpc.keepalive_permit_without_calls", 0) == 0
    assert client["grpc.keepalive_permit_without_calls"] == 0
    # A watch sends nothing after its request: the PINGs go on regardless.
    assert client["grpc.http2.max_pings_without_data"] == 0
    # A dead connection is given up on well before the server's own keepalive would.
    assert client["grpc.keepalive_time_ms"] + client["grpc.keepalive_timeout_ms"] <= 30_000


# Durations of the ping policy and the keepalive, divided alike so that the check takes
# seconds: what matters is their ratio, and grpc core's rules for PINGs without a call.
# (A client of grpc core PINGs once a second at most: the keepalive cannot be cut further.)
SCALE = 20
SCALED = (
    "grpc.http2.min_ping_interval_without_data_ms",
    "grpc.keepalive_time_ms",
    "grpc.keepalive_timeout_ms",
)


def scaled(options: list[tuple[str, int]]) -> list[tuple[str, int]]:
    return [(k, v // SCALE if k in SCALED else v) for k, v in options]


async def test_the_keepalive_earns_no_goaway_over_a_watch_and_an_idle_connection(
    start_server: Callable[..., Any],
    sqlite_url: str,
    customer: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(server_module, "grpc_options", lambda s: scaled(grpc_options(s)))
    # Heartbeats further apart than the PINGs, so that the client PINGs during the watch.
    settings = Settings(listen="127.0.0.1:0", database_url=sqlite_url, shutdown_grace=2)
    server = await start_server(settings, heartbeat_interval=30 / SCALE)
    keepalive = scaled(KEEPALIVE_OPTIONS)
    interval = dict(keepalive)["grpc.keepalive_time_ms"] / 1000
    errors: list[CampaignServiceError] = []
    retry = dataclasses.replace(QUICK, on_error=errors.append)
    target = f"127.0.0.1:{server.port}"
    channel = grpc.aio.insecure_channel(target, options=[*CHANNEL_OPTIONS, *keepalive])
    async with channel, AsyncCampaignClient(channel=channel, watch_retry=retry) as client:
        a = await client.create_campaign(runnable_campaign(customer))
        async with client.watch(customer, heartbeats=True) as watch:

            async def next_item() -> Any:
                return await asyncio.wait_for(anext(watch), 5)

            deadline = time.monotonic() + 3 * interval
            while time.monotonic() < deadline:  # the snapshot, then heartbeats
                await next_item()
            await client.update_campaign_status(customer, a.id, C.STATUS_RUN)
            while (item := await next_item()).kind == W.KIND_HEARTBEAT:
                pass
            assert change(item) == (a.id, C.STATUS_RUN, 2)
        assert errors == []
        # No call open for six keepalive intervals: a GOAWAY would take the channel out of
        # READY (to IDLE). A client that PINGed without a call would get one by then.
        assert channel.get_state() == grpc.ChannelConnectivity.READY
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(6 * interval):
                await channel.wait_for_state_change(grpc.ChannelConnectivity.READY)
        assert channel.get_state() == grpc.ChannelConnectivity.READY


def test_both_clients_make_their_channels_with_the_keepalive(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    made: list[list[tuple[str, Any]]] = []

    def record(real: Callable[..., Any]) -> Callable[..., Any]:
        def make(target: str, *args: Any, options: Any = None, **kwargs: Any) -> Any:
            made.append(list(options))
            return real(target, *args, options=options, **kwargs)

        return make

    monkeypatch.setattr(grpc, "insecure_channel", record(grpc.insecure_channel))
    monkeypatch.setattr(grpc.aio, "insecure_channel", record(grpc.aio.insecure_channel))
    with CampaignClient("127.0.0.1:1"):
        pass

    async def make_async() -> None:
        async with AsyncCampaignClient("127.0.0.1:1"):
            pass

    asyncio.run(make_async())
    assert len(made) == 2
    for options in made:
        assert set(KEEPALIVE_OPTIONS) <= set(options)
