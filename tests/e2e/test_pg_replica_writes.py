"""Replicas writing to one PostgreSQL database: what one replica's trouble (a stall, a cut,
a lost answer to its COMMIT) may do to the others' writes and to its own callers.

Each replica here is a Store with its Writer, two of them in one process on one database, as
two servers would be; a TCP proxy stands in for one replica's path to the database.
"""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from urllib.parse import urlsplit

import peewee as pw
import pytest

from campaign_grpc.domain.errors import Unavailable
from campaign_grpc.domain.types import Campaign, CampaignType, Event, Reason, Status
from campaign_grpc.storage.connect import close_database, open_database
from campaign_grpc.storage.store import Store
from campaign_grpc.storage.writer import Writer
from tcp_proxy import TcpProxy


@dataclass
class Replica:
    db: pw.Database
    store: Store
    writer: Writer
    committed: list[Event]


@pytest.fixture
def replicas() -> Iterator[list[Replica]]:
    made: list[Replica] = []
    yield made
    for r in made:
        r.writer.close(within=2)
        close_database(r.db)


def open_replica(made: list[Replica], url: str, **timeouts: float) -> Replica:
    db = open_database(url, **timeouts)
    store = Store(db)
    store.migrate()
    committed: list[Event] = []
    writer = Writer(db, journal=store, on_commit=committed.extend)
    replica = Replica(db, store, writer, committed)
    made.append(replica)
    return replica


@pytest.fixture
async def proxy(postgres_url: str) -> AsyncIterator[TcpProxy]:
    parts = urlsplit(postgres_url)
    p = TcpProxy(parts.hostname or "127.0.0.1", parts.port or 5432)
    await p.start()
    try:
        yield p
    finally:
        await p.close()


def through(url: str, proxy: TcpProxy) -> str:
    parts = urlsplit(url)
    user = f"{parts.username}@" if parts.username else ""
    return parts._replace(netloc=f"{user}127.0.0.1:{proxy.port}").geturl()


CUSTOMER = str(uuid.uuid4())


def create(r: Replica) -> Campaign:
    c = Campaign(id=str(uuid.uuid4()), customer_id=CUSTOMER, type=CampaignType.CALL)
    r.store.append_event(c, Status.UNSPECIFIED, Reason.CREATED, 1, new_body=True)
    r.store.insert(c, "")
    return c


def touch(r: Replica, campaign_id: str, then: threading.Event | None = None) -> Campaign:
    """Loads the campaign (locking its row), makes a new version of it, and with then waits
    for the test before the transaction goes on to commit."""
    c = r.store.load(CUSTOMER, campaign_id)
    assert c is not None
    c.version += 1
    c.status = Status.RUN
    r.store.append_event(c, Status.STOP, Reason.REQUESTED, 2)
    r.store.save_state(c)
    if then is not None:
        assert then.wait(30), "the test never let the transaction go on"
    return c


def log_of(r: Replica) -> list[tuple[int, str, int]]:
    E = r.store.t.event
    return list(E.select(E.revision, E.campaign_id, E.version).order_by(E.revision).tuples())


async def test_a_replica_stalled_in_its_transaction_holds_up_no_other_replicas_writes(
    postgres_url: str, replicas: list[Replica]
) -> None:
    """A replica paused with its transaction open (a slow path, a stopped process) used to
    hold the log's counter, and every other replica's writes failed behind it."""
    a = open_replica(replicas, postgres_url, lock_timeout=1.0)
    b = open_replica(replicas, postgres_url, lock_timeout=1.0)
    first = await a.writer.run(lambda: create(a))
    go_on = threading.Event()
    stalled = asyncio.ensure_future(a.writer.run(lambda: touch(a, first.id, go_on)))
    try:
        others = [await b.writer.run(lambda: create(b)) for _ in range(5)]
    finally:
        go_on.set()
    late = await asyncio.wait_for(stalled, 30)
    # The stalled write commits after the others, with the next revision, and its caller is
    # answered with the revision the log holds.
    assert [c.revision for c in others] == [2, 3, 4, 5, 6]
    assert late.revision == 7
    assert log_of(b) == [
        (1, first.id, 1),
        *((2 + i, c.id, 1) for i, c in enumerate(others)),
        (7, first.id, 2),
    ]
    assert [e.revision for e in a.committed] == [1, 7]
    assert a.committed[-1].campaign is not None
    assert a.committed[-1].campaign.revision == 7
    assert b.store.head_revision() == 7


