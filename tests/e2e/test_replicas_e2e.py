"""Two `campaign-grpc serve` processes on one database, as replicas behind a load balancer.

On PostgreSQL the replicas poll the log only every 60 s, so an event that crosses between them
promptly was carried by LISTEN/NOTIFY; on SQLite the poll carries it.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest

from campaign_grpc_client.v1 import campaign_pb2 as pb
from campaign_grpc_client.v1 import campaign_pb2_grpc
from e2e_helpers import (
    Process,
    Stream,
    W,
    confirm_drained,
    create,
    free_port,
    get,
    read_snapshot,
    set_status,
    wait_serving,
    watch,
)
from factories import runnable_campaign

C = pb.Campaign
Stub = campaign_pb2_grpc.CampaignServiceStub


@dataclass
class Replica:
    process: Process
    target: str

    async def serving(self) -> None:
        await wait_serving(self.target, self.process)


@pytest.fixture
def spawn(tmp_path: Path, database_url: str) -> Iterator[Callable[..., Replica]]:
    """Starts replicas on the test's database; kills whatever is left at the end."""
    started: list[Process] = []
    poll = "60" if database_url.startswith("postgresql") else "0.1"

    def start(*extra: str) -> Replica:
        port = free_port()
        args = [
            "--listen",
            f"127.0.0.1:{port}",
            "--database-url",
            database_url,
            "--event-poll-interval",
            poll,
            "--heartbeat-interval",
            "0.2",
            "--shutdown-grace",
            "2",
            *extra,
        ]
        proc = Process(args, tmp_path / f"replica-{len(started)}.log")
        started.append(proc)
        return Replica(proc, f"127.0.0.1:{port}")

    try:
        yield start
    finally:
        for proc in started:
            proc.kill()


@pytest.fixture
async def two_stubs(spawn: Callable[..., Replica]) -> AsyncIterator[tuple[Stub, Stub]]:
    """Stubs of replicas A and B, started together so that they also migrate together."""
    async with connected(spawn(), spawn()) as stubs:
        yield stubs


@asynccontextmanager
async def connected(a: Replica, b: Replica) -> AsyncIterator[tuple[Stub, Stub]]:
    await asyncio.gather(a.serving(), b.serving())
    async with (
        grpc.aio.insecure_channel(a.target) as channel_a,
        grpc.aio.insecure_channel(b.target) as channel_b,
    ):
        yield Stub(channel_a), Stub(channel_b)


async def replay(stub: Stub, after_revision: int, count: int) -> list[Any]:
    """The count changes logged after after_revision, checking that no more follow."""
    stream = watch(stub, after_revision=after_revision)
    try:
        logged = await next_changes(stream, count)
        await stream.nothing_but_heartbeats(0.5)
        return logged
    finally:
        await stream.close()


async def next_changes(stream: Stream, count: int, within: float = 5.0) -> list[Any]:
    out = []
    for _ in range(count):
        message = await stream.next_change(within)
        assert message is not None
        assert message.kind == W.KIND_CHANGE, message
        out.append(message)
    return out


async def test_replicas_start_together_on_an_empty_database_and_share_it(
    two_stubs: tuple[Stub, Stub], customer: str
) -> None:
    a, b = two_stubs
    created = await create(a, runnable_campaign(customer))
    assert (await get(b, customer, created.id)).name == created.name


async def test_a_change_through_one_replica_reaches_a_watcher_on_the_other(
    two_stubs: tuple[Stub, Stub], customer: str
) -> None:
    a, b = two_stubs
    stream = watch(b, customer)
    try:
        _, start = await read_snapshot(stream)
        created = await create(a, runnable_campaign(customer))
        await set_status(a, customer, created.id, C.STATUS_RUN)
        created_change, run_change = await next_changes(stream, 2)
        assert (created_change.campaign_id, created_change.reason) == (
            created.id,
            W.REASON_CREATED,
        )
        assert (run_change.status, run_change.previous_status) == (C.STATUS_RUN, C.STATUS_STOP)
        assert [created_change.revision, run_change.revision] == [start + 1, start + 2]
    finally:
        await stream.close()


