"""A PostgreSQL outage under load: the server says so, keeps its promises, and recovers alone.

The PostgreSQL server is shared, so the outage is a TCP proxy between `campaign-grpc serve`
and it: cut, every connection through it drops and every new one is refused. While it is
cut, calls fail with UNAVAILABLE and the reason DATABASE_UNAVAILABLE, never INTERNAL, and
health turns NOT_SERVING; once it is restored, health is SERVING and calls succeed again
with no restart, no acknowledged write is lost, and a watch has delivered every change once,
either because it kept going or because it resumed from the last revision it received.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlsplit

import grpc
import psycopg
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from campaign_grpc_client.v1 import campaign_pb2_grpc
from e2e_helpers import (
    Process,
    W,
    create,
    eventually,
    free_port,
    get,
    read_snapshot,
    set_status,
    wait_serving,
    watch,
)
from factories import new_id, runnable_campaign
from ledger import C, Code, Ledger, Owned, reason_of, settle, write_until
from tcp_proxy import TcpProxy

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
SERVICE = "campaign.v1.CampaignService"
WRITERS = 4
# Acknowledged writes before the cut, and again after the restore.
WRITES = 40


@pytest.fixture
async def proxy(postgres_url: str) -> AsyncIterator[TcpProxy]:
    parts = urlsplit(postgres_url)
    assert parts.hostname == "127.0.0.1", "the tests talk to 127.0.0.1 only"
    tcp = TcpProxy(parts.hostname, parts.port or 5432)
    await tcp.start()
    try:
        yield tcp
    finally:
        await tcp.close()


def through(url: str, proxy: TcpProxy) -> str:
    """The same database URL, by way of the proxy."""
    parts = urlsplit(url)
    user = parts.netloc.rpartition("@")[0]
    return parts._replace(netloc=f"{user}@127.0.0.1:{proxy.port}" if user else "").geturl()


def listen_sessions(url: str) -> int:
    """The sessions on the database that LISTEN for the log's notifications."""
    with psycopg.connect(url) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity "
            "WHERE datname = current_database() AND query LIKE 'LISTEN %'"
        ).fetchone()
    assert row is not None
    return int(row[0])


class HealthFollower:
    """Every status the health Watch of the server sends, as it arrives."""

    def __init__(self, channel: grpc.aio.Channel) -> None:
        self.statuses: list[int] = []
        self._call = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest())
        self._task = asyncio.create_task(self._follow())

    async def _follow(self) -> None:
        with contextlib.suppress(grpc.aio.AioRpcError):
            async for answer in self._call:
                self.statuses.append(answer.status)

    async def turns(self, status: int, within: float) -> None:
        async def now() -> bool:
            return bool(self.statuses) and self.statuses[-1] == status

        await eventually(now, within=within)

    async def close(self) -> None:
        self._call.cancel()
        await asyncio.gather(self._task, return_exceptions=True)


class ResumingWatch:
    """A WatchStatus of every customer that, when the server ends it with UNAVAILABLE,
    resumes after the last revision it received, as a client is told to."""

    def __init__(self, stub: campaign_pb2_grpc.CampaignServiceStub) -> None:
        self.changes: list[int] = []  # revisions, in the order received
        self.start = 0  # the revision of its snapshot
        self._snapshot_read = asyncio.Event()
        self.ended: list[str] = []  # the ErrorInfo reason of each end
        self._stub = stub
        self._stopped = asyncio.Event()
        self._task = asyncio.create_task(self._run())

    async def started(self) -> None:
        await asyncio.wait_for(self._snapshot_read.wait(), 10)

    async def _run(self) -> None:
        stream = watch(self._stub)
        _, self.start = await read_snapshot(stream)
        self._snapshot_read.set()
        cursor = self.start
        while not self._stopped.is_set():
            try:
                while (m := await stream.next(within=30)) is not None:
                    if m.kind == W.KIND_CHANGE:
                        self.changes.append(m.revision)
                        cursor = m.revision
            except grpc.aio.AioRpcError as err:
                if err.code() != Code.UNAVAILABLE:
                    raise
                self.ended.append(err.details())
            finally:
                await stream.close()
            await asyncio.sleep(0.1)
            stream = watch(self._stub, after_revision=cursor)

    async def close(self) -> None:
        self._stopped.set()
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)


