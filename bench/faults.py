"""One replica's trouble against the rest of the fleet: three replicas on one PostgreSQL
database, each through a proxy of its own, under a steady write load on every replica.

    python bench/faults.py                 # PostgreSQL at $CAMPAIGN_GRPC_TEST_POSTGRES_URL
    python bench/faults.py --seconds 10    # longer phases

Phases, each measured on the two healthy replicas (0 and 2) while replica 1's path is:
- quiet: nothing wrong (the baseline of the same run);
- slow: 100 ms each way (writes a second and p99 of the others against quiet);
- partitioned: blackholed (how long the others' writes fail; how long replica 1's watch
  streams take to end).
Every replica writes to one shared pool of campaigns (renames and RUN/STOP), so that a
replica in trouble holds campaigns the others want.

Targets: others' writes during the partition fail for at most 10 s; with the slow path the
others keep >= 0.8x their writes a second and p99 <= 2x; a partitioned replica's streams end
within 3 heartbeat intervals.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from google.protobuf import field_mask_pb2

from campaign_grpc_client.v1 import campaign_pb2 as pb

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))

from common import percentile, write_results  # noqa: E402

from conftest import fresh_postgres_database  # noqa: E402
from fleet import Fleet, create_campaigns, fleet  # noqa: E402

C = pb.Campaign
W = pb.WatchStatusResponse
TARGETS = {
    "partition_failures_s": 10.0,
    "slow_throughput": 0.8,
    "slow_p99": 2.0,
    "stream_end_hb": 3,
}
# Writes a second each replica is asked for: about 50 for the fleet, as in the drill.
RATE_PER_REPLICA = 17
WRITERS_PER_REPLICA = 6


@dataclass
class Phase:
    latencies: dict[int, list[float]] = field(default_factory=dict)
    failed_at: dict[int, list[float]] = field(default_factory=dict)
    began: float = 0.0
    ended: float = 0.0

    def writes_per_s(self, replicas: tuple[int, ...]) -> float:
        done = sum(len(self.latencies.get(r, [])) for r in replicas)
        return done / (self.ended - self.began)

    def p99(self, replicas: tuple[int, ...]) -> float:
        values = [v for r in replicas for v in self.latencies.get(r, [])]
        return percentile(values, 0.99) if values else float("nan")

    def failing_s(self, replicas: tuple[int, ...]) -> float:
        times = sorted(t for r in replicas for t in self.failed_at.get(r, []))
        return times[-1] - times[0] if times else 0.0


class Load:
    """Paced writers on every replica; what each phase saw."""

    def __init__(self, f: Fleet, pool: list[C]) -> None:
        self._fleet = f
        self._pool = pool
        self.phase = Phase()
        self._stop = asyncio.Event()
        self._tasks = [
            asyncio.create_task(self._writer(r, w))
            for r in range(len(f.members))
            for w in range(WRITERS_PER_REPLICA)
        ]

    def next_phase(self) -> Phase:
        ended, self.phase = self.phase, Phase(began=time.monotonic())
        ended.ended = self.phase.began
        return ended

    async def _writer(self, replica: int, n: int) -> None:
        stub = self._fleet.stub(replica)
        interval = WRITERS_PER_REPLICA / RATE_PER_REPLICA
        await asyncio.sleep(n * interval / WRITERS_PER_REPLICA)
        for i in itertools.count():
            if self._stop.is_set():
                return
            due = time.monotonic() + interval
            c = self._pool[(replica * 7 + n * 3 + i) % len(self._pool)]
            phase = self.phase
            started = time.monotonic()
            try:
                if i % 3 == 0:
                    await stub.UpdateCampaign(
                        pb.UpdateCampaignRequest(
                            campaign=C(customer_id=c.customer_id, id=c.id, name=f"w{replica}-{i}"),
                            update_mask=field_mask_pb2.FieldMask(paths=["name"]),
                        ),
                        timeout=10,
                    )
                else:
                    status = C.STATUS_RUN if i % 3 == 1 else C.STATUS_STOP
                    await stub.UpdateCampaignStatus(
                        pb.UpdateCampaignStatusRequest(
                            customer_id=c.customer_id, id=c.id, status=status, force=True
                        ),
                        timeout=10,
                    )
                phase.latencies.setdefault(replica, []).append(time.monotonic() - started)
            except grpc.aio.AioRpcError:
                phase.failed_at.setdefault(replica, []).append(time.monotonic())
            await asyncio.sleep(max(0.0, due - time.monotonic()))

    async def close(self) -> None:
        self._stop.set()
        await asyncio.gather(*self._tasks, return_exceptions=True)


async def stream_end_after_partition(f: Fleet, streams: int) -> list[float]:
    """Opens watches on replica 1, blackholes its path, and times each stream's end."""
    calls = [f.stub(1).WatchStatus(pb.WatchStatusRequest()) for _ in range(streams)]
    for call in calls:
        while (await call.read()).kind != W.KIND_SNAPSHOT_END:
            pass
    f.members[1].proxy.blackhole(user_timeout=2.0, idle_timeout=4.0)
    began = time.monotonic()

    async def end(call: grpc.aio.UnaryStreamCall) -> float:  # type: ignore[type-arg]
        try:
            while await asyncio.wait_for(call.read(), 60) is not grpc.aio.EOF:
                pass
        except grpc.aio.AioRpcError:
            pass
        return time.monotonic() - began

    return list(await asyncio.gather(*(end(c) for c in calls)))


