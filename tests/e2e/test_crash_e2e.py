"""kill -9 of `campaign-grpc serve` during concurrent writes loses no acknowledged write.

Each round starts the server on the same database, lets several writers create, rename, run
and stop campaigns while a watch follows every change, and kills the server with SIGKILL
once enough writes were acknowledged. After every restart each acknowledged write is there
(the write in flight at the kill may have landed too), each acknowledged transition is in the
event log, the log's revisions run from 1 to the head with no gap, every change a watch
received is in the log as it was sent, and the database passes its own integrity check.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import psycopg
import pytest

from campaign_grpc_client.v1 import campaign_pb2_grpc
from e2e_helpers import Process, Stream, W, free_port, read_snapshot, wait_serving, watch
from factories import new_id
from ledger import Code, Ledger, Owned, logged_statuses, settle, write_until

ROUNDS = 3
WRITERS = 6
# Acknowledged writes per round before the kill.
WRITES_PER_ROUND = 120


def query(url: str, sql: str) -> list[tuple[Any, ...]]:
    """Rows read straight from the database, past the server."""
    if url.startswith("sqlite:///"):
        with contextlib.closing(sqlite3.connect(url.removeprefix("sqlite:///"))) as conn:
            return conn.execute(sql).fetchall()
    with psycopg.connect(url, autocommit=True) as conn:
        cursor = conn.execute(sql)
        return cursor.fetchall() if cursor.description else []


def check_integrity(url: str) -> str:
    """Runs the database's own consistency check; returns what it checked."""
    if url.startswith("sqlite:///"):
        assert query(url, "PRAGMA integrity_check") == [("ok",)]
        assert query(url, "PRAGMA foreign_key_check") == []
        return "PRAGMA integrity_check and foreign_key_check"
    # amcheck's bt_index_check with heapallindexed: every index is a valid B-tree, and
    # holds every row of its table.
    query(url, "CREATE EXTENSION IF NOT EXISTS amcheck")
    checked = query(
        url,
        """SELECT index.relname, bt_index_check(index.oid, true)
        FROM pg_index i
        JOIN pg_class index ON index.oid = i.indexrelid
        JOIN pg_class tab ON tab.oid = i.indrelid
        JOIN pg_am am ON am.oid = index.relam
        WHERE tab.relname IN ('campaign', 'event', 'meta') AND am.amname = 'btree'""",
    )
    assert len(checked) >= 7, checked  # the three tables' keys, and the campaign's indexes
    return f"amcheck bt_index_check(heapallindexed) on {len(checked)} indexes"


def check_unique_keys(url: str) -> None:
    """What the unique indexes promise holds in the rows themselves."""
    for sql in (
        "SELECT customer_id, id FROM campaign GROUP BY customer_id, id HAVING count(*) > 1",
        "SELECT customer_id, request_id FROM campaign WHERE request_id IS NOT NULL "
        "GROUP BY customer_id, request_id HAVING count(*) > 1",
        "SELECT customer_id, outdial_id FROM campaign "
        "WHERE tm_delete IS NULL AND outdial_id <> '' "
        "GROUP BY customer_id, outdial_id HAVING count(*) > 1",
        "SELECT revision FROM event GROUP BY revision HAVING count(*) > 1",
    ):
        assert query(url, sql) == [], sql


def check_log(url: str, ledger: Ledger, watched: dict[int, tuple[str, int, int]]) -> int:
    """The log against the settled ledger and what the watches received; returns its head."""
    events = query(url, "SELECT revision, campaign_id, status, previous_status FROM event")
    events.sort()
    (head,) = query(url, "SELECT value FROM meta WHERE key = 'revision'")[0]
    assert [e[0] for e in events] == list(range(1, head + 1)), "revisions with a gap"
    by_campaign: dict[str, list[tuple[int, int, int]]] = {}
    for revision, campaign_id, status, previous in events:
        by_campaign.setdefault(campaign_id, []).append((revision, status, previous))
    stored = {r[0]: r[1:] for r in query(url, "SELECT id, version, revision FROM campaign")}
    for c in ledger.campaigns:
        logged = by_campaign.pop(c.id, [])
        assert [status for _, status, _ in logged] == logged_statuses(c.version), c
        # Each event's previous status is the one before it; a create's, none (0).
        previous = [0, *(status for _, status, _ in logged)][: len(logged)]
        assert [p for _, _, p in logged] == previous, c
        if c.version:
            assert stored[c.id] == (c.version, logged[-1][0]), c
    assert not by_campaign, f"events of campaigns no writer made: {by_campaign.keys()}"
    for revision, (campaign_id, status, previous) in watched.items():
        assert (revision, campaign_id, status, previous) in events, revision
    return int(head)


