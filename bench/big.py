"""The big-campaign benchmark: the README's largest sizing, read every way at once.

    python bench/big.py                   # quick: 20 s of load (make bench)
    BENCH_MODE=full python bench/big.py   # 60 s of load
    python bench/big.py --campaigns 100   # a smaller data set

One customer holds N campaigns (500) of 1,000 actions with options of about 170 bytes of JSON
each, some 200 KB each on the wire. On a freshly started server (SQLite, a temporary file),
from other processes:
  - idle: another customer's GetCampaign, one call at a time, and the server's RSS;
  - load: 8 concurrent WatchStatus snapshots of the big customer (each opened, read to its
    SNAPSHOT_END, closed, again), 4 concurrent walks of its ListCampaigns in default pages on
    channels with gRPC's default receive limit (4 MiB), while the other customer's
    GetCampaign goes on and health is asked every 100 ms;
  - after: the server's RSS 20 s after the load ended.
Targets: the other customer's GetCampaign p99 <= 5x its idle p99 and no failure; health
SERVING throughout; RSS <= 1 GiB at peak and within 1.25x of idle 20 s after; every page
received by a default client.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import multiprocessing
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from multiprocessing.synchronize import Event as EventType
from pathlib import Path
from typing import Any

import grpc
from common import free_port, percentile, rss_bytes, server_process, write_results
from grpc_health.v1 import health_pb2, health_pb2_grpc

from campaign_grpc_client.v1 import campaign_pb2 as pb
from campaign_grpc_client.v1 import campaign_pb2_grpc

HERE = Path(__file__).resolve().parent
SERVICE = "campaign.v1.CampaignService"
WATCHERS = 8
LISTERS = 4
SMALL_CAMPAIGNS = 20
TARGETS = {
    "get_p99_ratio": 5.0,
    "failures": 0,
    "not_serving_samples": 0,
    "rss_peak_mib": 1024.0,
    "rss_after_ratio": 1.25,
    "pages_refused": 0,
}


@contextlib.contextmanager
def server(port: int, database: Path, extra: list[str]) -> Iterator[subprocess.Popen[bytes]]:
    with server_process(port, database, extra) as proc:
        wait_serving(f"127.0.0.1:{port}", proc)
        yield proc


def wait_serving(target: str, proc: subprocess.Popen[bytes], within: float = 60.0) -> None:
    deadline = time.monotonic() + within
    with grpc.insecure_channel(target) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError("the server exited")
            with contextlib.suppress(grpc.RpcError):
                if health.Check(health_pb2.HealthCheckRequest(), timeout=1).status == 1:
                    return
            time.sleep(0.1)
    raise RuntimeError("the server did not start")


def big_campaign(customer: str) -> pb.Campaign:
    m = pb.Campaign(
        customer_id=customer,
        type=pb.Campaign.TYPE_CALL,
        name="big",
        outplan_id=str(uuid.uuid4()),
        queue_id=str(uuid.uuid4()),
    )
    for n in range(1000):
        action = m.actions.add(type="talk")
        action.option.update(
            {
                "text": f"Hello, this is a reminder of your appointment number {n:04d} for "
                "tomorrow at ten sharp.",
                "language": "en-US",
                "gender": "female",
                "digits_terminator": "#",
                "timeout": 5000,
            }
        )
    return m


async def load_data(target: str, big: str, small: str, campaigns: int) -> list[str]:
    """Creates the big customer's campaigns and the other customer's; the latter's ids."""
    async with grpc.aio.insecure_channel(target) as channel:
        stub = campaign_pb2_grpc.CampaignServiceStub(channel)
        template = big_campaign(big)
        queue: asyncio.Queue[int] = asyncio.Queue()
        for n in range(campaigns):
            queue.put_nowait(n)

        async def creator() -> None:
            while not queue.empty():
                queue.get_nowait()
                await stub.CreateCampaign(pb.CreateCampaignRequest(campaign=template), timeout=60)

        await asyncio.gather(*(creator() for _ in range(4)))
        ids = []
        for _ in range(SMALL_CAMPAIGNS):
            m = pb.Campaign(customer_id=small, type=pb.Campaign.TYPE_CALL, name="small")
            m.actions.add(type="answer")
            created = await stub.CreateCampaign(pb.CreateCampaignRequest(campaign=m), timeout=10)
            ids.append(created.campaign.id)
        return ids


