"""Replicas of the server on one PostgreSQL database, each on a path of its own (a TCP proxy
that delays, blackholes, cuts or drops a COMMIT's answer), and the clients an operator's
failure drill runs against them: writers that fail over, watchers that resume on the next
replica, and racers of STOP and ConfirmDrained.

Used by the fault-injection tests and by bench/faults.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import grpc

from campaign_grpc_client.v1 import campaign_pb2 as pb
from campaign_grpc_client.v1 import campaign_pb2_grpc
from e2e_helpers import Process, free_port, wait_serving
from factories import runnable_campaign
from tcp_proxy import TcpProxy

C = pb.Campaign
W = pb.WatchStatusResponse
Code = grpc.StatusCode
Stub = campaign_pb2_grpc.CampaignServiceStub

# What a call may fail with while a replica is in trouble: retried on another replica.
RETRIED = (Code.UNAVAILABLE, Code.DEADLINE_EXCEEDED)


def through(url: str, proxy: TcpProxy) -> str:
    parts = urlsplit(url)
    user = f"{parts.username}@" if parts.username else ""
    return parts._replace(netloc=f"{user}127.0.0.1:{proxy.port}").geturl()


@dataclass
class Member:
    index: int
    proxy: TcpProxy
    process: Process
    target: str
    channel: grpc.aio.Channel
    stub: Stub


@dataclass
class Fleet:
    members: list[Member]
    heartbeat_interval: float
    stop_grace: float

    def stub(self, index: int) -> Stub:
        return self.members[index % len(self.members)].stub


# How the replicas of a drill run: their background loops often, a stop grace longer than the
# drill (the writers of the ledger leave campaigns stopping for a while; see ledger.CYCLE).
HEARTBEAT_S = 0.5
STOP_GRACE_S = 60.0


@contextlib.asynccontextmanager
async def fleet(
    postgres_url: str,
    tmp_path: Path,
    *,
    size: int = 3,
    env: dict[int, dict[str, str]] | None = None,
    args: tuple[str, ...] = (),
) -> AsyncIterator[Fleet]:
    """size replicas, each through a proxy of its own; env adds to one replica's
    environment (a shifted clock)."""
    parts = urlsplit(postgres_url)
    members: list[Member] = []
    proxies: list[TcpProxy] = []
    try:
        for i in range(size):
            proxy = TcpProxy(parts.hostname or "127.0.0.1", parts.port or 5432)
            await proxy.start()
            proxies.append(proxy)
            target = f"127.0.0.1:{free_port()}"
            command = ["--listen", target, "--database-url", through(postgres_url, proxy)]
            command += ["--health-interval", "0.2", "--event-poll-interval", "0.2"]
            command += ["--heartbeat-interval", str(HEARTBEAT_S), "--stop-grace", str(STOP_GRACE_S)]
            command += ["--shutdown-grace", "2", "--database-stall-timeout", "2", *args]
            process = Process(command, tmp_path / f"replica-{i}.log", (env or {}).get(i))
            channel = grpc.aio.insecure_channel(target)
            members.append(Member(i, proxy, process, target, channel, Stub(channel)))
        for m in members:
            await wait_serving(m.target, m.process, within=30)
        yield Fleet(members, HEARTBEAT_S, STOP_GRACE_S)
    finally:
        for m in members:
            await m.channel.close()
            m.process.terminate()
        for m in members:
            with contextlib.suppress(AssertionError):
                await m.process.exit_code(within=10)
            m.process.kill()
        for p in proxies:
            await p.close()


async def create_campaigns(f: Fleet, customer_id: str, count: int) -> list[pb.Campaign]:
    """count runnable campaigns of the customer, made through the first replica."""
    made = []
    for _ in range(count):
        request = pb.CreateCampaignRequest(campaign=runnable_campaign(customer_id))
        made.append((await f.stub(0).CreateCampaign(request, timeout=10)).campaign)
    return made


class FailingOver:
    """Calls a replica, and the next one when a call fails as a replica in trouble does.
    The failure still reaches the caller, which decides whether the call is in doubt."""

    def __init__(self, f: Fleet, first: int) -> None:
        self._fleet = f
        self.current = first

    def __getattr__(self, method: str) -> Callable[..., Awaitable[Any]]:
        async def call(request: Any, **kwargs: Any) -> Any:
            stub = self._fleet.stub(self.current)
            try:
                return await getattr(stub, method)(request, **kwargs)
            except grpc.aio.AioRpcError as err:
                if err.code() in RETRIED:
                    self.current += 1
                raise

        return call


@dataclass
class Received:
    """What one watcher received, in order: (kind, revision, campaign_id, status)."""

    messages: list[tuple[int, int, str, int]] = field(default_factory=list)
    # How each stream it opened ended (the code, EOF or SILENT), when (time.monotonic()),
    # and on which replica.
    ends: list[tuple[str, float, int]] = field(default_factory=list)
    # The revision each resume asked for, and on which replica.
    resumes: list[tuple[int, int]] = field(default_factory=list)
    start: int = 0


class Watcher:
    """A subscriber as the documentation tells it to be: one stream of every customer at a time;
    when the stream ends, or stays silent for three heartbeat intervals, it resumes after
    the last revision it received on the next replica."""

    def __init__(self, f: Fleet, first: int) -> None:
        self._fleet = f
        self.current = first
        self.received = Received()
        self._snapshot_read = asyncio.Event()
        self._task = asyncio.create_task(self._run())

    async def started(self) -> None:
        await asyncio.wait_for(self._snapshot_read.wait(), 20)

    async def _run(self) -> None:
        cursor, timeline = 0, ""
        silence = 3 * self._fleet.heartbeat_interval
        while True:
            request = pb.WatchStatusRequest(after_revision=cursor, timeline=timeline)
            if cursor:
                self.received.resumes.append((cursor, self.current))
            on = self.current % len(self._fleet.members)
            call = self._fleet.stub(on).WatchStatus(request)
            end = ""
            try:
                while True:
                    m = await asyncio.wait_for(call.read(), silence)
                    if m is grpc.aio.EOF:
                        end = "EOF"
                        break
                    self.received.messages.append((m.kind, m.revision, m.campaign_id, m.status))
                    if m.kind == W.KIND_SNAPSHOT_END:
                        self.received.start = self.received.start or m.revision
                        cursor = max(cursor, m.revision)
                        self._snapshot_read.set()
                    elif m.kind == W.KIND_CHANGE:
                        cursor = m.revision
                    timeline = m.timeline or timeline
            except TimeoutError:
                end = "SILENT"
            except grpc.aio.AioRpcError as err:
                end = err.code().name
            finally:
                call.cancel()
            self.received.ends.append((end, time.monotonic(), on))
            self.current += 1
            await asyncio.sleep(0.05)

    async def close(self) -> None:
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)


@dataclass
class Racing:
    """Racers' record: every answered STOP and ConfirmDrained."""

    stops: int = 0
    confirmations: int = 0
    refused: dict[str, int] = field(default_factory=dict)


