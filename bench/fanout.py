"""The WatchStatus fan-out benchmark: one server process, N subscribers in another.

    python bench/fanout.py                  # N = 1,000 then N = 10,000 (make bench)
    python bench/fanout.py --streams 10000  # one N
    python bench/fanout.py --view full      # one view (repeatable; both by default)

For each N and each view (WATCH_VIEW_STATUS, WATCH_VIEW_FULL), in one run against one server
(SQLite, a temporary file):
  - time to open all N streams (each until its SNAPSHOT_END),
  - server memory per idle stream: the server's RSS with the N streams open and idle minus
    its RSS before they were opened, over N; and the same of a bare grpc.aio server whose
    one method sends a message and waits (bench/bare_stream.py), measured in the same run,
    as the baseline: the ratio is what the service adds to grpc.aio's own cost,
  - delivery latency of status changes to all N: from the request being sent to each
    subscriber receiving the change, p50 and p99 over every (change, subscriber) pair,
  - unary p99 (GetCampaign, one call at a time) with the N streams open, against unary p99
    with none open, measured before the streams are opened.
Targets at N = 10,000: memory per idle stream within 1.1x of the bare stream's, delivery p99
< 1 s, unary p99 ratio <= 1.5.
FANOUT_SERVER_ARGS adds flags to the server's command line, e.g. "--metrics-listen
127.0.0.1:9466" to watch campaign_grpc_watch_streams while the streams open.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import grpc
from common import free_port, percentile, rss_bytes, server_process, stop, write_results
from grpc_health.v1 import health_pb2, health_pb2_grpc

from campaign_grpc_client.v1 import campaign_pb2 as pb
from campaign_grpc_client.v1 import campaign_pb2_grpc

HERE = Path(__file__).resolve().parent
# Streams share a few HTTP/2 connections, as a client fleet behind a proxy would.
STREAMS_PER_CONNECTION = 100
TARGETS = {"memory_vs_bare": 1.1, "delivery_p99_s": 1.0, "unary_p99_ratio": 1.5}
BARE = HERE / "bare_stream.py"
VIEWS = {"status": pb.WATCH_VIEW_STATUS, "full": pb.WATCH_VIEW_FULL}


@contextlib.contextmanager
def server(
    port: int, database: Path, heartbeat: float, streams: int
) -> Iterator[subprocess.Popen[bytes]]:
    args = ["--heartbeat-interval", str(heartbeat)]
    # Every stream watches the one customer: the caps must let them all in.
    args += ["--max-watch-streams", str(streams), "--max-watch-streams-per-customer", str(streams)]
    # And so must a connection's (serve checks that it can hold one customer's streams and calls).
    args += ["--max-streams-per-connection", str(streams + 100)]
    with server_process(
        port, database, [*args, *os.environ.get("FANOUT_SERVER_ARGS", "").split()]
    ) as proc:
        yield proc


async def wait_serving(target: str, within: float = 30.0) -> None:
    deadline = time.monotonic() + within
    async with grpc.aio.insecure_channel(target) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        while True:
            with contextlib.suppress(grpc.aio.AioRpcError):
                answer = await health.Check(health_pb2.HealthCheckRequest(), timeout=1)
                if answer.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            if time.monotonic() > deadline:
                raise RuntimeError("the server did not start")
            await asyncio.sleep(0.1)


async def unary_p99(
    stub: campaign_pb2_grpc.CampaignServiceStub, request: object, calls: int
) -> float:
    latencies = []
    for _ in range(calls):
        start = time.perf_counter()
        await stub.GetCampaign(request, timeout=10)
        latencies.append(time.perf_counter() - start)
    return percentile(latencies, 0.99)


class Subscribers:
    """N WatchStatus streams; records when each change arrives at each of them."""

    def __init__(
        self,
        stubs: list[campaign_pb2_grpc.CampaignServiceStub],
        customer: str,
        view: pb.WatchView.ValueType,
    ) -> None:
        self._stubs = stubs
        self._customer = customer
        self._view = view
        self.ready = 0
        self.all_ready = asyncio.Event()
        self.arrivals: dict[int, list[float]] = {}
        self.errors: list[str] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._everyone_has: dict[int, asyncio.Event] = {}
        self._n = 0
        self._closing = False

    def open(self, n: int) -> None:
        self._n = n
        request = pb.WatchStatusRequest(customer_id=self._customer, view=self._view)
        for i in range(n):
            stub = self._stubs[i % len(self._stubs)]
            self._tasks.append(asyncio.create_task(self._follow(stub, request)))

    async def _follow(
        self, stub: campaign_pb2_grpc.CampaignServiceStub, request: pb.WatchStatusRequest
    ) -> None:
        try:
            async for message in stub.WatchStatus(request):
                if message.kind == pb.WatchStatusResponse.KIND_CHANGE:
                    arrived = self.arrivals.setdefault(message.revision, [])
                    arrived.append(time.monotonic())
                    if len(arrived) == self._n:
                        self._complete(message.revision).set()
                elif message.kind == pb.WatchStatusResponse.KIND_SNAPSHOT_END:
                    self.ready += 1
                    if self.ready == self._n:
                        self.all_ready.set()
        except grpc.aio.AioRpcError as err:
            # A stream the server cancels is an error too (CANCELLED is how grpc core refuses
            # calls it cannot queue); only the ones close() cancels are not.
            if not self._closing:
                self.errors.append(f"{err.code()}: {err.details()}")

    def _complete(self, revision: int) -> asyncio.Event:
        return self._everyone_has.setdefault(revision, asyncio.Event())

    async def everyone_has(self, revision: int, within: float) -> list[float]:
        """When each subscriber received the change of revision."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._complete(revision).wait(), within)
        arrivals = self.arrivals.get(revision, [])
        if len(arrivals) < self._n:
            raise RuntimeError(f"change {revision} reached {len(arrivals)} of {self._n}")
        return arrivals

    async def close(self) -> None:
        self._closing = True
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


