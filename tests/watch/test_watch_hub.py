"""The watch hub of a running server: snapshot, replay, live changes, heartbeats, limits."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from campaign_grpc.domain.campaigns import Campaigns
from campaign_grpc.domain.errors import NotFound, OutOfRange, ResourceExhausted, Unavailable
from campaign_grpc.domain.types import Campaign, Reason, Status
from campaign_grpc.ops.server import App
from campaign_grpc.settings import Settings
from campaign_grpc.watch.hub import FREE_BULK_ITEMS, Hub
from campaign_grpc.watch.items import Item, Kind
from factories import new_id, runnable_draft

WAIT = 5.0  # an upper bound for something that must happen; never reached when all is well


class Stream:
    """A watch consumed by a task of its own into a queue, as a client would read it."""

    def __init__(self, hub: Hub, customer: str, campaign_id: str = "", after: int = 0) -> None:
        self._items: asyncio.Queue[Item | Exception] = asyncio.Queue()
        self._task = asyncio.create_task(self._pump(hub.watch(customer, campaign_id, after)))

    async def _pump(self, it: AsyncIterator[Item]) -> None:
        try:
            async for item in it:
                await self._items.put(item)
        except Exception as exc:
            await self._items.put(exc)

    async def next(self) -> Item:
        got = await asyncio.wait_for(self._items.get(), WAIT)
        if isinstance(got, Exception):
            raise got
        return got

    async def next_change(self) -> Item:
        while True:
            item = await self.next()
            if item.kind != Kind.HEARTBEAT:
                return item

    async def until_snapshot_end(self) -> list[Item]:
        items = []
        while True:
            item = await self.next()
            items.append(item)
            if item.kind == Kind.SNAPSHOT_END:
                return items

    async def drain(self) -> None:
        """Reads until the stream ends with an error (or WAIT passes without an item)."""
        while True:
            await self.next()

    async def close(self) -> None:
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task


@pytest.fixture
async def streams() -> AsyncIterator[Callable[..., Stream]]:
    opened: list[Stream] = []

    def open_stream(*args: Any) -> Stream:
        s = Stream(*args)
        opened.append(s)
        return s

    yield open_stream
    for s in opened:
        await s.close()


async def eventually(check: Callable[[], Awaitable[bool] | bool]) -> None:
    """Waits, bounded, until check() holds."""

    async def poll() -> None:
        while True:
            got = check()
            if not isinstance(got, bool):
                got = await got
            if got:
                return
            await asyncio.sleep(0.01)

    await asyncio.wait_for(poll(), WAIT)


async def create(campaigns: Campaigns, customer: str, **changes: Any) -> Campaign:
    return await campaigns.create(runnable_draft(customer, **changes), "")


async def run(campaigns: Campaigns, c: Campaign) -> Campaign:
    return await campaigns.set_status(c.customer_id, c.id, Status.RUN, False)


async def stop(campaigns: Campaigns, c: Campaign, *, force: bool = False) -> Campaign:
    return await campaigns.set_status(c.customer_id, c.id, Status.STOP, force)


async def churn(campaigns: Campaigns, c: Campaign, times: int) -> None:
    """2 * times status changes of c."""
    for _ in range(times):
        await run(campaigns, c)
        await stop(campaigns, c, force=True)


# -- snapshot, then changes -----------------------------------------------------------------


async def test_snapshot_then_end_then_changes(
    server: App, customer: str, streams: Callable[..., Stream]
) -> None:
    campaigns = server.campaigns
    a = await run(campaigns, await create(campaigns, customer))
    b = await create(campaigns, customer)
    gone = await create(campaigns, customer)
    await campaigns.delete(customer, gone.id, "")
    await create(campaigns, new_id())  # another customer's
    head = await campaigns.head_revision()

    s = streams(server.hub, customer)
    items = await s.until_snapshot_end()
    snapshot = {i.state.id: i for i in items[:-1] if i.state is not None}
    assert [i.kind for i in items] == [Kind.SNAPSHOT, Kind.SNAPSHOT, Kind.SNAPSHOT_END]
    assert set(snapshot) == {a.id, b.id}
    assert snapshot[a.id].state is not None
    assert snapshot[a.id].state.status == Status.RUN
    assert snapshot[a.id].revision == a.revision
    assert snapshot[b.id].revision == b.revision
    assert items[-1].revision == head

    c = await create(campaigns, customer)
    change = await s.next_change()
    assert change.kind == Kind.CHANGE
    assert change.revision == head + 1
    assert change.event is not None
    assert (change.event.campaign_id, change.event.reason) == (c.id, Reason.CREATED)
    assert (change.event.previous_status, change.event.status) == (Status.UNSPECIFIED, Status.STOP)

    await stop(campaigns, a)
    change = await s.next_change()
    assert change.event is not None
    assert (change.event.campaign_id, change.event.previous_status, change.event.status) == (
        a.id,
        Status.RUN,
        Status.STOPPING,
    )
    assert change.revision == head + 2

    await campaigns.delete(customer, b.id, "")
    await campaigns.undelete(customer, b.id)
    deleted, undeleted = await s.next_change(), await s.next_change()
    assert deleted.event is not None
    assert undeleted.event is not None
    assert (deleted.event.reason, deleted.event.deleted) == (Reason.DELETED, True)
    assert (undeleted.event.reason, undeleted.event.deleted) == (Reason.UNDELETED, False)
    assert [deleted.revision, undeleted.revision] == [head + 3, head + 4]


async def test_snapshot_while_writers_write_then_changes_miss_nothing(
    server: App, customer: str, streams: Callable[..., Stream]
) -> None:
    campaigns = server.campaigns
    cs = [await create(campaigns, customer) for _ in range(3)]
    writing = asyncio.gather(*(churn(campaigns, c, 20) for c in cs))

    async def underway() -> bool:
        return await campaigns.head_revision() >= 10

    await eventually(underway)
    s = streams(server.hub, customer)
    items = await s.until_snapshot_end()
    end = items[-1].revision
    status = {i.state.id: i.state.status for i in items if i.state is not None}
    # Every revision a resume point: snapshot items in strictly increasing revision order,
    # all of them at or before the snapshot's end.
    revisions = [i.revision for i in items[:-1]]
    assert revisions == sorted(set(revisions))
    assert all(r <= end for r in revisions)
    await asyncio.wait_for(writing, WAIT)
    head = await campaigns.head_revision()
    changes: list[Item] = []
    while end < head and (not changes or changes[-1].revision < head):
        changes.append(await s.next_change())
    # Exactly the log after the snapshot, and applying it gives the stored state: a
    # campaign that changed while the snapshot was read comes as one or the other.
    logged = await campaigns.events_after(end, customer, "", 1000)
    assert [i.event for i in changes] == logged
    for item in changes:
        assert item.event is not None
        status[item.event.campaign_id] = item.event.status
    assert set(status) == {c.id for c in cs}
    for c in cs:
        assert status[c.id] == (await campaigns.get(customer, c.id)).status


async def test_snapshot_of_an_empty_customer_is_just_the_end(
    server: App, customer: str, streams: Callable[..., Stream]
) -> None:
    await create(server.campaigns, new_id())
    s = streams(server.hub, customer)
    end = await s.next()
    assert end.kind == Kind.SNAPSHOT_END
    assert end.revision == await server.campaigns.head_revision()


async def test_changes_of_other_customers_are_not_seen(
    server: App, customer: str, streams: Callable[..., Stream]
) -> None:
    campaigns = server.campaigns
    s = streams(server.hub, customer)
    await s.until_snapshot_end()
    await create(campaigns, new_id())
    mine = await create(campaigns, customer)
    change = await s.next_change()
    assert change.event is not None
    assert change.event.campaign_id == mine.id
    assert change.event.customer_id == customer


async def test_a_watch_of_one_campaign_sees_only_it(
    server: App, customer: str, streams: Callable[..., Stream]
) -> None:
    campaigns = server.campaigns
    a = await create(campaigns, customer)
    b = await create(campaigns, customer)
    s = streams(server.hub, customer, a.id)
    items = await s.until_snapshot_end()
    assert [(i.kind, i.state.id if i.state else None) for i in items] == [
        (Kind.SNAPSHOT, a.id),
        (Kind.SNAPSHOT_END, None),
    ]
    await churn(campaigns, b, 2)
    await run(campaigns, a)
    change = await s.next_change()
    assert change.event is not None
    assert change.event.campaign_id == a.id
    assert change.event.status == Status.RUN


async def test_a_watch_of_a_missing_or_foreign_campaign_is_not_found(
    server: App, customer: str, streams: Callable[..., Stream]
) -> None:
    theirs = await create(server.campaigns, new_id())
    for campaign_id in (new_id(), theirs.id):
        for after in (0, 1):
            with pytest.raises(NotFound):
                await streams(server.hub, customer, campaign_id, after).next()
    await eventually(lambda: server.hub.subscriber_count == 0)


async def test_a_watch_of_a_deleted_campaign_shows_it_deleted(
    server: App, customer: str, streams: Callable[..., Stream]
) -> None:
    c = await create(server.campaigns, customer)
    await server.campaigns.delete(customer, c.id, "")
    first = await streams(server.hub, customer, c.id).next()
    assert first.kind == Kind.SNAPSHOT
    assert first.state is not None
    assert first.state.deleted


# -- resuming after a revision ----------------------------------------------------------------


async def test_resume_replays_in_order_then_follows_live(
    server: App, customer: str, streams: Callable[..., Stream]
) -> None:
    campaigns = server.campaigns
    c = await create(campaigns, customer)
    await churn(campaigns, c, 3)
    seen = 3
    head = await campaigns.head_revision()
    s = streams(server.hub, customer, "", seen)
    replayed = [await s.next() for _ in range(head - seen)]
    assert [i.kind for i in replayed] == [Kind.CHANGE] * (head - seen)
    assert [i.revision for i in replayed] == list(range(seen + 1, head + 1))
    await run(campaigns, c)
    live = await s.next_change()
    assert live.revision == head + 1


async def test_resume_while_writers_write_misses_nothing_and_repeats_nothing(
    server: App, customer: str, streams: Callable[..., Stream]
) -> None:
    campaigns = server.campaigns
    c = await create(campaigns, customer)
    await churn(campaigns, c, 5)
    after = await campaigns.head_revision() - 4

    writing = asyncio.create_task(churn(campaigns, c, 25))
    s = streams(server.hub, customer, "", after)
    await asyncio.wait_for(writing, WAIT)
    head = await campaigns.head_revision()
    revisions: list[int] = []
    while not revisions or revisions[-1] < head:
        item = await s.next_change()
        assert item.kind == Kind.CHANGE
        revisions.append(item.revision)
    assert revisions == list(range(after + 1, head + 1))


async def test_resume_from_the_current_head_waits_for_the_next_change(
    server: App, customer: str, streams: Callable[..., Stream]
) -> None:
    campaigns = server.campaigns
    c = await create(campaigns, customer)
    head = await campaigns.head_revision()
    s = streams(server.hub, customer, c.id, head)
    await run(campaigns, c)
    item = await s.next_change()
    assert (item.kind, item.revision) == (Kind.CHANGE, head + 1)


async def test_resume_of_one_campaign_replays_only_its_changes(
    server: App, customer: str, streams: Callable[..., Stream]
) -> None:
    campaigns = server.campaigns
    a = await create(campaigns, customer)
    b = await create(campaigns, customer)
    await churn(campaigns, a, 1)
    await churn(campaigns, b, 1)
    await churn(campaigns, a, 1)
    expected = [e.revision for e in await campaigns.events_after(0, customer, a.id, 100)]
    s = streams(server.hub, customer, a.id, 1)
    got = [(await s.next()).revision for _ in expected[1:]]
    assert got == expected[1:]


async def test_resume_ahead_of_the_log_is_out_of_range(
    server: App, customer: str, streams: Callable[..., Stream]
) -> None:
    await create(server.campaigns, customer)
    head = await server.campaigns.head_revision()
    with pytest.raises(OutOfRange) as info:
        await streams(server.hub, customer, "", head + 1).next()
    assert info.value.reason == "REVISION_AHEAD_OF_LOG"
    assert info.value.metadata["head_revision"] == str(head)
    await eventually(lambda: server.hub.subscriber_count == 0)


# -- heartbeats -------------------------------------------------------------------------------


async def test_heartbeats_carry_the_latest_revision(
    server: App, customer: str, streams: Callable[..., Stream]
) -> None:
    campaigns = server.campaigns
    mine = await create(campaigns, customer)
    s = streams(server.hub, customer, mine.id)
    end = (await s.until_snapshot_end())[-1]
    # Changes the stream does not show still move the revision its heartbeats report.
    await churn(campaigns, await create(campaigns, new_id()), 2)
    head = await campaigns.head_revision()
    assert head > end.revision
    while True:
        beat = await s.next()
        assert beat.kind == Kind.HEARTBEAT
        assert beat.revision <= head
        if beat.revision == head:
            break
    # Resuming from a heartbeat's revision misses nothing of the campaign watched.
    await run(campaigns, mine)
    resumed = streams(server.hub, customer, mine.id, beat.revision)
    item = await resumed.next()
    assert (item.kind, item.revision) == (Kind.CHANGE, head + 1)


# -- limits and cleanup -----------------------------------------------------------------------


async def test_a_slow_subscriber_is_ended_and_others_keep_up(
    start_server: Callable[..., Awaitable[App]],
    settings: Settings,
    customer: str,
    streams: Callable[..., Stream],
) -> None:
    app = await start_server(settings, watch_buffer=2)
    campaigns = app.campaigns
    c = await create(campaigns, customer)
    fast = streams(app.hub, customer)
    await fast.until_snapshot_end()

    slow = app.hub.watch(customer, "", 0)
    items = [await asyncio.wait_for(slow.__anext__(), WAIT) for _ in range(2)]
    assert [i.kind for i in items] == [Kind.SNAPSHOT, Kind.SNAPSHOT_END]
    last_seen = items[-1].revision

    # One change at a time, each read by the fast one before the next: it keeps up, while
    # the slow one reads nothing and falls more than its buffer behind.
    received = []
    for _ in range(3):
        await run(campaigns, c)
        received.append((await fast.next_change()).revision)
        await stop(campaigns, c, force=True)
        received.append((await fast.next_change()).revision)
    head = await campaigns.head_revision()
    assert received == list(range(last_seen + 1, head + 1))
    with pytest.raises(ResourceExhausted) as info:
        await asyncio.wait_for(slow.__anext__(), WAIT)
    assert info.value.reason == "WATCH_TOO_SLOW"
    await fast.close()
    assert app.hub.subscriber_count == 0

    # It resumes from the last revision it received and misses nothing.
    resumed = streams(app.hub, customer, "", last_seen)
    assert [(await resumed.next()).revision for _ in range(6)] == list(
        range(last_seen + 1, head + 1)
    )


async def test_a_snapshot_whose_reader_stopped_mid_way_does_not_hold_up_the_others(
    server: App, customer: str, streams: Callable[..., Stream]
) -> None:
    campaigns = server.campaigns
    ids = {(await create(campaigns, customer)).id for _ in range(FREE_BULK_ITEMS + 3)}
    # Read past the items sent without a turn, then never again: its snapshot stops while
    # holding its turn.
    stuck = server.hub.watch(customer, "", 0)
    for _ in range(FREE_BULK_ITEMS + 1):
        item = await asyncio.wait_for(stuck.__anext__(), WAIT)
        assert item.kind == Kind.SNAPSHOT
    try:
        for _ in range(2):
            s = streams(server.hub, customer)
            items = await s.until_snapshot_end()
            assert {i.state.id for i in items if i.state is not None} == ids
            await s.close()
    finally:
        await stuck.aclose()


async def test_a_small_buffer_is_enough_for_a_reader_that_keeps_up(
    start_server: Callable[..., Awaitable[App]],
    settings: Settings,
    customer: str,
    streams: Callable[..., Stream],
) -> None:
    app = await start_server(settings, watch_buffer=2)
    c = await create(app.campaigns, customer)
    s = streams(app.hub, customer, c.id)
    await s.until_snapshot_end()
    for _ in range(5):
        await run(app.campaigns, c)
        assert (await s.next_change()).event is not None
        await stop(app.campaigns, c, force=True)
        assert (await s.next_change()).event is not None


async def test_closing_a_stream_removes_its_subscription(server: App, customer: str) -> None:
    hub = server.hub
    assert hub.subscriber_count == 0
    first = hub.watch(customer, "", 0)
    second = hub.watch(customer, "", 0)
    await asyncio.wait_for(first.__anext__(), WAIT)
    await asyncio.wait_for(second.__anext__(), WAIT)
    assert hub.subscriber_count == 2
    await first.aclose()  # type: ignore[attr-defined]
    assert hub.subscriber_count == 1
    await second.aclose()  # type: ignore[attr-defined]
    assert hub.subscriber_count == 0


async def test_cancelling_a_reader_removes_its_subscription(
    server: App, customer: str, streams: Callable[..., Stream]
) -> None:
    s = streams(server.hub, customer)
    await s.until_snapshot_end()
    assert server.hub.subscriber_count == 1
    await s.close()
    assert server.hub.subscriber_count == 0


async def test_a_failed_stream_removes_its_subscription(server: App, customer: str) -> None:
    it = server.hub.watch(customer, "", 10_000)
    with pytest.raises(OutOfRange):
        await asyncio.wait_for(it.__anext__(), WAIT)
    assert server.hub.subscriber_count == 0


async def test_closing_the_hub_ends_streams_with_unavailable(
    start_server: Callable[..., Awaitable[App]],
    settings: Settings,
    customer: str,
    streams: Callable[..., Stream],
) -> None:
    app = await start_server(settings)
    s = streams(app.hub, customer)
    await s.until_snapshot_end()
    await app.hub.close()
    with pytest.raises(Unavailable) as info:
        await s.drain()
    assert info.value.reason == "SHUTTING_DOWN"
    late = streams(app.hub, customer, "", 0)
    with pytest.raises(Unavailable):
        await late.drain()


# -- a log the server cannot read -------------------------------------------------------------

# The heartbeat interval of these tests: a log unread for two of them ends the streams, so it
# leaves room for a busy test machine's event loop before the fault is made on purpose.
INTERVAL = 0.5


class LogReads:
    """The server's reads of the event log, made to hang (a database behind a network path
    that drops everything) or to fail at once (one that refuses connections) until restored."""

    def __init__(self, campaigns: Campaigns) -> None:
        self._read = campaigns.events_after
        self._fault = ""
        self._restored = asyncio.Event()

    async def events_after(self, *args: Any, **kwargs: Any) -> Any:
        if self._fault == "hang":
            await self._restored.wait()
        elif self._fault == "slow":
            await asyncio.sleep(INTERVAL / 2)
        elif self._fault == "fail":
            raise Unavailable("the database does not answer", reason="DATABASE_UNAVAILABLE")
        return await self._read(*args, **kwargs)

    def break_(self, fault: str) -> None:
        self._fault = fault
        self._restored.clear()

    def restore(self) -> None:
        self._fault = ""
        self._restored.set()


@pytest.fixture
async def unreadable(
    start_server: Callable[..., Awaitable[App]],
    settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
) -> tuple[App, LogReads]:
    app = await start_server(settings, heartbeat_interval=INTERVAL)
    reads = LogReads(app.campaigns)
    monkeypatch.setattr(app.campaigns, "events_after", reads.events_after)
    return app, reads


async def heartbeats_until_the_end(s: Stream) -> tuple[list[float], Exception]:
    """When (the loop's clock) each heartbeat came until the stream ended, and its end."""
    beats = []
    while True:
        try:
            item = await s.next()
        except Exception as exc:
            return beats, exc
        assert item.kind == Kind.HEARTBEAT, item
        beats.append(asyncio.get_running_loop().time())


@pytest.mark.parametrize("fault", ["hang", "fail"])
async def test_a_server_that_cannot_read_the_log_ends_its_streams_and_vouches_for_no_head(
    unreadable: tuple[App, LogReads], customer: str, streams: Callable[..., Stream], fault: str
) -> None:
    app, reads = unreadable
    await create(app.campaigns, customer)
    s = streams(app.hub, customer)
    await s.until_snapshot_end()
    assert (await s.next()).kind == Kind.HEARTBEAT
    loop = asyncio.get_running_loop()
    reads.break_(fault)
    broken_at = loop.time()
    beats, end = await heartbeats_until_the_end(s)
    ended_after = loop.time() - broken_at
    # A heartbeat says the log's head was read at most an interval before it: none comes
    # later than that after the last read (a little slack for the test's own reading).
    assert all(at - broken_at < 1.5 * INTERVAL for at in beats), (broken_at, beats)
    assert isinstance(end, Unavailable)
    assert end.reason == "LOG_UNREADABLE"
    assert int(end.metadata["head_revision"]) == app.hub.head
    # Within three intervals: before a client's own rule (three silent intervals) fires.
    assert ended_after < 3 * INTERVAL
    assert app.hub.subscriber_count == 0

    # A new stream is refused at once rather than left waiting, and a resume too.
    for after in (0, 1):
        with pytest.raises(Unavailable) as refused:
            await streams(app.hub, customer, "", after).next()
        assert refused.value.reason == "LOG_UNREADABLE"

    reads.restore()
    c = await create(app.campaigns, customer)

    async def served() -> bool:
        s = streams(app.hub, customer, "", c.revision - 1)
        try:
            return (await s.next()).revision == c.revision
        except Unavailable:
            return False
        finally:
            await s.close()

    await eventually(served)


async def test_a_replay_waiting_for_a_read_that_hangs_ends_too(
    unreadable: tuple[App, LogReads], customer: str, streams: Callable[..., Stream]
) -> None:
    app, reads = unreadable
    await create(app.campaigns, customer)
    loop = asyncio.get_running_loop()
    reads.break_("hang")
    broken_at = loop.time()
    s = streams(app.hub, customer, "", 1)
    with pytest.raises(Unavailable) as info:
        await s.next()
    assert info.value.reason == "LOG_UNREADABLE"
    assert loop.time() - broken_at < 3 * INTERVAL
    assert app.hub.subscriber_count == 0
    reads.restore()


async def test_slow_reads_of_the_log_end_no_stream(
    unreadable: tuple[App, LogReads], customer: str, streams: Callable[..., Stream]
) -> None:
    app, reads = unreadable
    c = await create(app.campaigns, customer)
    s = streams(app.hub, customer)
    await s.until_snapshot_end()
    reads.break_("slow")
    loop = asyncio.get_running_loop()
    slowed_at = last = loop.time()
    # Changes still come, and the silence between messages stays under a client's rule of
    # three heartbeat intervals.
    while loop.time() - slowed_at < 6 * INTERVAL:
        item = await s.next()
        assert loop.time() - last < 3 * INTERVAL
        last = loop.time()
        if item.kind == Kind.HEARTBEAT and loop.time() - slowed_at < 3 * INTERVAL:
            await run(app.campaigns, c)
            assert (await s.next_change()).revision == await app.campaigns.head_revision()
            await stop(app.campaigns, c, force=True)
    reads.restore()