async def run(url: str, seconds: float) -> dict[str, object]:
    with tempfile.TemporaryDirectory() as tmp:
        async with fleet(url, Path(tmp)) as f:
            customer = str(uuid.uuid4())
            pool = await create_campaigns(f, customer, 60)
            load = Load(f, pool)
            await asyncio.sleep(2)  # warm up
            load.next_phase()
            await asyncio.sleep(seconds)
            quiet = load.next_phase()
            f.members[1].proxy.delay = 0.1
            await asyncio.sleep(seconds)
            slow = load.next_phase()
            f.members[1].proxy.delay = 0.0
            await asyncio.sleep(2)
            load.next_phase()
            ends = await stream_end_after_partition(f, 20)
            await asyncio.sleep(max(0.0, seconds - max(ends)))
            partitioned = load.next_phase()
            f.members[1].proxy.restore()
            await load.close()
    others = (0, 2)
    return {
        "quiet": {"writes_per_s": quiet.writes_per_s(others), "p99_s": quiet.p99(others)},
        "slow": {
            "writes_per_s": slow.writes_per_s(others),
            "p99_s": slow.p99(others),
            "slow_replica_writes_per_s": slow.writes_per_s((1,)),
            "slow_replica_p99_s": slow.p99((1,)),
            "slow_replica_failures": len(slow.failed_at.get(1, [])),
            "others_failures": sum(len(slow.failed_at.get(r, [])) for r in others),
        },
        "partitioned": {
            "others_failing_s": partitioned.failing_s(others),
            "others_failures": sum(len(partitioned.failed_at.get(r, [])) for r in others),
            "others_writes_per_s": partitioned.writes_per_s(others),
            "stream_end_s": {"min": min(ends), "max": max(ends)},
        },
        "heartbeat_interval_s": f.heartbeat_interval,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=8.0, help="length of each phase")
    args = parser.parse_args()
    server = os.environ.get(
        "CAMPAIGN_GRPC_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
    )
    with fresh_postgres_database(server) as url:
        results = asyncio.run(run(url, args.seconds))
    quiet, slow, cut = results["quiet"], results["slow"], results["partitioned"]
    assert isinstance(quiet, dict)
    assert isinstance(slow, dict)
    assert isinstance(cut, dict)
    hb = float(results["heartbeat_interval_s"])  # type: ignore[arg-type]
    rows = [
        ("others' writes/s, quiet", f"{quiet['writes_per_s']:.1f}", ""),
        (
            "others' writes/s, replica 1 slow (100 ms each way)",
            f"{slow['writes_per_s']:.1f} ({slow['writes_per_s'] / quiet['writes_per_s']:.2f}x)",
            ">= 0.8x",
        ),
        ("others' p99, quiet", f"{quiet['p99_s'] * 1000:.0f} ms", ""),
        (
            "others' p99, replica 1 slow",
            f"{slow['p99_s'] * 1000:.0f} ms ({slow['p99_s'] / quiet['p99_s']:.2f}x)",
            "<= 2x",
        ),
        (
            "replica 1's own writes/s, p99 and failures, slow",
            f"{slow['slow_replica_writes_per_s']:.1f}, {slow['slow_replica_p99_s'] * 1000:.0f} ms,"
            f" {slow['slow_replica_failures']}",
            "",
        ),
        ("others' failures, replica 1 slow", f"{slow['others_failures']}", "0"),
        (
            "others' writes failing, replica 1 partitioned",
            f"{cut['others_failing_s']:.1f} s ({cut['others_failures']} failed)",
            "<= 10 s",
        ),
        ("others' writes/s, replica 1 partitioned", f"{cut['others_writes_per_s']:.1f}", ""),
        (
            "replica 1's streams end after the partition",
            f"{cut['stream_end_s']['min']:.2f}-{cut['stream_end_s']['max']:.2f} s"
            f" ({cut['stream_end_s']['max'] / hb:.1f} heartbeat intervals)",
            "<= 3 intervals",
        ),
    ]
    width = max(len(r[0]) for r in rows)
    for name, value, target in rows:
        print(f"{name:<{width}}  {value:<24} {target}")
    print(write_results("faults", TARGETS, **results))


if __name__ == "__main__":
    main()
