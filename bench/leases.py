"""Leases as dialers meet them: how long a campaign goes undialed when its dialer dies, how
soon a campaign that starts is dialed, and what the fencing check costs a dialer's calls.

    python bench/leases.py                  # SQLite, --lease-ttl 2
    python bench/leases.py --postgres       # PostgreSQL at $CAMPAIGN_GRPC_TEST_POSTGRES_URL
    python bench/leases.py --kills 20 --ttl 2

- failover: two dialer processes of the kit (tests/dialer_process.py) share running
  campaigns; the holder of one is killed with SIGKILL, and the time until the other dials it
  is measured, --kills times (the killed one is started again each time). Target: at most
  ttl + 1 s, every time.
- start: a campaign set to RUN until a dialer dials it (p50, max).
- fencing: ReportOutdialExhausted (a repeat, which changes nothing) with and without the
  lease's fencing token, one client, side by side: calls a second and p50.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import grpc

from campaign_grpc_client.v1 import campaign_pb2 as pb
from campaign_grpc_client.v1 import campaign_pb2_grpc

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))

from common import CLI, free_port, percentile, stop, write_results  # noqa: E402

from conftest import fresh_postgres_database  # noqa: E402
from e2e_helpers import running_campaign, until  # noqa: E402

C = pb.Campaign
DIALER = HERE.parent / "tests" / "dialer_process.py"
Stub = campaign_pb2_grpc.CampaignServiceStub


class Dialers:
    def __init__(self, target: str, folder: Path) -> None:
        self.target = target
        self.folder = folder
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.count = 0

    def start(self) -> str:
        self.count += 1
        name = f"dialer-{self.count}"
        self.procs[name] = subprocess.Popen(
            [sys.executable, str(DIALER), "--target", self.target, "--holder", name,
             "--log", str(self.folder / f"{name}.jsonl")],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        return name

    def kill(self, name: str) -> float:
        proc = self.procs.pop(name)
        proc.kill()
        at = time.time()  # the clock the dialers write
        proc.wait(5)
        return at

    def dialing(self, campaign_id: str, since: float = 0.0) -> dict[str, float]:
        """Dialer -> when it last started dialing campaign_id (after since), if it still is."""
        out: dict[str, float] = {}
        for name in self.procs:
            path = self.folder / f"{name}.jsonl"
            if not path.exists():
                continue
            state: float | None = None
            for line in path.read_text().splitlines():
                if not line.endswith("}"):
                    continue
                e = json.loads(line)
                if e.get("campaign") != campaign_id:
                    continue
                if e["event"] == "dial" and e["t"] >= since:
                    state = e["t"]
                elif e["event"] == "drain":
                    state = None
            if state is not None:
                out[name] = state
        return out

    def close(self) -> None:
        for proc in self.procs.values():
            proc.kill()
            proc.wait(5)


async def failover(stub: Stub, dialers: Dialers, customer: str, kills: int, ttl: float) -> dict:
    c = await running_campaign(stub, customer)
    dialers.start()
    dialers.start()
    await until(lambda: len(dialers.dialing(c.id)) == 1, within=30)
    times = []
    for _ in range(kills):
        (holder,) = dialers.dialing(c.id)
        # The other one is up and joined: it has written a line since it started.
        killed_at = dialers.kill(holder)
        await until(lambda at=killed_at: len(dialers.dialing(c.id, at)) == 1, within=ttl + 10)
        (taken_at,) = dialers.dialing(c.id, killed_at).values()
        times.append(taken_at - killed_at)
        dialers.start()
        await asyncio.sleep(1.0)  # the new one joins before the next kill
    return {
        "ttl_s": ttl,
        "kills": kills,
        "p50_s": round(percentile(times, 0.5), 3),
        "max_s": round(max(times), 3),
        "over_ttl_max_s": round(max(times) - ttl, 3),
    }


async def start_latency(stub: Stub, dialers: Dialers, customer: str, rounds: int) -> dict:
    times = []
    for _ in range(rounds):
        c = await running_campaign(stub, customer)
        ran = time.time()
        await until(lambda cid=c.id: len(dialers.dialing(cid)) == 1, within=30)
        times.append(next(iter(dialers.dialing(c.id).values())) - ran)
    return {
        "rounds": rounds,
        "p50_s": round(percentile(times, 0.5), 3),
        "max_s": round(max(times), 3),
    }


async def fencing_cost(stub: Stub, target: str, customer: str, seconds: float) -> dict:
    """The same call with and without the fencing check, alternated in short slices."""
    c = await running_campaign(stub, customer, end_handle=C.END_HANDLE_CONTINUE)
    token = 0
    holder_call = stub.HoldLeases(_join_and_keep_alive())
    while token == 0:
        m = await holder_call.read()
        if m.kind == pb.HoldLeasesResponse.KIND_GRANTED and m.lease.campaign_id == c.id:
            token = m.lease.fencing_token
    latencies: dict[str, list[float]] = {"without": [], "with": []}
    spent = dict.fromkeys(latencies, 0.0)
    ends = time.monotonic() + 2 * seconds
    while time.monotonic() < ends:
        for name, fence in (("without", 0), ("with", token)):
            slice_ends = time.monotonic() + 0.2
            request = pb.ReportOutdialExhaustedRequest(
                customer_id=customer, id=c.id, fencing_token=fence
            )
            while time.monotonic() < slice_ends:
                t0 = time.perf_counter()
                await stub.ReportOutdialExhausted(request, timeout=10)
                latencies[name].append(time.perf_counter() - t0)
            spent[name] += 0.2
    holder_call.cancel()
    out = {}
    for name, values in latencies.items():
        out[name] = {
            "calls_per_s": round(len(values) / spent[name], 1),
            "p50_ms": round(percentile(values, 0.5) * 1000, 3),
        }
    out["ratio"] = round(out["with"]["calls_per_s"] / out["without"]["calls_per_s"], 3)
    return out


async def _join_and_keep_alive():  # type: ignore[no-untyped-def]
    join = pb.HoldLeasesRequest.Join(holder=f"bench-{uuid.uuid4().hex[:6]}", capacity=1000)
    yield pb.HoldLeasesRequest(join=join)
    while True:
        await asyncio.sleep(0.5)
        yield pb.HoldLeasesRequest(keep_alive=pb.HoldLeasesRequest.KeepAlive())


def serve(target: str, database_url: str, ttl: float) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [str(CLI), "serve", "--listen", target, "--database-url", database_url,
         "--lease-ttl", str(ttl), "--log-level", "WARNING"],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
    )  # fmt: skip


async def run(database_url: str, args: argparse.Namespace, folder: Path) -> dict:
    port = free_port()
    target = f"127.0.0.1:{port}"
    server = serve(target, database_url, args.ttl)
    dialers = Dialers(target, folder)
    try:
        async with grpc.aio.insecure_channel(target) as channel:
            await channel.channel_ready()
            stub = Stub(channel)
            customer = str(uuid.uuid4())
            results = {"failover": await failover(stub, dialers, customer, args.kills, args.ttl)}
            results["start"] = await start_latency(stub, dialers, customer, 20)
            dialers.close()
            dialers.procs.clear()
            results["fencing"] = await fencing_cost(stub, target, customer, args.seconds)
            return results
    finally:
        dialers.close()
        stop(server)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--postgres", action="store_true")
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--ttl", type=float, default=2.0)
    parser.add_argument("--seconds", type=float, default=3.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        with contextlib.ExitStack() as stack:
            if args.postgres:
                server_url = os.environ.get(
                    "CAMPAIGN_GRPC_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
                )
                url = stack.enter_context(fresh_postgres_database(server_url))
            else:
                url = f"sqlite:///{folder / 'bench.db'}"
            results = asyncio.run(run(url, args, folder))
    results["database"] = "postgresql" if args.postgres else "sqlite"
    print(json.dumps(results, indent=2))
    out = write_results("leases", {"failover_max_over_ttl_s": 1.0}, **results)
    print(f"written to {out}")


if __name__ == "__main__":
    main()
