"""Three replicas on PostgreSQL behind HAProxy, from the image: the steps of docs/operating/
deploy.md in their order. The image (`make image`), a database with an owner and a rows-only
role, `migrate` once as the owner, three `serve --no-migrate` containers as the rows-only role,
deploy/haproxy/haproxy.cfg in front; then, through the proxy, health, campaigns created and
read back, a watch that sees a change made through it, every replica serving some of the calls,
and one replica stopped with SIGTERM while calls through the proxy go on answering.

Needs podman, runc and mmdebstrap from Debian, as root (see tests/e2e/test_image.py), haproxy, and
PostgreSQL (CAMPAIGN_GRPC_TEST_POSTGRES_URL, a superuser's URL). About 40 s once the image is
built.
"""

from __future__ import annotations

import asyncio
import re
import subprocess
import time
import urllib.request
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import grpc
import psycopg
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from psycopg import sql

import test_image
from campaign_grpc_client.v1 import campaign_pb2 as pb
from campaign_grpc_client.v1 import campaign_pb2_grpc
from e2e_helpers import create, free_port, get, set_status, wait_serving, watch
from factories import runnable_campaign
from test_front_proxy_e2e import CONFIG, haproxy
from test_image import Container, assert_stopped_gracefully, podman, podman_may_fail
from toolchains import ROOT, missing_commands, require

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1320)]

# The image of this checkout (`make image`, or podman's cache when it is current).
image = test_image.image

DOC = ROOT / "docs" / "operating" / "deploy.md"
REPLICAS = 3
# The names and passwords the docs use; the roles here get a suffix of their own, since roles
# belong to the whole PostgreSQL server.
OWNER, APP = "campaigns_owner", "campaigns_app"
OWNER_PASSWORD, APP_PASSWORD = "owner-secret", "app-secret"
# Step 2, as the owner: the rows' rights on every table `migrate` creates.
DEFAULT_PRIVILEGES = (
    "ALTER DEFAULT PRIVILEGES FOR ROLE {owner} IN SCHEMA public "
    "GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO {app};",
    "ALTER DEFAULT PRIVILEGES FOR ROLE {owner} IN SCHEMA public "
    "GRANT USAGE, SELECT ON SEQUENCES TO {app};",
)
W = pb.WatchStatusResponse


@dataclass
class Database:
    owner_url: str
    app_url: str


@dataclass
class Replica:
    box: Container
    health: str  # its plaintext health port, HOST:PORT
    metrics: str  # its /metrics, HOST:PORT


def test_the_docs_print_these_steps() -> None:
    """The statements and settings this test uses are those the docs print."""
    doc = DOC.read_text()
    for statement in DEFAULT_PRIVILEGES:
        assert statement.format(owner=OWNER, app=APP) in doc
    for variable in ("CAMPAIGN_GRPC_SERVER=", "CAMPAIGN_GRPC_SERVER_2=", "CAMPAIGN_GRPC_SERVER_3="):
        assert variable in doc
        assert "${" + variable.rstrip("=") in CONFIG.read_text()
    for step in ("campaign-grpc migrate", "serve --no-migrate", "podman stop --time 30"):
        assert step in doc


def with_user(url: str, user: str, password: str) -> str:
    parts = urlsplit(url)
    host = parts.netloc.rsplit("@", 1)[-1]
    return parts._replace(netloc=f"{user}:{password}@{host}").geturl()


@pytest.fixture
def database(postgres_url: str) -> Iterator[Database]:
    """Step 2: the database owned by the owner's role, and the servers' role with the owner's
    default privileges (the test's database stands for `CREATE DATABASE campaigns`)."""
    suffix = uuid.uuid4().hex[:10]
    owner, app = f"{OWNER}_{suffix}", f"{APP}_{suffix}"
    name = urlsplit(postgres_url).path.lstrip("/")
    with psycopg.connect(postgres_url, autocommit=True) as su:
        su.execute(sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(
            sql.Identifier(owner), sql.Literal(OWNER_PASSWORD)))  # fmt: skip
        su.execute(sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(
            sql.Identifier(app), sql.Literal(APP_PASSWORD)))  # fmt: skip
        su.execute(sql.SQL("ALTER DATABASE {} OWNER TO {}").format(
            sql.Identifier(name), sql.Identifier(owner)))  # fmt: skip
    owner_url = with_user(postgres_url, owner, OWNER_PASSWORD)
    try:
        with psycopg.connect(owner_url, autocommit=True) as as_owner:
            for statement in DEFAULT_PRIVILEGES:
                as_owner.execute(statement.format(owner=owner, app=app))
        yield Database(owner_url, with_user(postgres_url, app, APP_PASSWORD))
    finally:
        with psycopg.connect(postgres_url, autocommit=True) as su:
            su.execute(sql.SQL("ALTER DATABASE {} OWNER TO CURRENT_USER").format(
                sql.Identifier(name)))  # fmt: skip
            # One at a time: the owner's default privileges name the other role.
            for role in (owner, app):
                su.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(role)))
            su.execute(sql.SQL("DROP ROLE {}, {}").format(
                sql.Identifier(owner), sql.Identifier(app)))  # fmt: skip