# -- the other customer, in a process of its own --------------------------------------------


def prober(target: str, customer: str, ids: list[str], stop: EventType, out: Any) -> None:
    """GetCampaign of the other customer, one call at a time, until stop; sends latencies
    and failures."""
    latencies: list[float] = []
    failures: Counter[str] = Counter()
    with grpc.insecure_channel(target) as channel:
        stub = campaign_pb2_grpc.CampaignServiceStub(channel)
        n = 0
        while not stop.is_set():
            request = pb.GetCampaignRequest(customer_id=customer, id=ids[n % len(ids)])
            n += 1
            start = time.perf_counter()
            try:
                stub.GetCampaign(request, timeout=10)
                latencies.append(time.perf_counter() - start)
            except grpc.RpcError as err:
                failures[err.code().name] += 1  # type: ignore[attr-defined]
            time.sleep(0.002)
    out.send((latencies, dict(failures)))


# -- the big customer's readers, in a process of their own ----------------------------------


def _varint(data: bytes, at: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = data[at]
        at += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, at
        shift += 7


def next_page_token(page: bytes) -> str:
    """ListCampaignsResponse.next_page_token read off the wire: the campaigns (field 1) are
    skipped over by their lengths, not decoded."""
    at, token = 0, ""
    while at < len(page):
        key, at = _varint(page, at)
        if key & 7 != 2:
            raise ValueError(f"unexpected wire type in a page: {key}")
        length, at = _varint(page, at)
        if key >> 3 == pb.ListCampaignsResponse.NEXT_PAGE_TOKEN_FIELD_NUMBER:
            token = page[at : at + length].decode()
        at += length
    return token


def readers(
    target: str, customer: str, watchers: int, listers: int, stop: EventType, out: Any
) -> None:
    out.send(asyncio.run(_readers(target, customer, watchers, listers, stop)))


async def _readers(
    target: str, customer: str, watchers: int, listers: int, stop: EventType
) -> dict[str, Any]:
    snapshots: list[float] = []
    pages: list[int] = []
    failures: Counter[str] = Counter()
    walks = 0

    async def watcher(stub: campaign_pb2_grpc.CampaignServiceStub) -> None:
        while not stop.is_set():
            start = time.perf_counter()
            call = stub.WatchStatus(pb.WatchStatusRequest(customer_id=customer))
            try:
                async for message in call:
                    if message.kind == pb.WatchStatusResponse.KIND_SNAPSHOT_END:
                        snapshots.append(time.perf_counter() - start)
                        break
            except grpc.aio.AioRpcError as err:
                failures[f"WatchStatus {err.code().name}"] += 1
            finally:
                call.cancel()

    async def lister(channel: grpc.aio.Channel) -> None:
        nonlocal walks
        # The page as received (gRPC's limits apply as to any client), of which only the
        # token is read: decoding a megabyte a page here would take the CPU the server's
        # other customer is measured on (both share the machine).
        list_campaigns = channel.unary_unary(
            "/campaign.v1.CampaignService/ListCampaigns",
            request_serializer=pb.ListCampaignsRequest.SerializeToString,
            response_deserializer=bytes,
        )
        while not stop.is_set():
            token = ""
            try:
                while True:
                    page = await list_campaigns(
                        pb.ListCampaignsRequest(customer_id=customer, page_token=token),
                        timeout=30,
                    )
                    pages.append(len(page))
                    token = next_page_token(page)
                    if not token or stop.is_set():
                        break
                walks += 1
            except grpc.aio.AioRpcError as err:
                failures[f"ListCampaigns {err.code().name}"] += 1

    # Default channel options: gRPC's default receive limit, 4 MiB, as clients have it.
    channels = [grpc.aio.insecure_channel(target) for _ in range(watchers + listers)]
    stubs = [campaign_pb2_grpc.CampaignServiceStub(c) for c in channels]
    tasks = [asyncio.create_task(watcher(s)) for s in stubs[:watchers]]
    tasks += [asyncio.create_task(lister(c)) for c in channels[watchers:]]
    await asyncio.to_thread(stop.wait)
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 60)
    for channel in channels:
        await channel.close()
    return {
        "snapshots": snapshots,
        "pages": pages,
        "walks": walks,
        "failures": dict(failures),
    }


