"""serve --no-migrate: the runtime role needs no right to change tables. The schema is brought up
by `campaign-grpc migrate` (a migration Job, with the owner's role); a server that does not
migrate refuses a schema that is not its release's, and serves one that is, on PostgreSQL with a
role that may only read and write rows."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import grpc
import psycopg
import pytest
from psycopg import sql

from campaign_grpc.storage.schema import SCHEMA_VERSION
from campaign_grpc_client.v1 import campaign_pb2 as pb
from campaign_grpc_client.v1 import campaign_pb2_grpc
from e2e_helpers import Process, free_port, run, wait_serving
from factories import runnable_campaign


def serve(database_url: str, log: Path, *flags: str) -> tuple[Process, str]:
    target = f"127.0.0.1:{free_port()}"
    args = ["--listen", target, "--database-url", database_url, *flags]
    return Process(args, log), target


async def creates_and_reads(target: str, customer: str) -> None:
    async with grpc.aio.insecure_channel(target) as channel:
        stub = campaign_pb2_grpc.CampaignServiceStub(channel)
        request = pb.CreateCampaignRequest(campaign=runnable_campaign(customer))
        created = (await stub.CreateCampaign(request, timeout=10)).campaign
        read = await stub.GetCampaign(
            pb.GetCampaignRequest(customer_id=customer, id=created.id), timeout=10
        )
        assert read.campaign.etag == created.etag


async def refuses_to_serve(url: str, tmp_path: Path) -> None:
    refused, _ = serve(url, tmp_path / "refused.log", "--no-migrate")
    try:
        assert await refused.exit_code(within=30) == 1
    finally:
        refused.kill()
    assert "run `campaign-grpc migrate`" in refused.log, refused.log
    assert "Traceback" not in refused.log


async def serves_without_migrating(url: str, tmp_path: Path, customer: str) -> None:
    proc, target = serve(url, tmp_path / "served.log", "--no-migrate")
    try:
        await wait_serving(target, proc)
        await creates_and_reads(target, customer)
    finally:
        proc.terminate()
        assert await proc.exit_code(within=15) == 0, proc.log
        proc.kill()
    assert "Traceback" not in proc.log


async def refused_then_served_once_migrated(url: str, tmp_path: Path, customer: str) -> None:
    await refuses_to_serve(url, tmp_path)

    code, output = run("migrate", "--database-url", url)
    assert code == 0, output
    assert f"schema version {SCHEMA_VERSION}" in output

    await serves_without_migrating(url, tmp_path, customer)


async def test_sqlite_without_migration_is_refused_until_migrated(
    sqlite_url: str, tmp_path: Path, customer: str
) -> None:
    await refused_then_served_once_migrated(sqlite_url, tmp_path, customer)


@pytest.fixture
def rows_only_role(postgres_url: str) -> Iterator[str]:
    """A login role that may read and write the rows of the migrated tables, and nothing else:
    no CREATE on the schema, owner of nothing."""
    role = f"campaign_runtime_{uuid.uuid4().hex[:12]}"
    database = urlsplit(postgres_url).path.lstrip("/")
    with psycopg.connect(postgres_url, autocommit=True) as owner:
        owner.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(role)))
        owner.execute(sql.SQL("REVOKE CREATE ON SCHEMA public FROM PUBLIC"))
    try:
        yield role
    finally:
        with psycopg.connect(postgres_url, autocommit=True) as owner:
            owner.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(role)))
            owner.execute(
                sql.SQL("REVOKE ALL ON DATABASE {} FROM {}").format(
                    sql.Identifier(database), sql.Identifier(role)
                )
            )
        # The database (dropped after the test) holds no more of the role's grants.
        with psycopg.connect(postgres_url, autocommit=True) as owner:
            owner.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))


def grant_rows(postgres_url: str, role: str) -> None:
    with psycopg.connect(postgres_url, autocommit=True) as owner:
        who = sql.Identifier(role)
        owner.execute(
            sql.SQL(
                "GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {}"
            ).format(who)
        )
        owner.execute(
            sql.SQL("GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO {}").format(who)
        )


async def test_postgresql_runtime_role_without_ddl_rights_serves_once_migrated(
    postgres_url: str, rows_only_role: str, tmp_path: Path, customer: str
) -> None:
    as_runtime = (
        urlsplit(postgres_url)
        ._replace(
            netloc=f"{rows_only_role}@{urlsplit(postgres_url).hostname}:{urlsplit(postgres_url).port}"
        )
        .geturl()
    )
    # The runtime role cannot migrate: a server that tried would fail to create tables.
    code, output = run("migrate", "--database-url", as_runtime)
    assert code != 0, output
    assert "permission denied" in output, output

    await refuses_to_serve(as_runtime, tmp_path)

    code, output = run("migrate", "--database-url", postgres_url)  # the owner, as a Job would
    assert code == 0, output
    grant_rows(postgres_url, rows_only_role)

    await serves_without_migrating(as_runtime, tmp_path, customer)


def test_no_migrate_is_the_switch_turned_off() -> None:
    code, output = run("check-config", "--no-migrate", "--database-url", "sqlite:///x.db")
    assert code == 0, output
    assert any(line.split()[:2] == ["migrate", "off"] for line in output.splitlines()), output