def database_unavailable(err: grpc.aio.AioRpcError) -> bool:
    # A connection cut as a write commits cannot be asked about while the database is away:
    # the write may have been made, and the ledger settles it once the database is back.
    unknown = ("DATABASE_UNAVAILABLE", "COMMIT_OUTCOME_UNKNOWN")
    return err.code() == Code.UNAVAILABLE and reason_of(err) in unknown


def serve(postgres_url: str, proxy: TcpProxy, tmp_path: Path) -> tuple[Process, str]:
    """`campaign-grpc serve` on the database by way of the proxy, with every background loop
    (health, log poll, compaction, stop timer) running often."""
    target = f"127.0.0.1:{free_port()}"
    args = ["--listen", target, "--database-url", through(postgres_url, proxy)]
    args += ["--health-interval", "0.2", "--event-poll-interval", "0.2"]
    args += ["--heartbeat-interval", "0.2", "--compaction-interval", "0.2"]
    args += ["--stop-grace", "3600", "--shutdown-grace", "2"]
    return Process(args, tmp_path / "server.log"), target


async def test_a_postgresql_outage_under_load_fails_calls_cleanly_and_heals_by_itself(
    proxy: TcpProxy, postgres_url: str, tmp_path: Path
) -> None:
    proc, target = serve(postgres_url, proxy, tmp_path)
    ledger = Ledger()
    stop = asyncio.Event()
    try:
        await wait_serving(target, proc)
        async with grpc.aio.insecure_channel(target) as channel:
            stub = campaign_pb2_grpc.CampaignServiceStub(channel)
            health = HealthFollower(channel)
            follower = ResumingWatch(stub)
            mine: list[list[Owned]] = [[] for _ in range(WRITERS)]
            writers = [
                asyncio.create_task(
                    write_until(
                        stub,
                        ledger,
                        mine[i],
                        new_id(),
                        stop=stop,
                        expected=database_unavailable,
                        keep_going=True,
                    )
                )
                for i in range(WRITERS)
            ]

            def writing() -> None:
                for writer in writers:
                    if writer.done():
                        writer.result()  # raises what ended it
                        raise AssertionError("a writer ended early")

            async def acknowledged(at_least: int) -> bool:
                writing()
                return ledger.acknowledged >= at_least

            async def failed(at_least: int) -> bool:
                writing()
                return sum(ledger.failures.values()) >= at_least

            try:
                await health.turns(SERVING, within=5)
                await follower.started()
                await eventually(lambda: acknowledged(WRITES), within=15)

                proxy.cut()
                connections = proxy.connections
                await health.turns(NOT_SERVING, within=10)
                # Every writer meets the outage, some more than once.
                failures = sum(ledger.failures.values())
                await eventually(lambda: failed(failures + 2 * WRITERS), within=10)
                # Long enough for the LISTEN session's reconnection (every 1 s) to fail too.
                await asyncio.sleep(1.5)
                during = ledger.acknowledged

                proxy.restore()
                await health.turns(SERVING, within=15)
                failures = sum(ledger.failures.values())
                await eventually(lambda: acknowledged(during + WRITES), within=20)
                # At most the calls already on their way when health came back failed.
                assert sum(ledger.failures.values()) - failures <= WRITERS, ledger.failures

                async def listening_again() -> bool:
                    sessions = await asyncio.to_thread(listen_sessions, postgres_url)
                    return sessions == 1

                # Other replicas' events reach this one at once again.
                await eventually(listening_again, within=10)
            finally:
                stop.set()
                await asyncio.wait_for(asyncio.gather(*writers, return_exceptions=True), 15)
            for writer in writers:
                writer.result()  # an unexpected failure is raised here

            for c in ledger.campaigns:
                await settle(stub, c, ledger)
            # Every change the log holds since the watch began, once, in order.
            latest = watch(stub)
            _, head = await read_snapshot(latest)
            await latest.close()

            async def caught_up() -> bool:
                return bool(follower.changes) and follower.changes[-1] >= head

            await eventually(caught_up, within=10)
            await follower.close()
            await health.close()
        assert follower.changes == list(range(follower.start + 1, head + 1))
        assert proxy.connections > connections, "no new connection after the restore"

        proc.terminate()
        assert await proc.exit_code(within=15) == 0
    finally:
        stop.set()
        proc.kill()

    assert ledger.failures.keys() <= {
        ("UNAVAILABLE", "DATABASE_UNAVAILABLE"),
        ("UNAVAILABLE", "COMMIT_OUTCOME_UNKNOWN"),
    }, ledger.failures
    assert ("UNAVAILABLE", "DATABASE_UNAVAILABLE") in ledger.failures
    assert not re.search(r" (INTERNAL|UNKNOWN) \d", proc.log), proc.log
    statuses = [health_pb2.HealthCheckResponse.ServingStatus.Name(s) for s in health.statuses]
    print(
        f"\npostgresql outage: {ledger.acknowledged} acknowledged writes checked, "
        f"{sum(ledger.failures.values())} calls failed with DATABASE_UNAVAILABLE, "
        f"{ledger.landed_unacknowledged} unacknowledged writes landed; "
        f"health {' -> '.join(statuses)}; the watch ended {len(follower.ended)} time(s) "
        f"and delivered {len(follower.changes)} changes"
    )