# -- the run ----------------------------------------------------------------------------------


class Sampler:
    """The server's RSS and its health for CampaignService, every 100 ms, in this process."""

    def __init__(self, target: str, pid: int) -> None:
        self._pid = pid
        self._channel = grpc.insecure_channel(target)
        self._health = health_pb2_grpc.HealthStub(self._channel)
        self.rss: list[int] = []
        self.health: Counter[str] = Counter()

    def sample(self) -> None:
        self.rss.append(rss_bytes(self._pid))
        try:
            status = self._health.Check(health_pb2.HealthCheckRequest(service=SERVICE), timeout=1)
            self.health[health_pb2.HealthCheckResponse.ServingStatus.Name(status.status)] += 1
        except grpc.RpcError as err:
            self.health[err.code().name] += 1  # type: ignore[attr-defined]

    def close(self) -> None:
        self._channel.close()


def run_probe(
    target: str, customer: str, ids: list[str], seconds: float
) -> tuple[list[float], dict[str, int]]:
    ctx = multiprocessing.get_context("spawn")
    stop = ctx.Event()
    receive, send = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=prober, args=(target, customer, ids, stop, send))
    proc.start()
    time.sleep(seconds)
    stop.set()
    result: tuple[list[float], dict[str, int]] = receive.recv()
    proc.join(30)
    return result


def measure(
    campaigns: int,
    load_s: float,
    after_s: float,
    extra: list[str],
    watchers: int = WATCHERS,
    listers: int = LISTERS,
) -> dict[str, Any]:
    big, small = str(uuid.uuid4()), str(uuid.uuid4())
    with tempfile.TemporaryDirectory() as tmp:
        database = Path(tmp) / "campaigns.db"
        port = free_port()
        target = f"127.0.0.1:{port}"
        started = time.monotonic()
        with server(port, database, extra):
            ids = asyncio.run(load_data(target, big, small, campaigns))
        load_data_s = time.monotonic() - started
        print(f"  {campaigns} campaigns created in {load_data_s:.0f} s", file=sys.stderr)
        # A fresh server on the data: what it holds is what the load below makes it hold.
        with server(port, database, extra) as proc:
            run_probe(target, small, ids, 2)  # warm-up
            idle, idle_failures = run_probe(target, small, ids, 5)
            rss_idle = rss_bytes(proc.pid)

            ctx = multiprocessing.get_context("spawn")
            stop = ctx.Event()
            receive_probe, send_probe = ctx.Pipe(duplex=False)
            receive_readers, send_readers = ctx.Pipe(duplex=False)
            probe = ctx.Process(target=prober, args=(target, small, ids, stop, send_probe))
            load = ctx.Process(
                target=readers, args=(target, big, watchers, listers, stop, send_readers)
            )
            sampler = Sampler(target, proc.pid)
            probe.start()
            load.start()
            deadline = time.monotonic() + load_s
            while time.monotonic() < deadline:
                sampler.sample()
                time.sleep(0.1)
            stop.set()
            loaded, load_failures = receive_probe.recv()
            reads = receive_readers.recv()
            probe.join(30)
            load.join(60)
            rss_peak = max(sampler.rss)
            health = dict(sampler.health)
            time.sleep(after_s)
            rss_after = rss_bytes(proc.pid)
            sampler.close()
    idle_p99 = percentile(idle, 0.99)
    load_p99 = percentile(loaded, 0.99)
    pages = reads["pages"]
    failures = {**{f"GetCampaign {k}": v for k, v in load_failures.items()}, **reads["failures"]}
    return {
        "campaigns": campaigns,
        "watchers": watchers,
        "listers": listers,
        "load_seconds": load_s,
        "load_data_seconds": round(load_data_s, 1),
        "get_idle_p50_ms": round(statistics.median(idle) * 1000, 3),
        "get_idle_p99_ms": round(idle_p99 * 1000, 3),
        "get_load_p50_ms": round(statistics.median(loaded) * 1000, 3),
        "get_load_p99_ms": round(load_p99 * 1000, 3),
        "get_p99_ratio": round(load_p99 / idle_p99, 2),
        "get_calls_idle": len(idle),
        "get_calls_load": len(loaded),
        "failures": sum(failures.values()) + sum(idle_failures.values()),
        "failures_by_call": failures,
        "health": health,
        "not_serving_samples": sum(n for status, n in health.items() if status != "SERVING"),
        "rss_idle_mib": round(rss_idle / 2**20, 1),
        "rss_peak_mib": round(rss_peak / 2**20, 1),
        "rss_after_mib": round(rss_after / 2**20, 1),
        "rss_after_ratio": round(rss_after / rss_idle, 2),
        "snapshots": len(reads["snapshots"]),
        "snapshot_p50_s": round(statistics.median(reads["snapshots"]), 2)
        if reads["snapshots"]
        else None,
        "snapshot_max_s": round(max(reads["snapshots"]), 2) if reads["snapshots"] else None,
        "pages": len(pages),
        "walks": reads["walks"],
        "page_max_kib": round(max(pages) / 1024, 1) if pages else None,
        "pages_refused": sum(v for k, v in reads["failures"].items() if "ListCampaigns" in k),
    }


