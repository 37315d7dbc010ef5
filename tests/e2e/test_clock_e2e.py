"""Replicas on one PostgreSQL database, one of them with its wall clock off.

The clock of that replica is shifted with libfaketime (Debian's faketime), the monotonic clock
left true (FAKETIME_DONT_FAKE_MONOTONIC): a host whose wall clock is wrong still counts seconds
right. Faked as well, it stalls the process's timed waits on it: the log writer's thread
never woke, and no log line came out.
Stop deadlines and the log's retention must then be decided as on the others: by the
database's clock; the replica's own log lines say how far off it is.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import psycopg
import pytest

from campaign_grpc_client.v1 import campaign_pb2 as pb
from campaign_grpc_client.v1 import campaign_pb2_grpc
from e2e_helpers import (
    Process,
    W,
    create,
    eventually,
    free_port,
    read_snapshot,
    set_status,
    wait_serving,
    watch,
)
from factories import runnable_campaign
from toolchains import shifted

C = pb.Campaign
Stub = campaign_pb2_grpc.CampaignServiceStub
DAY_US = 86_400_000_000


@dataclass
class Replica:
    process: Process
    target: str


@pytest.fixture
def spawn(tmp_path: Path, postgres_url: str) -> Iterator[Callable[..., Replica]]:
    """Starts replicas on the test's PostgreSQL database; kills whatever is left at the end."""
    started: list[Process] = []

    def start(*extra: str, env: dict[str, str] | None = None) -> Replica:
        port = free_port()
        args = [
            "--listen",
            f"127.0.0.1:{port}",
            "--database-url",
            postgres_url,
            "--heartbeat-interval",
            "0.2",
            "--shutdown-grace",
            "2",
            *extra,
        ]
        proc = Process(args, tmp_path / f"replica-{len(started)}.log", env)
        started.append(proc)
        return Replica(proc, f"127.0.0.1:{port}")

    try:
        yield start
    finally:
        for proc in started:
            proc.kill()


@asynccontextmanager
async def connected(*replicas: Replica) -> AsyncIterator[list[Stub]]:
    await asyncio.gather(*(wait_serving(r.target, r.process) for r in replicas))
    channels = [grpc.aio.insecure_channel(r.target) for r in replicas]
    try:
        yield [Stub(channel) for channel in channels]
    finally:
        for channel in channels:
            await channel.close()


def database_now_us(url: str) -> int:
    with psycopg.connect(url) as pg:
        row = pg.execute(
            "SELECT (extract(epoch FROM clock_timestamp()) * 1000000)::bigint"
        ).fetchone()
    assert row is not None
    return int(row[0])


def warned_off_by(replica: Replica) -> float | None:
    """How far ahead of the database's the replica warned its wall clock is (the fake took)."""
    found = re.search(
        r"the local wall clock is ([0-9.]+) s (ahead of|behind) the database's",
        replica.process.log,
    )
    if found is None:
        return None
    return float(found[1]) * (1 if found[2] == "ahead of" else -1)


def us(timestamp: Any) -> int:
    return int(timestamp.seconds) * 1_000_000 + int(timestamp.nanos) // 1000