@contextlib.contextmanager
def bare_server(port: int) -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen([sys.executable, str(BARE), str(port)])
    try:
        yield proc
    finally:
        stop(proc)


async def measure_bare(n: int) -> float:
    """Server memory per idle stream of a bare grpc.aio server, in KiB."""
    port = free_port()
    with bare_server(port) as proc:
        return await _measure_bare(proc, f"127.0.0.1:{port}", n)


async def _measure_bare(proc: subprocess.Popen[bytes], target: str, n: int) -> float:
    connections = max(1, -(-n // STREAMS_PER_CONNECTION))
    channels = [
        grpc.aio.insecure_channel(target, options=[("grpc.use_local_subchannel_pool", 1)])
        for _ in range(connections)
    ]
    calls: list[grpc.aio.UnaryStreamCall[bytes, bytes]] = []
    try:
        for channel in channels:
            await asyncio.wait_for(channel.channel_ready(), 15)
        await asyncio.sleep(0.5)
        rss_before = rss_bytes(proc.pid)
        for i in range(n):
            watch = channels[i % connections].unary_stream("/bench.Bare/Watch")
            calls.append(watch(b""))
        await asyncio.gather(*(asyncio.wait_for(call.read(), 120) for call in calls))
        await asyncio.sleep(2)  # as for the service: let what opening allocated settle
        return (rss_bytes(proc.pid) - rss_before) / n / 1024
    finally:
        for call in calls:
            call.cancel()
        for channel in channels:
            await channel.close()


async def measure(
    n: int, view: str, changes: int, heartbeat: float, unary_calls: int
) -> dict[str, object]:
    with tempfile.TemporaryDirectory() as tmp:
        port = free_port()
        target = f"127.0.0.1:{port}"
        with server(port, Path(tmp) / "campaigns.db", heartbeat, n) as proc:
            await wait_serving(target)
            connections = max(1, -(-n // STREAMS_PER_CONNECTION))
            channels = [
                grpc.aio.insecure_channel(target, options=[("grpc.use_local_subchannel_pool", 1)])
                for _ in range(connections)
            ]
            try:
                return await _measure(proc.pid, channels, n, VIEWS[view], changes, unary_calls)
            finally:
                for channel in channels:
                    await channel.close()


async def _measure(
    pid: int,
    channels: list[grpc.aio.Channel],
    n: int,
    view: pb.WatchView.ValueType,
    changes: int,
    unary_calls: int,
) -> dict[str, object]:
    stubs = [campaign_pb2_grpc.CampaignServiceStub(c) for c in channels]
    stub = stubs[0]
    customer = str(uuid.uuid4())
    campaign = pb.Campaign(
        customer_id=customer,
        type=pb.Campaign.TYPE_CALL,
        name="fan-out",
        outplan_id=str(uuid.uuid4()),
        outdial_id=str(uuid.uuid4()),
        queue_id=str(uuid.uuid4()),
    )
    created = (await stub.CreateCampaign(pb.CreateCampaignRequest(campaign=campaign))).campaign
    get = pb.GetCampaignRequest(customer_id=customer, id=created.id)
    await unary_p99(stub, get, 200)  # warm-up
    unary_without = await unary_p99(stub, get, unary_calls)
    rss_before = rss_bytes(pid)

    subscribers = Subscribers(stubs, customer, view)
    start = time.monotonic()
    subscribers.open(n)
    while not subscribers.all_ready.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(subscribers.all_ready.wait(), 5)
        if subscribers.errors or time.monotonic() - start > 120:
            raise RuntimeError(
                f"{subscribers.ready} of {n} streams opened; errors: {subscribers.errors[:3]}"
            )
        print(f"  {subscribers.ready} of {n} streams open", file=sys.stderr, flush=True)
    open_s = time.monotonic() - start
    await asyncio.sleep(2)  # let what opening allocated settle
    rss_idle = rss_bytes(pid)
    unary_with = await unary_p99(stub, get, unary_calls)

    latencies: list[float] = []
    statuses = [pb.Campaign.STATUS_RUN, pb.Campaign.STATUS_STOP]
    for i in range(changes):
        sent = time.monotonic()
        await stub.UpdateCampaignStatus(
            pb.UpdateCampaignStatusRequest(
                customer_id=customer, id=created.id, status=statuses[i % 2], force=True
            ),
            timeout=10,
        )
        # Only this benchmark writes: the creation was revision 1, each change the next one.
        revision = 2 + i
        arrivals = await subscribers.everyone_has(revision, 30)
        latencies.extend(t - sent for t in arrivals)
        await asyncio.sleep(0.2)
    errors = list(subscribers.errors)
    await subscribers.close()
    return {
        "streams": n,
        "view": pb.WatchView.Name(view),
        "changes": changes,
        "open_all_s": round(open_s, 3),
        "memory_per_idle_stream_kib": round((rss_idle - rss_before) / n / 1024, 2),
        "server_rss_before_mib": round(rss_before / 2**20, 1),
        "server_rss_idle_mib": round(rss_idle / 2**20, 1),
        "delivery_p50_s": round(statistics.median(latencies), 4),
        "delivery_p99_s": round(percentile(latencies, 0.99), 4),
        "unary_p99_without_streams_ms": round(unary_without * 1000, 3),
        "unary_p99_with_streams_ms": round(unary_with * 1000, 3),
        "unary_p99_ratio": round(unary_with / unary_without, 2),
        "stream_errors": errors[:5],
    }


async def measure_each(
    ns: list[int], views: list[str], args: argparse.Namespace
) -> list[dict[str, object]]:
    # One event loop for every N: grpc.aio keeps its poller bound to the first loop.
    results: list[dict[str, object]] = []
    for n in ns:
        bare_kib = await measure_bare(n)
        for view in views:
            try:
                result = await measure(n, view, args.changes, args.heartbeat, args.unary_calls)
                ours = float(result["memory_per_idle_stream_kib"])  # type: ignore[arg-type]
                result["bare_grpc_aio_per_idle_stream_kib"] = round(bare_kib, 2)
                result["memory_vs_bare"] = round(ours / bare_kib, 3)
            except RuntimeError as exc:  # reported with the others: the next one still runs
                result = {"streams": n, "view": view, "error": str(exc)}
            results.append(result)
            print(json.dumps(result, indent=2), flush=True)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--streams", type=int, action="append", help="N (repeatable)")
    parser.add_argument("--changes", type=int, default=20, help="status changes per N")
    parser.add_argument("--unary-calls", type=int, default=1000)
    parser.add_argument(
        "--heartbeat", type=float, default=10.0, help="the server's heartbeat interval"
    )
    parser.add_argument("--view", choices=sorted(VIEWS), action="append", help="(repeatable)")
    args = parser.parse_args()
    # A run stopped with SIGTERM (timeout, CI) still stops its server: the finally blocks run.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    views = args.view or ["status", "full"]
    results = asyncio.run(measure_each(args.streams or [1000, 10_000], views, args))
    out = write_results("fanout", TARGETS, results=results)
    print(f"written to {out}")


if __name__ == "__main__":
    main()