async def follow(stream: Stream, watched: dict[int, tuple[str, int, int]]) -> None:
    """Records every change the stream delivers until the server goes away."""
    await read_snapshot(stream)
    with contextlib.suppress(grpc.aio.AioRpcError):
        while (m := await stream.next_change(within=30)) is not None:
            assert m.kind == W.KIND_CHANGE, m
            watched[m.revision] = (m.campaign_id, m.status, m.previous_status)


@pytest.fixture
def spawn(tmp_path: Path, database_url: str) -> Iterator[Any]:
    """Starts servers on the test's database; kills whatever is left at the end."""
    started: list[Process] = []

    def start() -> tuple[Process, str]:
        target = f"127.0.0.1:{free_port()}"
        args = ["--listen", target, "--database-url", database_url]
        # No stop completes by itself, so every version is a writer's.
        args += ["--stop-grace", "3600", "--heartbeat-interval", "0.5"]
        proc = Process(args, tmp_path / f"server-{len(started)}.log")
        started.append(proc)
        return proc, target

    try:
        yield start
    finally:
        for proc in started:
            proc.kill()


async def test_kill_9_during_concurrent_writes_loses_no_acknowledged_write(
    spawn: Any, database_url: str
) -> None:
    ledger = Ledger()
    customers = [new_id() for _ in range(WRITERS)]
    mine: list[list[Owned]] = [[] for _ in range(WRITERS)]
    watched: dict[int, tuple[str, int, int]] = {}
    checked = ""

    def died(err: grpc.aio.AioRpcError) -> bool:
        return err.code() == Code.UNAVAILABLE

    for round_ in range(ROUNDS + 1):
        proc, target = spawn()
        await wait_serving(target, proc)
        async with grpc.aio.insecure_channel(target) as channel:
            stub = campaign_pb2_grpc.CampaignServiceStub(channel)
            for c in ledger.campaigns:
                await settle(stub, c, ledger)
            head = check_log(database_url, ledger, watched)
            check_unique_keys(database_url)
            checked = check_integrity(database_url)
            if round_ == ROUNDS:
                proc.terminate()
                assert await proc.exit_code(within=15) == 0
                break

            before = ledger.acknowledged
            stop = asyncio.Event()
            stream = watch(stub, after_revision=0)
            follower = asyncio.create_task(follow(stream, watched))
            writers = [
                asyncio.create_task(
                    write_until(
                        stub,
                        ledger,
                        mine[i],
                        customers[i],
                        stop=stop,
                        expected=died,
                        keep_going=False,
                    )
                )
                for i in range(WRITERS)
            ]
            try:
                while ledger.acknowledged - before < WRITES_PER_ROUND:
                    assert not any(w.done() for w in writers), "a writer ended early"
                    await asyncio.sleep(0.01)
                proc.proc.kill()
                await asyncio.wait_for(asyncio.gather(*writers, follower), 20)
            finally:
                stop.set()
                for task in [*writers, follower]:
                    task.cancel()
                await asyncio.gather(*writers, follower, return_exceptions=True)
                await stream.close()
        proc.kill()
        assert max(watched, default=0) > head, "the watch received no change"

    print(
        f"\n{database_url.split(':')[0]}: {ROUNDS} kill -9 survived; "
        f"{ledger.acknowledged} acknowledged writes ({ledger.transitions} transitions) of "
        f"{len(ledger.campaigns)} campaigns checked after each restart, "
        f"{ledger.landed_unacknowledged} unacknowledged writes landed, "
        f"{len(watched)} watched changes found in the log; integrity: {checked}"
    )
    assert ledger.failures.keys() <= {("UNAVAILABLE", "")}, ledger.failures
