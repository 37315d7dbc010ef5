"""The database changes under a running server: restored from an older backup, replaced,
deleted, dropped and made anew. The server notices, says so, and serves nothing of before.

A restore is done the way an operator does it while the server runs: on SQLite with the
backup API into the live file (the same file, other contents) or by putting another file in
its place; on PostgreSQL by replacing every row in one transaction (as pg_restore --clean
does, and as a lagging standby promoted looks: the same database, an older log), or by
dropping the database and making it anew.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import grpc
import psycopg
import pytest
from psycopg import sql

from campaign_grpc.ops.server import App
from campaign_grpc_client.v1 import campaign_pb2 as pb
from campaign_grpc_client.v1 import campaign_pb2_grpc
from e2e_helpers import (
    W,
    create,
    details_of,
    eventually,
    fails,
    get,
    read_snapshot,
    run,
    set_status,
    watch,
)
from factories import new_id, runnable_campaign

Code = grpc.StatusCode
C = pb.Campaign
Stub = campaign_pb2_grpc.CampaignServiceStub
ON_SQLITE = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
ON_POSTGRESQL = pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)


def sqlite_path(url: str) -> Path:
    return Path(url.removeprefix("sqlite:///"))


def copy_sqlite(source: Path, target: Path) -> None:
    """Copies a live database file page by page through SQLite's backup API, which takes
    the locks it needs: the target may be in use (a restore) or new (a backup)."""
    with (
        contextlib.closing(sqlite3.connect(source)) as src,
        contextlib.closing(sqlite3.connect(target)) as dst,
    ):
        src.backup(dst)


@contextlib.contextmanager
def pg(url: str) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(url) as conn:
        yield conn


def pg_backup(url: str) -> dict[str, tuple[list[str], list[tuple[Any, ...]]]]:
    """Every row of every table of the service, as pg_dump --data-only would."""
    saved = {}
    with pg(url) as conn:
        tables = [
            name
            for (name,) in conn.execute(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'"
            )
        ]
        for table in tables:
            cursor = conn.execute(sql.SQL("SELECT * FROM {}").format(sql.Identifier(table)))
            assert cursor.description is not None
            saved[table] = ([d.name for d in cursor.description], cursor.fetchall())
    return saved


def pg_restore(url: str, saved: dict[str, tuple[list[str], list[tuple[Any, ...]]]]) -> None:
    with pg(url) as conn:
        for table in saved:
            conn.execute(sql.SQL("DELETE FROM {}").format(sql.Identifier(table)))
        for table, (columns, rows) in saved.items():
            insert = sql.SQL("INSERT INTO {} ({}) VALUES ({})").format(
                sql.Identifier(table),
                sql.SQL(", ").join(map(sql.Identifier, columns)),
                sql.SQL(", ").join(sql.Placeholder() * len(columns)),
            )
            for row in rows:
                conn.execute(insert, row)


class Backup:
    """A copy of the server's database, to be put back later."""

    def __init__(self, url: str, tmp_path: Path) -> None:
        self._url = url
        self._file = tmp_path / "backup.db"
        if url.startswith("sqlite:///"):
            copy_sqlite(sqlite_path(url), self._file)
            self._rows = None
        else:
            self._rows = pg_backup(url)

    def restore(self) -> None:
        if self._rows is None:
            copy_sqlite(self._file, sqlite_path(self._url))
        else:
            pg_restore(self._url, self._rows)

    def put_in_place(self) -> None:
        """Another file where the database was, as a restore by copying files does: the old
        file goes, with its WAL and shared memory, and the backup takes its name."""
        live = sqlite_path(self._url)
        for suffix in ("-wal", "-shm"):
            Path(f"{live}{suffix}").unlink(missing_ok=True)
        self._file.replace(live)


async def rename(stub: Stub, customer: str, campaign_id: str, name: str, etag: str = "") -> Any:
    campaign = pb.Campaign(customer_id=customer, id=campaign_id, name=name, etag=etag)
    response = await stub.UpdateCampaign(
        pb.UpdateCampaignRequest(campaign=campaign, update_mask={"paths": ["name"]}), timeout=10
    )
    return response.campaign


async def end_of(stream: Any) -> grpc.aio.AioRpcError:
    """How the stream ends, reading past heartbeats; nothing else may come first."""
    while True:
        try:
            message = await stream.next(within=10)
        except grpc.aio.AioRpcError as err:
            return err
        assert message is not None, "the stream ended OK"
        assert message.kind == W.KIND_HEARTBEAT, f"a change from a database that is gone: {message}"


async def ends_with_database_changed(stream: Any) -> dict[str, str]:
    """Reads the stream to its end, which must be OUT_OF_RANGE DATABASE_CHANGED; its
    metadata."""
    err = await end_of(stream)
    assert err.code() == Code.OUT_OF_RANGE, err.details()
    info = details_of(err).info
    assert info.reason == "DATABASE_CHANGED"
    assert "snapshot" in err.details()
    return dict(info.metadata)