async def test_a_write_decided_on_a_version_another_replica_changed_is_made_again_on_it(
    postgres_url: str, replicas: list[Replica]
) -> None:
    """Neither replica waits for the other; the write that finds at commit that the campaign
    moved on from the version it read is made again on what the other committed, never
    over it."""
    a = open_replica(replicas, postgres_url)
    b = open_replica(replicas, postgres_url)
    c = await a.writer.run(lambda: create(a))
    go_on = threading.Event()
    tries: list[int] = []

    def slow_touch() -> Campaign:
        tries.append(1)
        return touch(a, c.id, go_on)

    first = asyncio.ensure_future(a.writer.run(slow_touch))
    await asyncio.sleep(0.2)  # a has read version 1 by now
    second = await asyncio.wait_for(b.writer.run(lambda: touch(b, c.id)), 10)
    go_on.set()
    one = await asyncio.wait_for(first, 30)
    assert (second.version, second.revision) == (2, 2)
    assert (one.version, one.revision) == (3, 3)
    assert len(tries) == 2
    assert log_of(b) == [(1, c.id, 1), (2, c.id, 2), (3, c.id, 3)]


async def test_a_replica_cut_off_in_its_transaction_frees_the_campaigns_it_locked_in_bound(
    postgres_url: str, proxy: TcpProxy, replicas: list[Replica]
) -> None:
    """PostgreSQL ends the session of a replica that went silent in its transaction within
    the stall timeout: another replica's write of the same campaign then goes through,
    where it used to fail for as long as PostgreSQL kept the session (hours)."""
    # Opened off the event loop, which carries the proxy's traffic.
    a = await asyncio.to_thread(
        open_replica, replicas, through(postgres_url, proxy), stall_timeout=1.0
    )
    b = open_replica(replicas, postgres_url, lock_timeout=8.0)
    c = await a.writer.run(lambda: create(a))
    go_on = threading.Event()
    cut_off = asyncio.ensure_future(a.writer.run(lambda: touch(a, c.id, go_on)))
    await asyncio.sleep(0.2)
    proxy.blackhole()
    go_on.set()
    # Waits for the lock at most 8 s: it is freed within the 1 s stall timeout and a poll.
    written = await asyncio.wait_for(b.writer.run(lambda: touch(b, c.id)), 20)
    assert (written.version, written.revision) == (2, 2)
    proxy.restore()
    # The cut-off replica's write had not committed: its caller is told so, or, retried on a
    # new connection, it commits after the other.
    (late,) = await asyncio.wait_for(asyncio.gather(cut_off, return_exceptions=True), 30)
    if isinstance(late, Unavailable):
        assert late.reason == "DATABASE_UNAVAILABLE"
        assert log_of(b) == [(1, c.id, 1), (2, c.id, 2)]
    else:
        assert (late.version, late.revision) == (3, 3)
        assert log_of(b) == [(1, c.id, 1), (2, c.id, 2), (3, c.id, 3)]


async def test_sessions_carry_the_bounds_of_a_stalled_peer(
    postgres_url: str, replicas: list[Replica]
) -> None:
    r = open_replica(replicas, postgres_url, stall_timeout=6.0)

    def settings() -> list[str]:
        names = ("idle_in_transaction_session_timeout", "tcp_user_timeout")
        return [r.db.execute_sql(f"SHOW {name}").fetchone()[0] for name in names]

    assert await r.writer.run(settings) == ["6s", "6000"]


@pytest.mark.parametrize("forwarded", [True, False], ids=["commit-arrived", "commit-lost"])
async def test_a_write_whose_commit_answer_is_lost_is_answered_with_what_the_database_did(
    postgres_url: str, proxy: TcpProxy, replicas: list[Replica], forwarded: bool
) -> None:
    """The connection goes with the COMMIT sent: the writer asks the database, on a new
    connection, what became of the transaction, and its caller hears the truth."""
    a = await asyncio.to_thread(open_replica, replicas, through(postgres_url, proxy))
    observer = open_replica(replicas, postgres_url)
    c = await a.writer.run(lambda: create(a))
    proxy.drop_reply_after(b"COMMIT", forward=forwarded)
    write = a.writer.run(lambda: touch(a, c.id))
    if forwarded:
        written = await asyncio.wait_for(write, 30)
        assert (written.version, written.revision) == (2, 2)
        assert log_of(observer) == [(1, c.id, 1), (2, c.id, 2)]
        assert [e.revision for e in a.committed] == [1, 2]
    else:
        with pytest.raises(Unavailable) as refused:
            await asyncio.wait_for(write, 30)
        assert refused.value.reason == "DATABASE_UNAVAILABLE"
        assert log_of(observer) == [(1, c.id, 1)]
    assert proxy.replies_dropped == 1
    # The replica writes on afterwards, counting on from the log.
    again = await a.writer.run(lambda: touch(a, c.id))
    assert again.revision == (3 if forwarded else 2)