async def test_connections_dropped_while_idle_fail_no_call_once_the_database_is_back(
    proxy: TcpProxy, postgres_url: str, tmp_path: Path, customer: str
) -> None:
    # What a PostgreSQL restart, or a firewall forgetting idle connections, does to a
    # server that made no call meanwhile: every connection it holds is dead.
    proc, target = serve(postgres_url, proxy, tmp_path)
    try:
        await wait_serving(target, proc)
        async with grpc.aio.insecure_channel(target) as channel:
            stub = campaign_pb2_grpc.CampaignServiceStub(channel)
            created = await create(stub, runnable_campaign(customer))

            async def every_thread_connected() -> bool:
                # Concurrent reads reach every reader thread: each opens its connection.
                await asyncio.gather(*(get(stub, customer, created.id) for _ in range(20)))
                # The writer, the default 4 readers and the LISTEN session.
                return proxy.open_connections >= 6

            await eventually(every_thread_connected, within=10)
            health = HealthFollower(channel)
            await health.turns(SERVING, within=5)

            proxy.cut()
            proxy.restore()

            reads = [get(stub, customer, created.id) for _ in range(20)]
            running = set_status(stub, customer, created.id, C.STATUS_RUN)
            *found, ran = await asyncio.gather(*reads, running)
            assert ran.status == C.STATUS_RUN
            assert {c.etag for c in found} <= {created.etag, ran.etag}
            await health.close()
        assert health.statuses == [SERVING]
        proc.terminate()
        assert await proc.exit_code(within=15) == 0
    finally:
        proc.kill()