@pytest.mark.parametrize("shift", [90, -90])
async def test_a_stop_grace_runs_by_the_database_clock_with_one_replica_off_by_90_s(
    spawn: Callable[..., Replica], customer: str, postgres_url: str, shift: int
) -> None:
    grace = 3.0
    true = spawn("--stop-grace", str(grace))
    off = spawn("--stop-grace", str(grace), env=shifted(f"{shift:+d}s"))
    async with connected(true, off) as (stub_true, stub_off):
        # One stop through each: the replica that is off sets one deadline and, with the
        # other's timer, judges both.
        by_off = await create(stub_true, runnable_campaign(customer))
        by_true = await create(stub_true, runnable_campaign(customer))
        for c in (by_off, by_true):
            await set_status(stub_true, customer, c.id, C.STATUS_RUN)
        stream = watch(stub_true, customer)
        try:
            await read_snapshot(stream)
            requested = time.monotonic()
            await set_status(stub_off, customer, by_off.id, C.STATUS_STOP)
            await set_status(stub_true, customer, by_true.id, C.STATUS_STOP)
            seen: dict[tuple[str, int], tuple[Any, float]] = {}
            while len(seen) < 4:
                message = await stream.next_change(within=grace + 5)
                assert message is not None
                assert message.kind == W.KIND_CHANGE, message
                seen[(message.campaign_id, message.reason)] = (message, time.monotonic())
        finally:
            await stream.close()
        database_now = database_now_us(postgres_url)

    stops = {c.id: seen[(c.id, W.REASON_REQUESTED)] for c in (by_off, by_true)}
    expiries = {c.id: seen[(c.id, W.REASON_GRACE_EXPIRED)] for c in (by_off, by_true)}
    # Not before the grace has passed (by the database's clock, which is this machine's),
    # and promptly after it: the timers look at least once a second.
    after = {c: at - requested for c, (_, at) in expiries.items()}
    assert all(grace - 0.05 <= s <= grace + 3 for s in after.values()), after
    for c, (stopping, _) in stops.items():
        expired, _ = expiries[c]
        assert (stopping.status, expired.status) == (C.STATUS_STOPPING, C.STATUS_STOP)
        # Both stamped by the database's clock, the grace between them.
        assert grace <= (us(expired.tm_event) - us(stopping.tm_event)) / 1e6 <= grace + 3
        assert 0 <= (database_now - us(expired.tm_event)) / 1e6 <= 10
    # The replica that is off says so in its log, and only it.
    assert warned_off_by(off) == pytest.approx(shift, abs=0.5), off.process.log
    assert warned_off_by(true) is None, true.process.log


async def test_a_replica_a_day_ahead_compacts_nothing_younger_than_the_retention(
    spawn: Callable[..., Replica], customer: str, postgres_url: str
) -> None:
    async with connected(spawn()) as [stub_true]:
        for _ in range(3):
            c = await create(stub_true, runnable_campaign(customer))
            await set_status(stub_true, customer, c.id, C.STATUS_RUN)
    # The first event is made older than the retention (a day), by the database's clock.
    with psycopg.connect(postgres_url) as pg:
        pg.execute(
            "UPDATE event SET tm_event = tm_event - %s "
            "WHERE revision = (SELECT min(revision) FROM event)",
            (DAY_US + 3_600_000_000,),
        )

    ahead = spawn("--compaction-interval", "0.2", env=shifted("+25h"))
    async with connected(ahead) as [stub_ahead]:
        c = await create(stub_ahead, runnable_campaign(customer))
        await set_status(stub_ahead, customer, c.id, C.STATUS_RUN)

        def logged() -> list[tuple[int, int]]:
            with psycopg.connect(postgres_url) as pg:
                rows = pg.execute("SELECT revision, tm_event FROM event ORDER BY revision")
                return [(int(r), int(t)) for r, t in rows.fetchall()]

        async def old_one_removed() -> bool:
            return (await asyncio.to_thread(logged))[0][0] != 1

        await eventually(old_one_removed, within=10)
        # Five more rounds of compaction, each with its chance to remove more.
        await asyncio.sleep(1.0)
        left = await asyncio.to_thread(logged)
        database_now = await asyncio.to_thread(database_now_us, postgres_url)

    assert [revision for revision, _ in left] == list(range(2, 9))
    # The replica's own events are stamped by the database's clock too, not a day ahead.
    assert all(0 <= database_now - tm_event < 60_000_000 for _, tm_event in left)
    assert "removed 1 events older than the retention" in ahead.process.log
    assert warned_off_by(ahead) == pytest.approx(25 * 3600, abs=0.5), ahead.process.log