async def resume_until_answered(stub: Stub, customer: str, after: int) -> grpc.aio.AioRpcError:
    """How a resume from after ends, resumed again (bounded) while the server cannot read
    the log yet."""
    for _ in range(100):
        stream = watch(stub, customer, after_revision=after)
        try:
            err = await end_of(stream)
        finally:
            await stream.close()
        if details_of(err).info.reason != "LOG_UNREADABLE":
            return err
        await asyncio.sleep(0.1)
    raise AssertionError("the server never read the log again")


async def writes_again(stub: Stub, campaign: pb.Campaign) -> pb.Campaign:
    """A create, retried as a client does while the server answers UNAVAILABLE: the first
    write after a change may find it before the server has recognised the new database."""
    created: list[pb.Campaign] = []
    codes: list[Code] = []

    async def attempt() -> bool:
        try:
            created.append(await create(stub, campaign, request_id=request))
        except grpc.aio.AioRpcError as err:
            codes.append(err.code())
            return False
        return True

    request = new_id()
    await eventually(attempt, within=10)
    assert set(codes) <= {Code.UNAVAILABLE}
    return created[0]


async def test_a_database_restored_from_an_older_backup_is_noticed_and_nothing_of_before_is_served(
    stub: Stub, customer: str, database_url: str, tmp_path: Path
) -> None:
    await restored_under_the_server(
        stub, customer, lambda: Backup(database_url, tmp_path), "restore"
    )


@ON_SQLITE
async def test_an_older_sqlite_file_put_in_place_is_noticed_and_nothing_of_before_is_served(
    stub: Stub, customer: str, database_url: str, tmp_path: Path
) -> None:
    await restored_under_the_server(
        stub, customer, lambda: Backup(database_url, tmp_path), "put_in_place"
    )


async def restored_under_the_server(
    stub: Stub, customer: str, take_backup: Callable[[], Backup], how: str
) -> None:
    """Takes a backup, changes a campaign and the log, puts the backup back (its method
    how) and checks what the server's clients see then."""
    a = await create(stub, runnable_campaign(customer, name="at the backup"))  # revision 1
    backup = take_backup()
    # After the backup: newer versions of a, and three changes in the log.
    read = await rename(stub, customer, a.id, "after the backup")  # revision 2
    assert (await get(stub, customer, a.id)).name == "after the backup"  # cached now
    await set_status(stub, customer, a.id, C.STATUS_RUN)  # revision 3
    await set_status(stub, customer, a.id, C.STATUS_STOP, force=True)  # revision 4
    listed = await stub.ListCampaigns(pb.ListCampaignsRequest(customer_id=customer), timeout=10)
    assert [c.name for c in listed.campaigns] == ["after the backup"]
    stream = watch(stub, customer)
    _, at = await read_snapshot(stream)
    assert at == 4

    getattr(backup, how)()

    # The stream ends, telling the client to start again from a snapshot, instead of waiting
    # silently until the restored log passes revision 4.
    metadata = await ends_with_database_changed(stream)
    assert metadata == {"head_revision": "1", "last_revision": "4"}
    await stream.close()

    # Nothing cached from before is served: the campaign is as the backup has it.
    assert (await get(stub, customer, a.id)).name == "at the backup"
    listed = await stub.ListCampaigns(pb.ListCampaignsRequest(customer_id=customer), timeout=10)
    assert [c.name for c in listed.campaigns] == ["at the backup"]

    # Another writer renames it: its second version again, as the one read before the
    # restore was, with other contents. The etag read before names those, and matches
    # nothing now.
    again = await rename(stub, customer, a.id, "after the restore")  # revision 2 again
    assert again.etag != read.etag
    err = await fails(rename(stub, customer, a.id, "lost update", etag=read.etag), Code.ABORTED)
    assert err.info.reason == "ETAG_MISMATCH"
    assert (await get(stub, customer, a.id)).name == "after the restore"

    # A new stream starts from the restored log, and its heartbeats never claim revision 4.
    stream = watch(stub, customer)
    _, at = await read_snapshot(stream)
    assert at == 2
    heartbeat = await stream.next(within=5)
    assert heartbeat.kind == W.KIND_HEARTBEAT
    assert heartbeat.revision == 2
    b = await writes_again(stub, runnable_campaign(customer))
    change = await stream.next_change()
    assert (change.campaign_id, change.revision) == (b.id, 3)
    await stream.close()


