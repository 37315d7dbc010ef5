"""Shared fixtures: a domain on a real temporary SQLite file, and a real server on a socket.

A server's database is SQLite and, when CAMPAIGN_GRPC_TEST_POSTGRES_URL names a PostgreSQL
server, PostgreSQL too: every test that takes `database_url` (and so `settings`, `server`,
`stub`) runs once on each, each run in a database of its own.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from urllib.parse import urlsplit

import grpc
import psycopg
import pytest
from psycopg import sql

from campaign_grpc.domain.campaigns import Campaigns
from campaign_grpc.ops.server import App
from campaign_grpc.ops.tracing import Tracing
from campaign_grpc.settings import Settings
from campaign_grpc.storage.connect import close_database, open_database
from campaign_grpc.storage.read_lanes import Readers
from campaign_grpc.storage.store import Store
from campaign_grpc.storage.writer import Writer
from campaign_grpc_client.v1 import campaign_pb2_grpc
from e2e_helpers import Process, quick_settings

E2E = Path(__file__).resolve().parent / "e2e"
# The fixtures that start real servers: every fixture that gives a server (server, channel,
# stub, ...) takes one of them.
SERVER_FIXTURES = frozenset({"start_server", "spawn"})


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Marks e2e every test of tests/e2e, and every other one that starts a real server, so that
    `-m "not e2e"` (make test-fast) keeps the tests that need no socket."""
    for item in items:
        fixtures = getattr(item, "fixturenames", ())
        if item.path.is_relative_to(E2E) or SERVER_FIXTURES.intersection(fixtures):
            item.add_marker(pytest.mark.e2e)


class FakeClock:
    """Microseconds since the epoch that move only when a test says so."""

    def __init__(self) -> None:
        self.now = 1_800_000_000_000_000

    def __call__(self) -> int:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += int(seconds * 1_000_000)


@pytest.fixture
def customer() -> str:
    return str(uuid.uuid4())


POSTGRES_URL_ENV = "CAMPAIGN_GRPC_TEST_POSTGRES_URL"


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'campaigns.db'}"


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A PostgreSQL database made for this test; the test is skipped without a server."""
    server_url = os.environ.get(POSTGRES_URL_ENV)
    if not server_url:
        pytest.skip(f"PostgreSQL: set {POSTGRES_URL_ENV}=postgresql://USER@HOST:PORT/DATABASE")
    with fresh_postgres_database(server_url) as url:
        yield url


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, sqlite_url: str) -> str:
    """A fresh, empty database: a SQLite file, or a PostgreSQL database made for this test."""
    if request.param == "sqlite":
        return sqlite_url
    url: str = request.getfixturevalue("postgres_url")
    return url


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def campaigns(sqlite_url: str, clock: FakeClock) -> AsyncIterator[Campaigns]:
    """The domain on a real database, with a clock the test controls and a 60 s stop grace."""
    db = open_database(sqlite_url)
    store = Store(db)
    store.migrate()
    writer = Writer(db, journal=store)
    readers = Readers(db, 2)
    try:
        yield Campaigns(store, writer, readers, stop_grace_s=60, clock=clock)
    finally:
        writer.close()
        readers.close()
        close_database(db)


ServerFactory = Callable[..., "AsyncIterator[App]"]


@pytest.fixture
def settings(database_url: str) -> Settings:
    return quick_settings(database_url)


@pytest.fixture
async def start_server() -> AsyncIterator[Callable[[Settings], App]]:
    """Starts servers on demand (await start_server(settings)); stops what is left at the end."""
    running: list[App] = []

    async def start(config: Settings, *, tracing: Tracing | None = None, **changes: object) -> App:
        app = App(dataclasses.replace(config, **changes), tracing=tracing)  # type: ignore[arg-type]
        await app.start()
        running.append(app)
        return app

    yield start  # type: ignore[misc]
    for app in running:
        if not app.stopped:
            await app.stop()


@pytest.fixture
async def server(start_server, settings: Settings) -> App:  # type: ignore[no-untyped-def]
    return await start_server(settings)


@pytest.fixture
async def channel(server: App) -> AsyncIterator[grpc.aio.Channel]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as ch:
        yield ch


@pytest.fixture
def stub(channel: grpc.aio.Channel) -> campaign_pb2_grpc.CampaignServiceStub:
    return campaign_pb2_grpc.CampaignServiceStub(channel)


@pytest.fixture
def spawn(tmp_path: Path) -> Iterator[Callable[..., Process]]:
    """Starts `campaign-grpc serve` subprocesses; kills whatever is left at the end."""
    started: list[Process] = []

    def start(*args: str, env: dict[str, str] | None = None) -> Process:
        proc = Process(list(args), tmp_path / f"server-{len(started)}.log", env)
        started.append(proc)
        return proc

    try:
        yield start
    finally:
        for proc in started:
            proc.kill()


@contextlib.contextmanager
def fresh_postgres_database(server_url: str) -> Iterator[str]:
    """A database of its own on the server, dropped afterwards with whatever still uses it."""
    name = f"campaign_test_{uuid.uuid4().hex[:16]}"
    with psycopg.connect(server_url, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield urlsplit(server_url)._replace(path=f"/{name}").geturl()
    finally:
        with psycopg.connect(server_url, autocommit=True) as admin:
            admin.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))
