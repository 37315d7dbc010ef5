"""Resume points that know their timeline: a log that forked refuses the ones beyond the fork.

A lagging standby promoted, or a SQLite file replaced by an older copy, holds the log up to
some revision and then goes on with changes of its own. A watch resumed with a revision
received from the log before the fork must be refused (OUT_OF_RANGE, LOG_TIMELINE_CHANGED)
rather than answered from the new log's later revisions, which name other changes; one from
before the fork is answered as usual.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import grpc
import psycopg
import pytest

from campaign_grpc.ops.server import App
from campaign_grpc_client.v1 import campaign_pb2 as pb
from campaign_grpc_client.v1 import campaign_pb2_grpc
from e2e_helpers import Stream, W, create, details_of, eventually, quick_settings, set_status
from factories import runnable_campaign
from ledger import C, Code
from pg_cluster import Cluster, clusters_dir, missing

Stub = campaign_pb2_grpc.CampaignServiceStub


def resume(stub: Stub, customer: str, after: int, timeline: str) -> Stream:
    request = pb.WatchStatusRequest(customer_id=customer, after_revision=after, timeline=timeline)
    return Stream(stub.WatchStatus(request))


async def refusal(stream: Stream) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stream.next()
    await stream.close()
    return info.value


async def end_of(stream: Stream) -> grpc.aio.AioRpcError:
    """How the stream ends, past its heartbeats."""
    while True:
        try:
            m = await stream.next()
        except grpc.aio.AioRpcError as err:
            await stream.close()
            return err
        assert m.kind == W.KIND_HEARTBEAT, m


def copy_sqlite(source: Path, target: Path) -> None:
    """Page by page through SQLite's backup API, which takes the locks it needs."""
    with (
        contextlib.closing(sqlite3.connect(source)) as src,
        contextlib.closing(sqlite3.connect(target)) as dst,
    ):
        src.backup(dst)


async def floor_reached(app: App, revision: int) -> bool:
    return app.store.identity.floor >= revision


async def snapshot_end(stream: Stream) -> pb.WatchStatusResponse:
    while (m := await stream.next()).kind != W.KIND_SNAPSHOT_END:
        assert m.kind == W.KIND_SNAPSHOT
    return m


async def changes(stub: Stub, customer: str, how_many: int) -> None:
    """how_many changes of a campaign of customer's."""
    c = await create(stub, runnable_campaign(customer))
    for i in range(how_many - 1):
        await set_status(stub, customer, c.id, C.STATUS_STOP if i % 2 else C.STATUS_RUN, True)


@pytest.fixture
async def stub_of() -> AsyncIterator[Callable[[App], Stub]]:
    channels: list[grpc.aio.Channel] = []

    def open_stub(app: App) -> Stub:
        channels.append(grpc.aio.insecure_channel(f"127.0.0.1:{app.port}"))
        return Stub(channels[-1])

    yield open_stub
    for channel in channels:
        await channel.close()


async def check_the_fork(
    after: Stub, customer: str, lost_revision: int, old: str, fork: int
) -> None:
    """What a client resuming on the log that forked at fork (timeline old before) sees."""
    # A revision the old log sent beyond the fork: refused, even once the new log has
    # passed it with changes of its own.
    err = await refusal(resume(after, customer, lost_revision, old))
    assert err.code() == Code.OUT_OF_RANGE, err.details()
    info = details_of(err).info
    assert info.reason == "LOG_TIMELINE_CHANGED"
    assert info.metadata["forked_at_revision"] == str(fork)
    assert info.metadata["timeline"] == old
    assert "snapshot" in err.details()

    # From the fork itself: answered, with the new log's changes, named by its timeline.
    stream = resume(after, customer, fork, old)
    first = await stream.next()
    await stream.close()
    assert first.kind == W.KIND_CHANGE
    assert first.revision == fork + 1
    assert first.timeline not in ("", old)

    # The timeline of the new log is good for any revision of it.
    stream = resume(after, customer, lost_revision, first.timeline)
    assert (await stream.next()).revision > lost_revision
    await stream.close()


@pytest.mark.skipif(bool(missing()), reason=missing() or "-")
async def test_a_promoted_standby_refuses_resume_points_beyond_its_fork(
    start_server: Callable[..., Awaitable[App]],
    stub_of: Callable[[App], Stub],
    customer: str,
) -> None:
    with clusters_dir() as root:
        primary, standby = Cluster(root, "primary"), Cluster(root, "standby")
        try:
            await asyncio.to_thread(primary.init)
            await asyncio.to_thread(primary.start)
            with psycopg.connect(primary.url(), autocommit=True) as admin:
                admin.execute("CREATE DATABASE campaigns")
            app = await start_server(quick_settings(primary.url("campaigns")))
            stub = stub_of(app)
            await changes(stub, customer, 3)
            watching = resume(stub, customer, 0, "")
            end = await snapshot_end(watching)
            old, fork = end.timeline, end.revision
            assert old

            # The standby is a copy as of now; what the primary writes next it never gets.
            await asyncio.to_thread(standby.backup_of, primary)
            await changes(stub, customer, 5)
            received = [await watching.next_change() for _ in range(5)]
            assert {m.timeline for m in received} == {old}
            lost_revision = received[-1].revision
            await watching.close()
            await app.stop()
            await asyncio.to_thread(primary.stop)

            await asyncio.to_thread(standby.start)
            await asyncio.to_thread(standby.promote)
            promoted = await start_server(quick_settings(standby.url("campaigns")))
            after = stub_of(promoted)
            # The new log goes past the revisions the old one sent, with other changes.
            await changes(after, customer, 8)
            await check_the_fork(after, customer, lost_revision, old, fork)

            # A client that sends no timeline (an older one) is answered as before.
            stream = resume(after, customer, lost_revision, "")
            assert (await stream.next()).revision == lost_revision + 1
            await stream.close()

            # ListCampaignEvents names the timeline of its events.
            page = await after.ListCampaignEvents(
                pb.ListCampaignEventsRequest(customer_id=customer)
            )
            assert page.timeline not in ("", old)
            await promoted.stop()
        finally:
            await asyncio.to_thread(standby.stop)
            await asyncio.to_thread(primary.stop)


async def test_a_sqlite_file_replaced_by_an_older_copy_refuses_resume_points_beyond_it(
    start_server: Callable[..., Awaitable[App]],
    stub_of: Callable[[App], Stub],
    customer: str,
    tmp_path: Path,
) -> None:
    path = tmp_path / "campaigns.db"
    app = await start_server(quick_settings(f"sqlite:///{path}"))
    stub = stub_of(app)
    await changes(stub, customer, 3)
    watching = resume(stub, customer, 0, "")
    end = await snapshot_end(watching)
    old, fork = end.timeline, end.revision
    copy_sqlite(path, tmp_path / "copy.db")
    await changes(stub, customer, 5)
    received = [await watching.next_change() for _ in range(5)]
    lost_revision = received[-1].revision

    # The server checks its log once a poll (0.1 s here): a restore within the same instant
    # as the last write would be a race no real restore runs.
    await eventually(lambda: floor_reached(app, lost_revision))
    # The older copy restored into the live file.
    copy_sqlite(tmp_path / "copy.db", path)
    err = await end_of(watching)
    assert details_of(err).info.reason == "DATABASE_CHANGED"

    async def writes() -> bool:
        try:
            await changes(stub, customer, 8)
        except grpc.aio.AioRpcError as failure:
            # Until the server has recognised the restored file.
            if failure.code() != Code.UNAVAILABLE:
                raise
            return False
        return True

    await eventually(writes)
    await check_the_fork(stub, customer, lost_revision, old, fork)
