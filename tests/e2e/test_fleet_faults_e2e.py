"""An operator's failure drill, run as a test: three replicas on one PostgreSQL database
under a mixed load, one replica's path delayed, blackholed, cut, its COMMIT's answer lost,
one replica's clock 90 s ahead; then a checker over the event log and every stream.

What must hold whatever happened: no acknowledged write lost, no gap in the log, every
watcher's changes exactly the log's after each resume (none missed, repeated or out of
order), one winner per racing STOP, no drain cut shorter than the stop grace.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path
from typing import Any

import grpc
import psycopg
import pytest

from campaign_grpc_client.v1 import campaign_pb2 as pb
from e2e_helpers import eventually
from fleet import (
    RETRIED,
    FailingOver,
    Fleet,
    Racing,
    Watcher,
    create_campaigns,
    fleet,
    race_stops,
)
from ledger import Ledger, Owned, settle, write_until
from toolchains import shifted

C = pb.Campaign
W = pb.WatchStatusResponse

pytestmark = pytest.mark.timeout(240)


def may_fail_in_a_drill(err: grpc.aio.AioRpcError) -> bool:
    """A write may fail while its replica is in trouble, retryably; nothing else."""
    return err.code() in RETRIED


async def faults(f: Fleet, began: dict[str, float]) -> list[str]:
    """The drill's faults, one after the other, each on one replica's path; what was done,
    and in began when each fault began (time.monotonic())."""
    done: list[str] = []
    p0, p1, p2 = (m.proxy for m in f.members)
    await asyncio.sleep(2)
    p0.delay = 0.1
    done.append("replica 0: 100 ms each way for 4 s")
    await asyncio.sleep(4)
    p0.delay = 0.0
    # Held data and idle connections give up as the replica's TCP settings would
    # (--database-stall-timeout 2: tcp_user_timeout 2 s, keepalives after about 4 s).
    p1.blackhole(user_timeout=2.0, idle_timeout=4.0)
    began["blackhole"] = time.monotonic()
    done.append("replica 1: blackholed for 6 s")
    await asyncio.sleep(6)
    p1.restore()
    await asyncio.sleep(2)
    p2.cut()
    done.append("replica 2: every connection reset, refused for 1 s")
    await asyncio.sleep(1)
    p2.restore()
    await asyncio.sleep(2)
    for forward in (True, True, False):
        p0.drop_reply_after(b"COMMIT", forward=forward)
        await eventually(lambda: _dropped(p0), within=10)
    done.append(f"replica 0: {p0.replies_dropped} COMMIT answers lost")
    await asyncio.sleep(2)
    return done


async def _dropped(proxy: Any) -> bool:
    return proxy.reply_drop is None


def event_log(url: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(url) as db:
        return db.execute(
            "SELECT revision, campaign_id, status, previous_status, reason, tm_event,"
            " stop_revision FROM event ORDER BY revision"
        ).fetchall()


def head_of(url: str) -> int:
    with psycopg.connect(url) as db:
        row = db.execute("SELECT value FROM meta WHERE key = 'revision'").fetchone()
        assert row is not None
        return int(row[0])


async def test_a_failure_drill_on_three_replicas_loses_nothing_and_streams_tell_the_truth(
    postgres_url: str, tmp_path: Path
) -> None:
    async with fleet(postgres_url, tmp_path, env={2: shifted("+90s")}) as f:
        customer = str(uuid.uuid4())
        racing = await create_campaigns(f, customer, 4)
        watchers = [Watcher(f, i) for i in range(6)]
        for w in watchers:
            await w.started()
        stop = asyncio.Event()
        ledger, record = Ledger(), Racing()
        owned: list[list[Owned]] = [[] for _ in range(6)]
        load = [
            asyncio.create_task(
                write_until(
                    FailingOver(f, i),  # type: ignore[arg-type]
                    ledger,
                    owned[i],
                    str(uuid.uuid4()),
                    stop=stop,
                    expected=may_fail_in_a_drill,
                    keep_going=True,
                    retry_delay=0.1,
                )
            )
            for i in range(6)
        ]
        load += [
            asyncio.create_task(race_stops(f, stop, racing[i::2], record, seed=i)) for i in range(2)
        ]
        try:
            began: dict[str, float] = {}
            done = await faults(f, began)
        finally:
            stop.set()
            outcomes = await asyncio.gather(*load, return_exceptions=True)
        assert [repr(o) for o in outcomes if isinstance(o, BaseException)] == []

        # Every acknowledged write is in the database (one in doubt may have landed).
        settle_via = FailingOver(f, 0)
        for c in ledger.campaigns:
            await settle(settle_via, c, ledger)  # type: ignore[arg-type]
        assert ledger.acknowledged > 200, (ledger, done)
        assert record.stops > 4, record

        # The log has no gap, and every watcher caught up with it.
        head = await asyncio.to_thread(head_of, postgres_url)

        async def caught_up() -> bool:
            return all(
                any(m[1] >= head for m in w.received.messages if m[0] != W.KIND_SNAPSHOT)
                for w in watchers
            )

        await eventually(caught_up, within=30)
        for w in watchers:
            await w.close()
        log = await asyncio.to_thread(event_log, postgres_url)
        assert [e[0] for e in log] == list(range(1, head + 1))

        by_revision = {e[0]: e for e in log}
        for i, w in enumerate(watchers):
            changes = [m for m in w.received.messages if m[0] == W.KIND_CHANGE]
            revisions = [m[1] for m in changes]
            # After every resume: nothing missed, nothing repeated, nothing out of order.
            assert revisions == list(range(w.received.start + 1, revisions[-1] + 1)), (
                i,
                w.received.ends,
                w.received.resumes,
            )
            assert all((m[2], m[3]) == by_revision[m[1]][1:3] for m in changes), i
            # A heartbeat never claimed a revision its replica had not read.
            for kind, revision, *_ in w.received.messages:
                if kind == W.KIND_HEARTBEAT:
                    assert revision <= head
        # The blackholed replica's streams ended within three heartbeat intervals (and a
        # tenth of one for the checks), and their watchers moved on; they never went silent.
        bound = 3.1 * f.heartbeat_interval
        cut_off = [
            min(at for _, at, on in w.received.ends if on == 1 and at >= began["blackhole"])
            - began["blackhole"]
            for w in watchers
            if any(on == 1 and at >= began["blackhole"] for _, at, on in w.received.ends)
        ]
        assert cut_off, [w.received.ends for w in watchers]
        assert max(cut_off) <= bound, cut_off
        assert all(end != "SILENT" for w in watchers for end, _, _ in w.received.ends)

        check_racing(log, {c.id for c in racing}, f.stop_grace)


def check_racing(log: list[tuple[Any, ...]], racing: set[str], grace_s: float) -> None:
    """One STOPPING per stop however many STOPs raced; each completion a drain confirmed or a
    grace run out in full, by the database's clock (the drill's grace is longer than the
    drill: a replica whose clock decided would end stops 90 s early, at once)."""
    stopping_at: dict[str, tuple[int, int]] = {}  # campaign -> (revision, tm_event)
    grace_us = int(grace_s * 1_000_000)
    expired = drained = 0
    for revision, campaign, status, previous, reason, tm_event, _ in log:
        if campaign not in racing:
            continue
        if status == C.STATUS_STOPPING and previous == C.STATUS_RUN:
            assert campaign not in stopping_at, f"a second STOPPING at {revision}"
            stopping_at[campaign] = (revision, tm_event)
        elif status == C.STATUS_STOP and previous == C.STATUS_STOPPING:
            began = stopping_at.pop(campaign)
            if reason == W.REASON_GRACE_EXPIRED:
                expired += 1
                # Stamped by the database's clock, whichever replica's timer ran.
                assert tm_event - began[1] >= grace_us - 50_000, (revision, began)
            else:
                assert reason == W.REASON_DRAINED, (revision, reason)
                drained += 1
        elif status == C.STATUS_RUN:
            stopping_at.pop(campaign, None)
    assert drained > 0
    assert expired == 0