async def test_racing_status_changes_through_two_replicas_have_one_winner_each_time(
    two_stubs: tuple[Stub, Stub], customer: str
) -> None:
    a, b = two_stubs
    created = await create(a, runnable_campaign(customer))
    live = watch(b)  # every customer: each revision of the log
    try:
        _, start = await read_snapshot(live)
        rounds = 15
        for _ in range(rounds):
            ran = await asyncio.gather(
                set_status(a, customer, created.id, C.STATUS_RUN),
                set_status(b, customer, created.id, C.STATUS_RUN),
            )
            assert {c.status for c in ran} == {C.STATUS_RUN}
            stopped = await asyncio.gather(
                set_status(a, customer, created.id, C.STATUS_STOP, force=True),
                set_status(b, customer, created.id, C.STATUS_STOP, force=True),
            )
            assert {c.status for c in stopped} == {C.STATUS_STOP}

        # Of each pair, one request made the transition and the other found it made.
        expected = [(C.STATUS_RUN, C.STATUS_STOP), (C.STATUS_STOP, C.STATUS_RUN)] * rounds
        seen_live = await next_changes(live, 2 * rounds)
        assert [(m.status, m.previous_status) for m in seen_live] == expected
        assert [m.revision for m in seen_live] == list(range(start + 1, start + 1 + 2 * rounds))
        await live.nothing_but_heartbeats(0.5)
    finally:
        await live.close()

    # The log read back through the other replica says the same, once each, without gaps.
    logged = await replay(a, start, 2 * rounds)
    assert [(m.revision, m.status, m.previous_status) for m in logged] == [
        (m.revision, m.status, m.previous_status) for m in seen_live
    ]


async def test_a_stopping_campaign_whose_grace_expires_stops_exactly_once(
    spawn: Callable[..., Replica], customer: str
) -> None:
    # Both replicas run the stop timer on the same deadlines.
    replicas = spawn("--stop-grace", "0.5"), spawn("--stop-grace", "0.5")
    async with connected(*replicas) as (stub_a, stub_b):
        campaigns = [await create(stub_a, runnable_campaign(customer)) for _ in range(10)]
        for c in campaigns:
            await set_status(stub_a, customer, c.id, C.STATUS_RUN)
        stream = watch(stub_b, customer)
        try:
            _, start = await read_snapshot(stream)
            for c in campaigns:
                assert (await set_status(stub_a, customer, c.id, C.STATUS_STOP)).status == (
                    C.STATUS_STOPPING
                )
            changes = await next_changes(stream, 2 * len(campaigns))
            # Nothing more: no campaign is completed a second time by the other replica.
            await stream.nothing_but_heartbeats(1.5)
        finally:
            await stream.close()

        expired = [m for m in changes if m.reason == W.REASON_GRACE_EXPIRED]
        assert sorted(m.campaign_id for m in expired) == sorted(c.id for c in campaigns)
        assert {(m.status, m.previous_status) for m in expired} == {
            (C.STATUS_STOP, C.STATUS_STOPPING)
        }
        assert [m.revision for m in changes] == list(range(start + 1, start + 1 + len(changes)))
        for c in campaigns:
            assert (await get(stub_b, customer, c.id)).status == C.STATUS_STOP


async def test_racing_stops_and_confirmations_on_two_replicas_never_skip_the_drain(
    two_stubs: tuple[Stub, Stub], customer: str
) -> None:
    """Two operators (or a gateway's retries) stop through different replicas at once, then
    two dialers confirm at once: one STOPPING, one completion, never STOP without a drain."""
    a, b = two_stubs
    live = watch(b, customer)
    try:
        _, start = await read_snapshot(live)
        for _ in range(5):
            created = await create(a, runnable_campaign(customer))
            await set_status(b, customer, created.id, C.STATUS_RUN)
            stops = await asyncio.gather(
                *(set_status(stub, customer, created.id, C.STATUS_STOP) for stub in (a, b) * 4)
            )
            assert {(c.status, c.stop_revision) for c in stops} == {
                (C.STATUS_STOPPING, stops[0].stop_revision)
            }
            confirmed = await asyncio.gather(
                *(
                    confirm_drained(stub, customer, created.id, stops[0].stop_revision)
                    for stub in (a, b) * 4
                )
            )
            assert {(c.status, c.etag) for c in confirmed} == {(C.STATUS_STOP, confirmed[0].etag)}
        seen = await next_changes(live, 5 * 4)
        await live.nothing_but_heartbeats(0.5)
    finally:
        await live.close()
    steps = [(m.previous_status, m.status, m.reason) for m in seen]
    assert (
        steps
        == [
            (C.STATUS_UNSPECIFIED, C.STATUS_STOP, W.REASON_CREATED),
            (C.STATUS_STOP, C.STATUS_RUN, W.REASON_REQUESTED),
            (C.STATUS_RUN, C.STATUS_STOPPING, W.REASON_REQUESTED),
            (C.STATUS_STOPPING, C.STATUS_STOP, W.REASON_DRAINED),
        ]
        * 5
    )
    assert [m.revision for m in seen] == list(range(start + 1, start + 1 + len(seen)))