def start_replica(image: str, name: str, database_url: str) -> Replica:
    """Step 4's command for one replica, on free loopback ports."""
    listen, health, metrics = (f"127.0.0.1:{free_port()}" for _ in range(3))
    podman(
        "run", "-d", "--name", name, "--network=host",
        "-e", f"CAMPAIGN_GRPC_DATABASE_URL={database_url}",
        "-e", f"CAMPAIGN_GRPC_LISTEN={listen}",
        "-e", f"CAMPAIGN_GRPC_HEALTH_LISTEN={health}",
        "-e", f"CAMPAIGN_GRPC_METRICS_LISTEN={metrics}",
        image, "campaign-grpc", "serve", "--no-migrate",
    )  # fmt: skip
    return Replica(Container(name, listen), health, metrics)


@dataclass
class Fleet:
    proxy: str
    replicas: list[Replica]
    proxy_log: Path


@pytest.fixture
async def fleet(image: str, database: Database, tmp_path: Path) -> AsyncIterator[Fleet]:
    require(missing_commands("haproxy"), "haproxy")
    # Step 3: the schema, once, as the owner.
    migrated = podman(
        "run", "--rm", "--network=host", "-e", f"CAMPAIGN_GRPC_DATABASE_URL={database.owner_url}",
        image, "campaign-grpc", "migrate", timeout=120,
    )  # fmt: skip
    assert "schema version" in migrated, migrated

    prefix = f"campaign-grpc-fleet-{uuid.uuid4().hex[:8]}"
    replicas: list[Replica] = []
    proxy: subprocess.Popen[bytes] | None = None
    try:
        for i in range(1, REPLICAS + 1):
            replicas.append(start_replica(image, f"{prefix}-{i}", database.app_url))
        for replica in replicas:
            try:
                await wait_serving(replica.box.target, within=60)
                await wait_serving(replica.health, within=10)
            except AssertionError as e:
                pytest.fail(f"{e}\n{replica.box.name}'s log:\n{replica.box.logs()}")

        # Step 5: HAProxy, the replicas' addresses in its environment.
        listen = f"127.0.0.1:{free_port()}"
        targets = [replica.box.target for replica in replicas]
        log = tmp_path / "haproxy.log"
        proxy = haproxy(listen, targets[0], log, *targets[1:])
        await wait_serving(listen, within=10)
        yield Fleet(listen, replicas, log)
    finally:
        if proxy is not None:
            proxy.terminate()
            proxy.wait(10)
        for replica in replicas:
            podman_may_fail("rm", "--force", "--time", "0", replica.box.name)


def handled(replica: Replica, method: str) -> float:
    """The calls of a method the replica answered, from its /metrics."""
    with urllib.request.urlopen(f"http://{replica.metrics}/metrics", timeout=5) as answer:
        text = answer.read().decode()
    pattern = rf'^grpc_server_handled_total{{[^}}]*grpc_method="{method}"[^}}]*}} (\S+)$'
    return sum(float(value) for value in re.findall(pattern, text, re.M))


async def test_three_replicas_behind_the_proxy_serve_and_one_stops_unnoticed(
    fleet: Fleet, customer: str
) -> None:
    async with grpc.aio.insecure_channel(fleet.proxy) as channel:
        stub = campaign_pb2_grpc.CampaignServiceStub(channel)
        health = health_pb2_grpc.HealthStub(channel)
        for service in ("", "campaign.v1.CampaignService"):
            answer = await health.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
            assert answer.status == health_pb2.HealthCheckResponse.SERVING

        # Step 6: a watch, campaigns created at once (the proxy spreads them), read back.
        stream = watch(stub, customer)
        message = await stream.next_change(10)
        while message.kind != W.KIND_SNAPSHOT_END:
            message = await stream.next_change(10)
        created = await asyncio.gather(
            *(create(stub, runnable_campaign(customer)) for _ in range(24))
        )
        for campaign in created:
            assert await get(stub, customer, campaign.id) == campaign
        counts = [handled(r, "CreateCampaign") for r in fleet.replicas]
        assert all(count > 0 for count in counts), counts
        assert sum(counts) == len(created), counts

        # A change made through the proxy reaches the watch, whichever replica each is on.
        ran = await set_status(stub, customer, created[0].id, pb.Campaign.STATUS_RUN)
        deadline = time.monotonic() + 15
        while True:
            message = await stream.next_change(max(0.1, deadline - time.monotonic()))
            assert message is not None
            if message.campaign_id == ran.id and message.status == pb.Campaign.STATUS_RUN:
                break
        await stream.close()
        created[0] = ran

        # Step 7: one replica stopped with SIGTERM; calls through the proxy all answered, while
        # it stops and after.
        stopped = fleet.replicas[1]
        stopping = asyncio.create_task(asyncio.to_thread(assert_stopped_gracefully, stopped.box))
        answered, after = 0, None
        while after is None or time.monotonic() < after + 3:
            campaign = created[answered % len(created)]
            assert await get(stub, customer, campaign.id) == campaign
            answered += 1
            if after is None and stopping.done():
                after = time.monotonic()
        await stopping
        assert answered > 20, answered
        # Its health checks took it out (s2: the second server of each backend).
        assert "Server calls/s2 is DOWN" in fleet.proxy_log.read_text()
