"""One load run: N concurrent grpc.aio callers repeat one call for a while; prints JSON.

Runs in its own process so that the client's work does not share the server's interpreter.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from campaign_grpc_client.v1 import campaign_pb2 as pb
from campaign_grpc_client.v1 import campaign_pb2_grpc as pb_grpc


def new_id() -> str:
    return str(uuid.uuid4())


_TICK_S = 1 / os.sysconf("SC_CLK_TCK")
# The pause after each turn when several targets are loaded in turn (see run).
SETTLE_S = 0.4


def cpu_seconds(pid: int) -> float:
    """The CPU time (user and system) a process has used so far, all its threads."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) * _TICK_S


def children(pid: int) -> list[int]:
    return [
        int(child)
        for task in Path(f"/proc/{pid}/task").iterdir()
        for child in (task / "children").read_text().split()
    ]


def cpu_of(pid: int | None) -> tuple[float, float]:
    """The CPU time of a process, and that of its children (the span exporter) together."""
    if pid is None:
        return 0.0, 0.0
    return cpu_seconds(pid), sum(cpu_seconds(c) for c in children(pid))


def draft(customer: str) -> pb.Campaign:
    m = pb.Campaign(
        customer_id=customer,
        type=pb.Campaign.TYPE_CALL,
        name="bench",
        outplan_id=new_id(),
        outdial_id=new_id(),
        actions=[pb.Action(type="answer"), pb.Action(type="talk")],
    )
    m.actions[1].option.update({"text": "hello"})
    return m


async def prepare(stub: pb_grpc.CampaignServiceStub, customer: str, count: int) -> list[str]:
    ids = []
    for _ in range(count):
        r = await stub.CreateCampaign(pb.CreateCampaignRequest(campaign=draft(customer)))
        ids.append(r.campaign.id)
    return ids