async def test_streams_resumed_from_before_a_restore_are_told_so(
    server: App, stub: Stub, customer: str, database_url: str, tmp_path: Path
) -> None:
    a = await create(stub, runnable_campaign(customer))
    backup = Backup(database_url, tmp_path)
    await set_status(stub, customer, a.id, C.STATUS_RUN)
    await set_status(stub, customer, a.id, C.STATUS_STOP, force=True)
    resumed = watch(stub, customer, after_revision=1)
    assert (await resumed.next_change()).revision == 2
    assert (await resumed.next_change()).revision == 3
    backup.restore()
    await ends_with_database_changed(resumed)
    await resumed.close()
    # Resuming from revision 3, which the restored log does not reach, is out of range too.
    again = watch(stub, customer, after_revision=3)
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await again.next()
    assert details_of(raised.value).info.reason == "REVISION_AHEAD_OF_LOG"
    await again.close()


@ON_SQLITE
async def test_sqlite_files_deleted_while_serving_acknowledge_no_write(
    server: App, stub: Stub, customer: str, database_url: str
) -> None:
    a = await create(stub, runnable_campaign(customer))
    live = sqlite_path(database_url)
    for path in (live, Path(f"{live}-wal"), Path(f"{live}-shm")):
        path.unlink(missing_ok=True)

    for _ in range(3):
        err = await fails(create(stub, runnable_campaign(customer)), Code.UNAVAILABLE)
        assert err.info.reason == "DATABASE_FILE_MISSING"
    err = await fails(get(stub, customer, a.id), Code.UNAVAILABLE)
    assert err.info.reason == "DATABASE_FILE_MISSING"
    # The server made no new, empty file behind the client's back.
    assert not live.exists()


@ON_SQLITE
async def test_a_sqlite_file_deleted_under_a_write_in_flight_is_not_acknowledged(
    server: App, stub: Stub, customer: str, database_url: str
) -> None:
    """A commit that lands in a file deleted meanwhile is answered UNAVAILABLE: it is lost."""
    live = sqlite_path(database_url)
    acknowledged: list[str] = []
    refused: list[str] = []  # code and reason of each

    async def write_many() -> None:
        for _ in range(200):
            try:
                acknowledged.append((await create(stub, runnable_campaign(customer))).id)
            except grpc.aio.AioRpcError as err:
                refused.append(f"{err.code().name} {details_of(err).info.reason}")

    writers = [asyncio.create_task(write_many()) for _ in range(4)]

    async def some_acknowledged() -> bool:
        return len(acknowledged) >= 20

    await eventually(some_acknowledged)
    for path in (live, Path(f"{live}-wal"), Path(f"{live}-shm")):
        path.unlink(missing_ok=True)
    count = len(acknowledged)
    await asyncio.gather(*writers)
    assert refused
    assert set(refused) <= {
        "UNAVAILABLE DATABASE_FILE_MISSING",
        "UNAVAILABLE DATABASE_FILE_REPLACED",
    }
    # What was acknowledged after the deletion would be in a file that is gone: nothing,
    # but for the writes already committed when the files went (a batch at most).
    assert len(acknowledged) - count <= 4


@ON_POSTGRESQL
async def test_a_postgresql_database_dropped_and_made_anew_is_another_database(
    server: App, stub: Stub, database_url: str, customer: str
) -> None:
    postgres_url = database_url
    a = await create(stub, runnable_campaign(customer))
    await set_status(stub, customer, a.id, C.STATUS_RUN)
    assert (await get(stub, customer, a.id)).status == C.STATUS_RUN  # cached
    stream = watch(stub, customer)
    await read_snapshot(stream)

    name = urlsplit(postgres_url).path.lstrip("/")
    admin_url = urlsplit(postgres_url)._replace(path="/postgres").geturl()
    with psycopg.connect(admin_url, autocommit=True) as admin:
        admin.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    code, out = run("migrate", "--database-url", postgres_url)
    assert code == 0, out

    err = await end_of(stream)
    await stream.close()
    if details_of(err).info.reason == "LOG_UNREADABLE":
        # The database had no schema for longer than two heartbeat intervals: there was no
        # log to read. A resume once it has one is told that its revision is not in it.
        err = await resume_until_answered(stub, customer, 2)
        assert err.code() == Code.OUT_OF_RANGE, err.details()
        assert details_of(err).info.reason in {"DATABASE_CHANGED", "REVISION_AHEAD_OF_LOG"}
    else:
        assert err.code() == Code.OUT_OF_RANGE, err.details()
        info = details_of(err).info
        assert info.reason == "DATABASE_CHANGED"
        assert info.metadata["last_revision"] == "2"
    # Nothing of the database before is served from the caches.
    err = await fails(get(stub, customer, a.id), Code.NOT_FOUND)
    assert err.info.reason == "CAMPAIGN_NOT_FOUND"
    # A campaign made anew with the same id is another one: the old etag does not match.
    again = await writes_again(stub, runnable_campaign(customer, id=a.id))
    assert again.id == a.id
    assert again.etag != a.etag