def report(result: dict[str, Any]) -> str:
    def verdict(ok: bool) -> str:
        return "yes" if ok else "NO"

    rows = [
        (
            "other customer's GetCampaign p99, idle / under load",
            f"{result['get_idle_p99_ms']} ms / {result['get_load_p99_ms']} ms "
            f"({result['get_p99_ratio']}x)",
            "<= 5x",
            verdict(result["get_p99_ratio"] <= TARGETS["get_p99_ratio"]),
        ),
        (
            "failures",
            f"{result['failures']} {result['failures_by_call'] or ''}".strip(),
            "0",
            verdict(result["failures"] == 0),
        ),
        (
            "health of CampaignService, every 100 ms",
            ", ".join(f"{k} {v}" for k, v in result["health"].items()),
            "SERVING throughout",
            verdict(result["not_serving_samples"] == 0),
        ),
        (
            "server RSS idle / peak",
            f"{result['rss_idle_mib']} / {result['rss_peak_mib']} MiB",
            "peak <= 1024 MiB",
            verdict(result["rss_peak_mib"] <= TARGETS["rss_peak_mib"]),
        ),
        (
            "server RSS 20 s after",
            f"{result['rss_after_mib']} MiB ({result['rss_after_ratio']}x idle)",
            "<= 1.25x idle",
            verdict(result["rss_after_ratio"] <= TARGETS["rss_after_ratio"]),
        ),
        (
            "ListCampaigns pages to a default client",
            f"{result['pages']} pages in {result['walks']} walks, largest "
            f"{result['page_max_kib']} KiB, {result['pages_refused']} refused",
            "every page",
            verdict(result["pages_refused"] == 0),
        ),
        (
            "WatchStatus snapshots to SNAPSHOT_END",
            f"{result['snapshots']}, p50 {result['snapshot_p50_s']} s, "
            f"max {result['snapshot_max_s']} s",
            "",
            "",
        ),
    ]
    lines = ["| measure | figure | target | met |", "| --- | --- | --- | --- |"]
    lines += [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rows]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--campaigns", type=int, default=500)
    full = os.environ.get("BENCH_MODE") == "full"
    parser.add_argument("--seconds", type=float, default=60.0 if full else 20.0)
    parser.add_argument("--after", type=float, default=20.0, help="seconds before the last RSS")
    parser.add_argument("--server-args", default="", help="more flags for the server")
    parser.add_argument("--watchers", type=int, default=WATCHERS, help="concurrent snapshots")
    parser.add_argument("--listers", type=int, default=LISTERS, help="concurrent list walks")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    result = measure(
        args.campaigns,
        args.seconds,
        args.after,
        args.server_args.split(),
        args.watchers,
        args.listers,
    )
    print(report(result))
    out = write_results("big", TARGETS, result=result)
    print(f"written to {out}")


if __name__ == "__main__":
    main()