async def caller(
    channel: grpc.aio.Channel, scenario: str, concurrency: int
) -> Callable[[int], Awaitable[None]]:
    """The scenario's call against one server, its campaigns and requests made beforehand."""
    stub = pb_grpc.CampaignServiceStub(channel)
    health = health_pb2_grpc.HealthStub(channel)
    customer = new_id()
    ids = await prepare(stub, customer, 200 if scenario != "health" else 0)
    # Requests are built before the clock starts: the client's own work would otherwise
    # count against the server, more for large requests than for the baseline's.
    creates = [pb.CreateCampaignRequest(campaign=draft(customer)) for _ in range(20_000)]
    gets = [pb.GetCampaignRequest(customer_id=customer, id=i) for i in ids]
    listing = pb.ListCampaignsRequest(customer_id=customer, page_size=50)
    # Consecutive updates of one campaign change its name, so none is a no-op.
    updates = [
        pb.UpdateCampaignRequest(
            campaign=pb.Campaign(customer_id=customer, id=i, name=f"bench {k}"),
            update_mask={"paths": ["name"]},
        )
        for k in range(8)
        for i in ids
    ]
    # Each worker owns its campaigns and takes them RUN then (forced) STOP in turn, so
    # every call is a real transition with an event.
    own = [ids[w::concurrency] for w in range(concurrency)] if ids else []
    statuses = [
        [
            [
                pb.UpdateCampaignStatusRequest(
                    customer_id=customer, id=i, status=status, force=True
                )
                for i in mine
            ]
            for status in (pb.Campaign.STATUS_RUN, pb.Campaign.STATUS_STOP)
        ]
        for mine in own
    ]
    check = health_pb2.HealthCheckRequest()
    counter = iter(range(10**12))
    sent = [0] * max(1, concurrency)

    async def call(worker: int) -> None:
        n = next(counter)
        if scenario == "health":
            await health.Check(check)
        elif scenario == "create":
            request = (
                creates[n]
                if n < len(creates)
                else pb.CreateCampaignRequest(campaign=draft(customer))
            )
            await stub.CreateCampaign(request)
        elif scenario == "get":
            await stub.GetCampaign(gets[n % len(gets)])
        elif scenario == "list":
            r = await stub.ListCampaigns(listing)
            assert len(r.campaigns) == 50
        elif scenario == "update":
            await stub.UpdateCampaign(updates[n % len(updates)])
        elif scenario == "status":
            m = sent[worker]
            sent[worker] += 1
            runs, stops = statuses[worker]
            turn = runs if (m // len(runs)) % 2 == 0 else stops
            await stub.UpdateCampaignStatus(turn[m % len(turn)])
        else:
            raise SystemExit(f"unknown scenario {scenario}")

    return call


class Tally:
    """What the measured stretches against one server added up to."""

    def __init__(self) -> None:
        self.latencies: list[float] = []
        self.errors = 0
        self.seconds = 0.0
        self.cpu = [0.0, 0.0]

    def result(self, scenario: str) -> dict:
        latencies, calls = sorted(self.latencies), max(1, len(self.latencies))

        def pct(p: float) -> float:
            return latencies[min(len(latencies) - 1, int(p * len(latencies)))] * 1000

        return {
            "scenario": scenario,
            "calls": len(latencies),
            "errors": self.errors,
            "qps": len(latencies) / self.seconds,
            "p50_ms": pct(0.50),
            "p99_ms": pct(0.99),
            # The server's CPU per call measured (its children's apart), over the same windows.
            "server_cpu_us": self.cpu[0] / calls * 1e6,
            "children_cpu_us": self.cpu[1] / calls * 1e6,
        }


async def drive(
    call: Callable[[int], Awaitable[None]],
    concurrency: int,
    seconds: float,
    pid: int | None = None,
    tally: Tally | None = None,
) -> None:
    """concurrency callers for seconds; counted in tally, if given (a warm-up is not)."""
    stop_at = time.perf_counter() + seconds
    errors = 0
    latencies: list[float] = []

    async def worker(i: int) -> None:
        nonlocal errors
        while (now := time.perf_counter()) < stop_at:
            try:
                await call(i)
            except grpc.aio.AioRpcError:
                errors += 1
            latencies.append(time.perf_counter() - now)

    cpu_start, started = cpu_of(pid), time.perf_counter()
    await asyncio.gather(*(worker(i) for i in range(concurrency)))
    elapsed, cpu_end = time.perf_counter() - started, cpu_of(pid)
    if tally is not None:
        tally.latencies += latencies
        tally.errors += errors
        tally.seconds += elapsed
        tally.cpu[0] += cpu_end[0] - cpu_start[0]
        tally.cpu[1] += cpu_end[1] - cpu_start[1]


async def run(
    targets: list[str],
    scenario: str,
    concurrency: int,
    seconds: float,
    warmup: float,
    pids: list[int | None],
    slices: int,
) -> list[dict]:
    """Each target warmed up, then loaded for seconds in all, in slices taken in turn (ABBA):
    servers compared with each other meet the same moments of a machine whose speed drifts."""
    async with contextlib.AsyncExitStack() as stack:
        calls = []
        for target in targets:
            channel = await stack.enter_async_context(grpc.aio.insecure_channel(target))
            calls.append(await caller(channel, scenario, concurrency))
        for call, pid in zip(calls, pids, strict=True):
            await drive(call, concurrency, warmup, pid)
        tallies = [Tally() for _ in targets]
        turns = list(zip(calls, pids, tallies, strict=True))
        for k in range(slices):
            for call, pid, tally in turns if k % 2 == 0 else turns[::-1]:
                await drive(call, concurrency, seconds / slices, pid, tally)
                if len(turns) > 1:
                    # What a turn leaves behind (a traced server's exporting process takes
                    # up to a quarter second to finish its spans) must not fall in the next
                    # target's turn, where it would slow the other server down.
                    await asyncio.sleep(SETTLE_S)
        return [tally.result(scenario) for tally in tallies]


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument(
        "--target", action="append", required=True, help="several: loaded in turn, compared"
    )
    p.add_argument("--scenario", required=True)
    p.add_argument("--concurrency", type=int, default=16)
    p.add_argument("--seconds", type=float, default=5.0)
    p.add_argument("--warmup", type=float, default=1.0)
    p.add_argument(
        "--server-pid", type=int, action="append", help="measure its CPU per call (per target)"
    )
    p.add_argument("--slices", type=int, default=1, help="turns per target (several targets)")
    a = p.parse_args()
    pids = a.server_pid or [None] * len(a.target)
    results = asyncio.run(
        run(a.target, a.scenario, a.concurrency, a.seconds, a.warmup, pids, a.slices)
    )
    json.dump(results[0] if len(results) == 1 else results, sys.stdout)


if __name__ == "__main__":
    main()