async def test_a_replica_cut_off_from_postgresql_ends_its_watches_so_that_they_fail_over(
    proxy: TcpProxy, postgres_url: str, tmp_path: Path, customer: str
) -> None:
    # The network path to PostgreSQL drops everything: the replica's reads neither answer
    # nor fail. Its watches must not go on with heartbeats of the last revision it read
    # while a STOP committed through another replica never reaches them.
    interval = 0.5
    common = ["--heartbeat-interval", str(interval), "--health-interval", "0.2"]
    common += ["--event-poll-interval", "0.2", "--stop-grace", "3600", "--shutdown-grace", "2"]
    cut_off_target = f"127.0.0.1:{free_port()}"
    other_target = f"127.0.0.1:{free_port()}"
    cut_off = Process(
        ["--listen", cut_off_target, "--database-url", through(postgres_url, proxy), *common],
        tmp_path / "cut-off.log",
    )
    other = Process(
        ["--listen", other_target, "--database-url", postgres_url, *common],
        tmp_path / "other.log",
    )
    try:
        await wait_serving(cut_off_target, cut_off)
        await wait_serving(other_target, other)
        async with (
            grpc.aio.insecure_channel(cut_off_target) as cut_off_channel,
            grpc.aio.insecure_channel(other_target) as other_channel,
        ):
            there = campaign_pb2_grpc.CampaignServiceStub(cut_off_channel)
            elsewhere = campaign_pb2_grpc.CampaignServiceStub(other_channel)
            campaign = await create(elsewhere, runnable_campaign(customer))
            await set_status(elsewhere, customer, campaign.id, C.STATUS_RUN)
            health = HealthFollower(cut_off_channel)
            await health.turns(SERVING, within=5)

            stream = watch(there, customer)
            snapshot, cursor = await read_snapshot(stream)
            assert [m.status for m in snapshot] == [C.STATUS_RUN]

            loop = asyncio.get_running_loop()
            proxy.blackhole()
            cut_at = loop.time()
            stopped = await set_status(elsewhere, customer, campaign.id, C.STATUS_STOP)
            assert stopped.status == C.STATUS_STOPPING
            beats_after: list[float] = []
            while True:
                try:
                    message = await stream.next(within=10)
                except grpc.aio.AioRpcError as err:
                    ended = err
                    break
                assert message is not None
                assert message.kind == W.KIND_HEARTBEAT, message
                assert message.revision < stopped.stop_revision
                beats_after.append(loop.time() - cut_at)
                # The last heartbeat vouches for a head read at most an interval before it
                # (the slack: a read in flight when the path broke, and the test's own delay).
                assert beats_after[-1] < 1.5 * interval, beats_after
            ended_after = loop.time() - cut_at
            assert ended.code() == Code.UNAVAILABLE
            assert reason_of(ended) == "LOG_UNREADABLE"
            assert ended_after < 3 * interval
            await stream.close()

            # The client fails over and resumes: the STOP reaches it there.
            resumed = watch(elsewhere, customer, after_revision=cursor)
            change = await resumed.next_change()
            failed_over_after = loop.time() - cut_at
            assert (change.revision, change.status) == (stopped.stop_revision, C.STATUS_STOPPING)
            await resumed.close()

            # The cut-off replica refuses a resume at once instead of leaving it waiting.
            again = watch(there, customer, after_revision=cursor)
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await again.next(within=2)
            assert reason_of(refused.value) == "LOG_UNREADABLE"
            await again.close()
            await health.turns(NOT_SERVING, within=10)

            # The path comes back. The proxy dropped what was sent meanwhile, where TCP would
            # have sent it again: the connections it held are reset, as TCP ends them once
            # its retries run out, and the replica connects anew.
            proxy.cut()
            proxy.restore()
            await health.turns(SERVING, within=15)

            async def resumes_there() -> bool:
                s = watch(there, customer, after_revision=cursor)
                try:
                    m = await s.next_change()
                    return bool(m.revision == stopped.stop_revision)
                except grpc.aio.AioRpcError:
                    return False
                finally:
                    await s.close()

            await eventually(resumes_there, within=15)
            await health.close()
        print(
            f"\npartitioned replica: last heartbeat {max(beats_after, default=0):.2f} s after "
            f"the cut, streams ended {ended_after:.2f} s after it (heartbeat interval "
            f"{interval} s), the STOP reached the watcher through another replica "
            f"{failed_over_after:.2f} s after the cut"
        )
        for proc in (cut_off, other):
            proc.terminate()
            assert await proc.exit_code(within=15) == 0
    finally:
        proxy.restore()
        cut_off.kill()
        other.kill()


async def test_a_replica_on_a_slow_path_to_postgresql_says_so_in_its_readiness_alone(
    proxy: TcpProxy, postgres_url: str, tmp_path: Path, customer: str
) -> None:
    """100 ms each way between one replica and the database: it still serves (liveness ""
    SERVING), and its readiness turns NOT_SERVING so that a load balancer sends its calls to
    replicas on faster paths; back to SERVING when the path is."""
    proc, target = serve(postgres_url, proxy, tmp_path)
    try:
        await wait_serving(target, proc)
        async with grpc.aio.insecure_channel(target) as channel:
            health = health_pb2_grpc.HealthStub(channel)

            async def status(name: str) -> int:
                answer = await health.Check(health_pb2.HealthCheckRequest(service=name), timeout=5)
                return int(answer.status)

            async def ready_is(wanted: int) -> bool:
                return await status(SERVICE) == wanted

            proxy.delay = 0.1
            await eventually(lambda: ready_is(NOT_SERVING), within=20)
            assert await status("") == SERVING
            stub = campaign_pb2_grpc.CampaignServiceStub(channel)
            assert (await create(stub, runnable_campaign(customer))).id
            proxy.delay = 0.0
            await eventually(lambda: ready_is(SERVING), within=20)
        assert "the database answers this server slowly (DATABASE_SLOW" in proc.log
    finally:
        proc.kill()