async def _status(
    via: FailingOver, c: pb.Campaign, requested: int, record: Racing
) -> pb.Campaign | None:
    try:
        r = await via.UpdateCampaignStatus(
            pb.UpdateCampaignStatusRequest(customer_id=c.customer_id, id=c.id, status=requested),
            timeout=5,
        )
    except grpc.aio.AioRpcError as err:
        record.refused[err.code().name] = record.refused.get(err.code().name, 0) + 1
        return None
    return r.campaign  # type: ignore[no-any-return]


async def _confirm(via: FailingOver, c: pb.Campaign, stop_revision: int, record: Racing) -> None:
    try:
        await via.ConfirmDrained(
            pb.ConfirmDrainedRequest(
                customer_id=c.customer_id, id=c.id, stop_revision=stop_revision
            ),
            timeout=5,
        )
    except grpc.aio.AioRpcError as err:
        record.refused[err.code().name] = record.refused.get(err.code().name, 0) + 1
        return
    record.confirmations += 1


async def race_stops(
    f: Fleet, stop: asyncio.Event, campaigns: list[pb.Campaign], record: Racing, seed: int
) -> None:
    """Runs each campaign, then STOPs it through two replicas at once, and confirms the drain
    through two at once after a while: over and over."""
    rng = random.Random(seed)
    for n in itertools.count():
        if stop.is_set():
            return
        c = campaigns[n % len(campaigns)]
        a, b = FailingOver(f, n), FailingOver(f, n + 1)
        await _status(a, c, C.STATUS_RUN, record)
        answers = await asyncio.gather(
            _status(a, c, C.STATUS_STOP, record), _status(b, c, C.STATUS_STOP, record)
        )
        stopped = [s for s in answers if s is not None]
        record.stops += len(stopped)
        revisions = {s.stop_revision for s in stopped if s.status == C.STATUS_STOPPING}
        await asyncio.sleep(rng.choice((0.05, 0.3, 1.0)))
        for revision in revisions:
            await asyncio.gather(_confirm(a, c, revision, record), _confirm(b, c, revision, record))


@dataclass
class Throughput:
    """Acknowledged writes of one group of writers, with their latencies."""

    latencies: list[float] = field(default_factory=list)
    failures: int = 0
    # When each failure happened (time.monotonic()).
    failed_at: list[float] = field(default_factory=list)

    def p(self, q: float) -> float:
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else 0.0


async def timed(record: Throughput, call: Awaitable[Any]) -> Any:
    started = time.monotonic()
    try:
        result = await call
    except grpc.aio.AioRpcError:
        record.failures += 1
        record.failed_at.append(time.monotonic())
        raise
    record.latencies.append(time.monotonic() - started)
    return result
