"""The watch: a hub that tails the event log, and one bounded subscription per stream.

The event log in the database is the truth. The hub reads new events once, in revision
order, and hands each to the subscriptions it matches; a stream starts from a snapshot or
a replay of the log, then follows its subscription. A stream that cannot keep up is ended
instead of growing without bound, and resumes from the last revision it received.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import enum
import logging
from collections.abc import AsyncGenerator, Awaitable, Callable
from dataclasses import dataclass
from functools import partial

from ..domain.campaigns import Campaigns
from ..domain.errors import CampaignError, NotFound, OutOfRange, ResourceExhausted, Unavailable
from ..domain.types import LEASE_REASONS, Campaign, CampaignState, Event
from ..ops.limits import UnreadBytes, WatchStreamCounts
from ..storage.identity import Fingerprint, LogIdentity, LogState, fingerprint
from ..storage.timelines import Timelines, TimelineSource
from .turns import SendTurns

log = logging.getLogger(__name__)

_READ_BATCH = 1000
# Full-view events and snapshot pages carry whole campaigns (up to about 1 MB each): fewer
# at a time, so that one stream holds a few MB at most, never a whole snapshot.
_FULL_READ_BATCH = 64
_SNAPSHOT_PAGE = 1000
# The items of a snapshot or replay sent before it takes turns (see turns.py): a watch of one
# campaign or of a small customer is over before it could hold anyone up, and 10,000 such
# watches opening at once are not slowed down by a queue for turns (bench/fanout.py, 10,000
# watches of one campaign: 9.6 s to open all when every item took a turn, 7.3-9.1 s without).
FREE_BULK_ITEMS = 32
_FULL_SNAPSHOT_PAGE = 16
# Heartbeats go out to one slot of the streams at a time, a slot every interval / _BEAT_SLOTS.
_BEAT_SLOTS = 16
# A heartbeat says the log's head was read at most one heartbeat interval ago; a server that
# has not read it for _UNREAD_INTERVALS intervals ends its streams, so that their clients go to
# another replica before their own rule (three silent intervals) would have to tell them.
_UNREAD_INTERVALS = 2
# The log is read at least this many times a heartbeat interval: one slow read alone does not
# leave the heartbeats without a fresh head.
_READS_PER_INTERVAL = 4
# Streams ended for clients that do not read are logged once per this many seconds, with
# their count: thousands of them (one client's) would otherwise log a line each.
UNREAD_LOG_INTERVAL = 10.0
# How long a snapshot's or a replay's next item may wait for room among the unread bytes
# (ops.limits.UnreadBytes): meanwhile the stream holds its page of campaigns, its own when
# the caches could not keep them (about 1 MB each for 1,000 streams of ten campaigns of
# 1,000 actions, whose RSS then grew past 1 GB while they waited). Room taken by clients
# that read comes back within milliseconds; room that does not come back within this is
# held by clients that do not read. Live changes wait up to --watch-send-timeout: what
# they hold is shared.
BULK_ROOM_WAIT = 1.0


class Kind(enum.IntEnum):
    SNAPSHOT = 1
    SNAPSHOT_END = 2
    CHANGE = 3
    HEARTBEAT = 4


@dataclass(slots=True, frozen=True)
class Item:
    kind: Kind
    revision: int
    # A snapshot item: the campaign's state (the status view) or the whole campaign (full).
    state: CampaignState | None = None
    campaign: Campaign | None = None
    # A change; with full, sent with the campaign as of its revision (event.campaign).
    event: Event | None = None
    full: bool = False
    # On SNAPSHOT_END and HEARTBEAT: seconds between heartbeats, so that a client can tell a
    # quiet stream from a dead one.
    heartbeat_interval: float = 0.0
    # The item as the stream sends it, made once for every stream that receives it (the
    # hub's encode); None for what only one stream sends, a snapshot or a replay.
    payload: bytes | None = None
    # The log's timeline its revision belongs to (see storage.timelines); "" when unknown.
    timeline: str = ""


Encode = Callable[[Item], bytes]


def _shutting_down() -> CampaignError:
    return Unavailable("the server is shutting down; reconnect and resume", reason="SHUTTING_DOWN")


def _too_slow() -> CampaignError:
    return ResourceExhausted(
        "the stream fell too far behind; resume from the last revision received",
        reason="WATCH_TOO_SLOW",
    )


def _database_changed(why: str, head: int, sent: int) -> OutOfRange:
    return OutOfRange(
        f"the database changed under this server: {why}; its log is at revision {head}, "
        f"and changes up to revision {sent} were sent from the one before; start again "
        "from a snapshot",
        reason="DATABASE_CHANGED",
        metadata={"head_revision": str(head), "last_revision": str(sent)},
    )


def _log_unreadable(unread_s: float, head: int) -> CampaignError:
    return Unavailable(
        f"this server has not read the event log for {unread_s:.1f} s (the database does not "
        f"answer it), so it cannot tell what changed after revision {head}; reconnect, to "
        "another server if this one stays unavailable, and resume",
        reason="LOG_UNREADABLE",
        metadata={"head_revision": str(head), "unread_seconds": f"{unread_s:.1f}"},
    )


def _not_in_this_log(timeline: str, revision: int, shared: int | None) -> OutOfRange:
    if shared is None:
        why = f"timeline {timeline} is not one of this log's (the database was made anew)"
        metadata = {"timeline": timeline}
    else:
        why = (
            f"this log forked from timeline {timeline} after revision {shared} (a standby "
            f"promoted, or a backup restored), so revision {revision} of it names a change "
            "this log does not hold"
        )
        metadata = {"timeline": timeline, "forked_at_revision": str(shared)}
    return OutOfRange(
        f"{why}; start again from a snapshot", reason="LOG_TIMELINE_CHANGED", metadata=metadata
    )


def _compacted(compacted: int, lost: str) -> OutOfRange:
    return OutOfRange(
        f"{lost}: the log starts after revision {compacted}; start again from a snapshot",
        reason="REVISION_COMPACTED",
        metadata={"compacted_revision": str(compacted), "oldest_revision": str(compacted + 1)},
    )


class Subscription:
    """What one stream has yet to send. Thousands are idle at once, so each is kept small:
    a list, not a deque (whose first block alone is over 600 bytes), and a future made only
    while the stream waits, not an asyncio.Event (which holds a deque of waiters)."""

    __slots__ = (
        "_buffer",
        "_ending",
        "_waiter",
        "beat_slot",
        "campaign_id",
        "customer_id",
        "full",
        "leases",
        "limit",
        "reading",
        "sent_at",
        "task",
        "unread",
    )

    def __init__(
        self,
        customer_id: str,
        campaign_id: str,
        limit: int,
        beat_slot: int,
        full: bool = False,
        leases: bool = False,
    ) -> None:
        self.customer_id = customer_id
        self.campaign_id = campaign_id
        self.limit = limit
        self.beat_slot = beat_slot
        # The full view: changes are sent with the campaign as of their revision.
        self.full = full
        # Whether the changes of the campaigns' leases are sent too.
        self.leases = leases
        self._buffer: list[Item] = []
        # Why the stream ends, made into an exception on the stream's own task: one
        # exception object raised by thousands of tasks would gather all their tracebacks.
        self._ending: Callable[[], CampaignError] | None = None
        self._waiter: asyncio.Future[None] | None = None
        # The stream's task, and when it last got past a message it sent (the loop's clock):
        # a stream that is not waiting for news and has not got past one for long is stuck
        # in a send its client does not read (see Hub._cancel_stuck).
        self.task: asyncio.Task[object] | None = None
        self.sent_at = 0.0
        # Waiting for a read of its snapshot or replay, which a database that does not answer
        # can hold for minutes (see Hub._interrupt_reads).
        self.reading = False
        # The bytes of the message being sent, held in the hub's UnreadBytes until the send
        # completes; 0 while the stream is not sending.
        self.unread = 0

    @property
    def key(self) -> tuple[str, str]:
        return (self.customer_id, self.campaign_id)

    def push(self, item: Item) -> None:
        if self._ending is not None:
            return
        if len(self._buffer) >= self.limit:
            self._buffer = []
            self.end(_too_slow)
        else:
            self._buffer.append(item)
            self.wake()

    def end(self, why: Callable[[], CampaignError]) -> None:
        """The stream ends with why() once it has sent what it took before; the first end wins."""
        if self._ending is None:
            self._ending = why
        self.wake()

    def wake(self) -> None:
        """Completes the future waiting() gave, if any: the stream takes what was pushed,
        or nothing and sends a heartbeat."""
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def waiting(self) -> asyncio.Future[None] | None:
        """What to await before the next take(): a future that the next push, wake or end
        completes, or None when there is something to take already. A future rather than a
        coroutine: an idle stream waits with no frame of its own."""
        if self._buffer or self._ending is not None:
            return None
        self._waiter = asyncio.get_running_loop().create_future()
        return self._waiter

    def stuck(self, now: float, timeout: float) -> bool:
        return self._waiter is None and now - self.sent_at > timeout

    def take(self) -> list[Item]:
        """The changes pushed since the last take ([]: none, send a heartbeat). Raises once
        the stream is ended."""
        self._waiter = None
        if self._ending is not None:
            raise self._ending()
        items, self._buffer = self._buffer, []
        return items


class Hub:
    """Tails the event log and fans each new event out to the matching subscriptions."""

    def __init__(
        self,
        campaigns: Campaigns,
        *,
        heartbeat_interval: float = 10.0,
        buffer_limit: int = 1024,
        poll_interval: float = 0.5,
        encode: Encode | None = None,
        streams: WatchStreamCounts | None = None,
        send_timeout: float = 30.0,
        log_state: Callable[[int], Awaitable[LogState]] | None = None,
        identity: LogIdentity | None = None,
        on_reset: Callable[[], None] = lambda: None,
        send_turns: SendTurns | None = None,
        timelines: TimelineSource | None = None,
        unread: UnreadBytes | None = None,
    ) -> None:
        """log_state(revision) reads the log's identity (see storage.identity); without it
        the hub knows only the log's head and compaction point. identity is kept up to date
        for the writes to check; on_reset runs when the database changed (caches to drop).
        timelines records and reads the log's timelines; without it messages name none."""
        self._campaigns = campaigns
        self._log_state = log_state or self._head_and_compaction
        self.identity = identity or LogIdentity()
        self._on_reset = on_reset
        self._timeline_source = timelines
        self._timelines: Timelines | None = None
        # The database's epoch, and the event at head (None: not known), as last seen.
        self._epoch: int | None = None
        self._at_head: Fingerprint | None = None
        self._checked_at = 0.0
        self._check_now = False
        self._encode = encode
        # Taken by each stream before it reads anything, so that a refused one costs nothing.
        self.streams = streams or WatchStreamCounts()
        # The heartbeat of the latest revision, shared by every idle stream.
        self._heartbeat = Item(Kind.HEARTBEAT, -1)
        self.heartbeat_interval = heartbeat_interval
        self._send_timeout = send_timeout
        # Shared by the snapshots and replays of every stream (see turns.py).
        self._send_turns = send_turns or SendTurns()
        # Streams cancelled for a client that stopped reading (see _cancel_stuck).
        self.stuck_cancelled = 0
        # The bytes of the messages in sends not completed yet; a stream waits for room
        # for its next one at most as long as a send may take (see _room).
        self.unread = unread or UnreadBytes()
        # What _log_unread last reported, and whether a report is due.
        self._unread_logged = (0, 0)
        self._unread_log: asyncio.TimerHandle | None = None
        self._buffer_limit = buffer_limit
        self._poll_interval = poll_interval
        self._subs: dict[tuple[str, str], set[Subscription]] = {}
        self._listeners: list[Callable[[Event], None]] = []
        self._subscribed = 0
        # Subscriptions of the full view: while there are any, the log is read with campaigns.
        self._full_subscribers = 0
        self._wake = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._closed = False
        # Every event up to head has been handed to the subscriptions it matches.
        self.head = 0
        # When (the loop's clock) the last read that found nothing after head began: the
        # log's head was head then, or later. None before the first.
        self._read_at: float | None = None
        # When the last read that reached the head, or handed out a batch on its way there,
        # began: a hub catching up on a long backlog reads all along without reaching it.
        self._progress_at: float | None = None
        # Set while the streams are ended for a log not read: logged once an outage.
        self._unread_since: float | None = None

    @property
    def timeline(self) -> str:
        """The token of the log's current timeline, as this hub last found it."""
        return "" if self._timelines is None else self._timelines.current.token

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        if self._timeline_source is not None:
            self._timelines = await self._timeline_source.start(fork=False)
        state = await self._log_state(0)
        self.head, self._at_head, self._epoch = state.head, state.last, state.epoch
        self.identity.set(state.epoch, state.head)
        self.identity.on_mismatch = self.check_log_soon
        self._read_at = self._progress_at = self._loop.time()
        self._tasks = [
            asyncio.create_task(self._tail(), name="watch-hub"),
            asyncio.create_task(self._beat(), name="watch-heartbeats"),
        ]

    def publish(self, events: list[Event]) -> None:
        """Called by this process's writer after a commit with the events it wrote: on the
        hub's event loop, where its callers are; from anywhere else it goes there first."""
        loop = self._loop
        if not events or loop is None or loop.is_closed():
            return
        try:
            running: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            self._publish(events)
        else:
            loop.call_soon_threadsafe(self._publish, events)

    def wake(self, revision: int = 0) -> None:
        """Reads the log now: some process wrote up to revision to it (0: unknown).

        Called on the event loop's thread. This process's own writes arrive through
        publish() first, so their announcements find nothing left to read.
        """
        if revision == 0 or revision > self.head:
            self._wake.set()

    def _publish(self, events: list[Event]) -> None:
        fresh = [e for e in events if e.revision > self.head]
        if not fresh:
            return
        if fresh[0].revision != self.head + 1:
            # Another process wrote in between: the log fills the gap, in order.
            self._wake.set()
            return
        for event in fresh:
            self._dispatch(event)
        self.head = fresh[-1].revision
        self._at_head = fingerprint(fresh[-1])

    def check_log_soon(self) -> None:
        """Checks the log's identity now rather than at the next poll; from any thread."""
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self._request_check)

    def _request_check(self) -> None:
        self._check_now = True
        self._wake.set()

    @property
    def subscriber_count(self) -> int:
        return sum(len(s) for s in self._subs.values())

    async def close(self) -> None:
        """Ends every stream with UNAVAILABLE so that clients reconnect elsewhere."""
        self._closed = True
        if self._unread_log is not None:
            self._unread_log.cancel()
            self._log_unread()
        self._end_all(_shutting_down)
        self._wake.set()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def _end_all(self, why: Callable[[], CampaignError]) -> None:
        for subs in self._subs.values():
            for sub in subs:
                sub.end(why)

    def _subscribe(
        self, customer_id: str, campaign_id: str, full: bool, leases: bool
    ) -> Subscription:
        self.streams.take(customer_id)
        self._subscribed += 1
        sub = Subscription(
            customer_id,
            campaign_id,
            self._buffer_limit,
            self._subscribed % _BEAT_SLOTS,
            full,
            leases,
        )
        if self._closed:
            sub.end(_shutting_down)
        self._subs.setdefault(sub.key, set()).add(sub)
        self._full_subscribers += full
        return sub

    def _unsubscribe(self, sub: Subscription) -> None:
        self.streams.release(sub.customer_id)
        self._full_subscribers -= sub.full
        subs = self._subs.get(sub.key)
        if subs is not None:
            subs.discard(sub)
            if not subs:
                del self._subs[sub.key]

    def add_listener(self, listener: Callable[[Event], None]) -> None:
        """listener sees every change this hub reads, on the event loop, as it reads it."""
        self._listeners.append(listener)

    def _dispatch(self, event: Event) -> None:
        for listener in self._listeners:
            listener(event)
        status: Item | None = None
        full: Item | None = None
        lease = event.reason in LEASE_REASONS
        for key in ((event.customer_id, event.campaign_id), (event.customer_id, ""), ("", "")):
            for sub in self._subs.get(key, ()):
                if lease and not sub.leases:
                    continue
                if not sub.full:
                    if status is None:
                        # What the status view buffers holds no campaign.
                        light = dataclasses.replace(event, campaign=None)
                        change = Item(
                            Kind.CHANGE, event.revision, event=light, timeline=self.timeline
                        )
                        status = self._shared(change)
                    sub.push(status)
                elif event.campaign is not None:
                    if full is None:
                        item = Item(
                            Kind.CHANGE,
                            event.revision,
                            event=event,
                            full=True,
                            timeline=self.timeline,
                        )
                        full = self._shared(item)
                    sub.push(full)
                else:  # pragma: no cover - _catch_up reads campaigns while full streams exist
                    log.error("event %d reached a full view without its campaign", event.revision)
                    sub.end(_resume_needed)

    def _shared(self, item: Item) -> Item:
        """The item with its payload, encoded once for all the streams that send it."""
        if self._encode is None:
            return item
        return dataclasses.replace(item, payload=self._encode(item))

    def _heartbeat_at(self, revision: int) -> Item:
        timeline = self.timeline
        if (self._heartbeat.revision, self._heartbeat.timeline) != (revision, timeline):
            beat = Item(
                Kind.HEARTBEAT,
                revision,
                heartbeat_interval=self.heartbeat_interval,
                timeline=timeline,
            )
            self._heartbeat = self._shared(beat)
        return self._heartbeat

    async def _beat(self) -> None:
        """Wakes every stream once per heartbeat interval: those with nothing to send send a
        heartbeat. One timer for all of them, not one each, and a slot of them at a time,
        so that 10,000 heartbeats do not go out in the same instant."""
        slot = 0
        while True:
            await asyncio.sleep(self.heartbeat_interval / _BEAT_SLOTS)
            now = asyncio.get_running_loop().time()
            # Here, not in the reading task: a read that hangs holds that one up too.
            self._end_if_unread(now)
            for subs in self._subs.values():
                for sub in subs:
                    if sub.beat_slot == slot:
                        sub.wake()
                        if sub.stuck(now, self._send_timeout):
                            self._cancel_stuck(sub)
            slot = (slot + 1) % _BEAT_SLOTS

    def _cancel_stuck(self, sub: Subscription) -> None:
        """Ends a stream whose client has stopped reading: its send would wait for the
        client's flow-control window for as long as the connection lives, holding its place
        among the server's streams. Cancelled, it frees them at once."""
        if sub.task is None or sub.task.done():
            return
        sub.task.cancel()
        sub.task = None
        self.stuck_cancelled += 1
        self._report_unread()

    def _report_unread(self) -> None:
        """Logs the streams ended for clients that do not read at the end of the interval."""
        if self._unread_log is None and not self._closed:
            loop = asyncio.get_running_loop()
            self._unread_log = loop.call_later(UNREAD_LOG_INTERVAL, self._log_unread)

    def _log_unread(self) -> None:
        self._unread_log = None
        cancelled, refused = self.stuck_cancelled, self.unread.refused
        was_cancelled, was_refused = self._unread_logged
        if (cancelled, refused) == (was_cancelled, was_refused):
            return
        self._unread_logged = (cancelled, refused)
        log.warning(
            "WatchStatus clients that do not read: since the last report, %d streams "
            "cancelled after %g s without sending, %d refused room for their next message "
            "(%s held for unread messages; %d and %d since start)",
            cancelled - was_cancelled,
            self._send_timeout,
            refused - was_refused,
            f"{self.unread.total / (1024 * 1024):.1f} MiB",
            cancelled,
            refused,
        )

    def _head_age(self, now: float) -> float:
        """Seconds since the log's head was last read (0 before the hub started)."""
        return 0.0 if self._read_at is None else max(0.0, now - self._read_at)

    def _head_is_fresh(self, now: float) -> bool:
        return self._head_age(now) <= self.heartbeat_interval

    def _stalled_for(self, now: float) -> float:
        return 0.0 if self._progress_at is None else max(0.0, now - self._progress_at)

    def _unread_too_long(self, now: float) -> bool:
        return self._stalled_for(now) > _UNREAD_INTERVALS * self.heartbeat_interval

    def _end_if_unread(self, now: float) -> None:
        """Ends every stream once the log has not been read for _UNREAD_INTERVALS intervals:
        heartbeats of the last head read would tell clients all is well while changes
        committed through other replicas do not reach them."""
        if not self._unread_too_long(now):
            if self._unread_since is not None:
                log.warning("the event log is read again: WatchStatus streams are served")
                self._unread_since = None
            return
        unread, head = self._stalled_for(now), self.head
        if self._unread_since is None:
            self._unread_since = now
            log.warning(
                "the event log has not been read for %.1f s: ending %d WatchStatus streams, "
                "and refusing new ones until it is",
                unread,
                self.subscriber_count,
            )
        self._end_all(lambda: _log_unreadable(unread, head))
        self._interrupt_reads()

    def _interrupt_reads(self) -> None:
        """Cancels the streams still waiting for a read of their snapshot or replay, which
        a database that does not answer holds for as long as TCP waits; each ends with
        what it was ended with (see watch)."""
        for subs in self._subs.values():
            for sub in subs:
                if sub.reading and sub.task is not None and not sub.task.done():
                    sub.task.cancel()
                    sub.task = None

    async def _room(self, sub: Subscription, item: Item, within: float) -> Item:
        """The item with its payload, once the stream holds room for it among the bytes
        sent and not yet read (ops.limits.UnreadBytes), waiting within seconds at most. A
        payload made for this stream alone (a snapshot's, a replay's) is not kept while it
        waits: thousands of streams of a client that does not read would keep theirs."""
        if self._encode is None:
            return item
        payload = item.payload if item.payload is not None else self._encode(item)
        size = len(payload)
        if not self.unread.try_take(sub.customer_id, size):
            del payload
            # The wait is not a send stuck: the stream is not cancelled for it (see stuck()).
            sub.sent_at = asyncio.get_running_loop().time()
            try:
                await self.unread.take(sub.customer_id, size, within)
            except ResourceExhausted:
                self._report_unread()
                raise
            payload = item.payload if item.payload is not None else self._encode(item)
        sub.unread = size
        return item if item.payload is not None else dataclasses.replace(item, payload=payload)

    def _sent(self, sub: Subscription) -> None:
        """The stream's message left (or never will): its room goes to the next."""
        self.unread.give_back(sub.customer_id, sub.unread)
        sub.unread = 0

    async def _tail(self) -> None:
        # Often enough that a heartbeat always finds a head read within its interval.
        pause = min(self._poll_interval, self.heartbeat_interval / _READS_PER_INTERVAL)
        while not self._closed:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(pause):
                    await self._wake.wait()
            self._wake.clear()
            try:
                await self._catch_up()
                # A busy log is read without pause, but its identity is checked at least
                # once a poll interval all the same.
                due = self._checked_at + self._poll_interval
                if self._check_now or asyncio.get_running_loop().time() >= due:
                    await self._check_log()
            except Exception:
                log.warning("reading the event log failed; retrying", exc_info=True)

    async def _read_log(self, after: int) -> list[Event]:
        """The next events, with their campaigns while any stream has the full view."""
        full = self._full_subscribers > 0
        events = await self._campaigns.events_after(after, "", "", _READ_BATCH, full=full)
        if not full and self._full_subscribers > 0:
            # A full-view stream subscribed during the read: it needs the campaigns too.
            events = await self._campaigns.events_after(after, "", "", _READ_BATCH, full=True)
        return events

    async def _catch_up(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            began = loop.time()
            after = self.head
            # With the event at head known, the read starts with it: a log that holds
            # another event there is not the one this hub followed (see storage.identity).
            known = self._at_head if self._at_head and self._at_head[0] == after else None
            events = await self._read_log(after - 1 if known else after)
            more = len(events) == _READ_BATCH
            if known:
                if not events or events[0].revision != after or fingerprint(events[0]) != known:
                    # Another event, or none (removed by compaction, or a log that went back).
                    await self._check_log()
                    if (self.head, self._at_head) == (after, known):
                        return  # nothing learnt: the next poll reads again
                    continue
                events = events[1:]
            if not events or events[0].revision != after + 1:
                # Revisions have no holes: the next one is not written yet, or compaction
                # removed it before this hub read it.
                await self._check_log()
            # What this process published while the read was under way is out already.
            fresh = [e for e in events if e.revision > self.head]
            for event in fresh:
                self._dispatch(event)
            if fresh:
                self.head = fresh[-1].revision
                self._at_head = fingerprint(fresh[-1])
            self._progress_at = began
            if not more:
                # The log held nothing after head when this read began.
                self._read_at = began
                return

    async def _head_and_compaction(self, revision: int) -> LogState:
        """All a hub without log_state learns of the log: no epoch, no events."""
        compacted = await self._campaigns.compacted_revision()
        head = await self._campaigns.head_revision()
        return LogState(epoch=None, head=head, compacted=compacted, at=None, last=None)

    async def _check_log(self) -> None:
        """Ends every stream when the database is not the one this hub followed, or when
        compaction removed events it never handed out; keeps the identity up to date."""
        self._check_now = False
        head = self.head
        state = await self._log_state(head)
        self._checked_at = asyncio.get_running_loop().time()
        known = self._at_head if self._at_head and self._at_head[0] == head else None
        why = ""
        if self._epoch is not None and state.epoch != self._epoch:
            why = "its epoch differs (the database was made anew, or is another one)"
        elif state.head < head:
            why = (
                f"its log went back from revision {head} (restored from an older backup, or "
                "a lagging standby promoted)"
            )
        elif known and state.at and state.at != known:
            why = f"its log holds another change at revision {head} (restored, then written)"
        if why:
            if self._timeline_source is not None:
                # The same database with another log from some revision on: its revisions
                # after the head name other changes than those sent. Recorded before the
                # writes, which wait for the reset, count on from it. (A database made
                # anew has timelines of its own, none of which the old ones are.)
                fork = state.epoch == self._epoch
                self._timelines = await self._timeline_source.start(fork=fork)
            self._reset(state, why, head)
            return
        if self._timeline_source is not None:
            # A copy that did not go back (a standby promoted as it had caught up) is found
            # by its place: its revisions are all shared, and the streams go on.
            self._timelines = await self._timeline_source.start(fork=False)
        if known and state.at is None:
            self._at_head = None  # compacted away: nothing left to compare with
        if state.compacted > self.head:
            self._fell_behind_compaction(state.compacted)
        self.identity.set(self._epoch, self.head)

    def _reset(self, state: LogState, why: str, sent: int) -> None:
        log.warning(
            "the database changed under this server: %s; its log is at revision %d; "
            "ending %d streams and dropping the caches",
            why,
            state.head,
            self.subscriber_count,
        )
        self._end_all(lambda: _database_changed(why, state.head, sent))
        self.head, self._at_head, self._epoch = state.head, state.last, state.epoch
        self.identity.set(state.epoch, state.head)
        self._on_reset()

    def _fell_behind_compaction(self, compacted: int) -> None:
        # Events this hub never handed out are gone: every stream it feeds would skip them,
        # so each ends as a resume from before the compaction point does.
        log.warning(
            "the event log was compacted up to revision %d before this server read it from "
            "revision %d; ending %d streams",
            compacted,
            self.head + 1,
            self.subscriber_count,
        )
        lost = (
            "this server fell behind the log, which no longer holds the changes after "
            f"revision {self.head}"
        )
        self._end_all(lambda: _compacted(compacted, lost))
        self.head = compacted
        self._at_head = None

    async def watch(
        self,
        customer_id: str,
        campaign_id: str,
        after_revision: int,
        *,
        full: bool = False,
        timeline: str = "",
        leases: bool = False,
    ) -> AsyncGenerator[Item, None]:
        """A stream's items: snapshot or replay first, then live changes and heartbeats.

        Revisions never go down, so every one the stream sends is a point to resume from.
        """
        # Subscribe before reading, so that nothing committed after the read is missed;
        # what both deliver is dropped by revision.
        sub = self._subscribe(customer_id, campaign_id, full, leases)
        loop = asyncio.get_running_loop()
        task = sub.task = asyncio.current_task()
        sub.sent_at = loop.time()
        try:
            if self._unread_too_long(loop.time()):
                raise _log_unreadable(self._stalled_for(loop.time()), self.head)
            first = (
                self._snapshot(customer_id, campaign_id, full)
                if after_revision == 0
                else self._replay(customer_id, campaign_id, after_revision, full, timeline, leases)
            )
            cursor = after_revision
            async with contextlib.aclosing(first):
                sent = 0
                while True:
                    sub.reading = True
                    try:
                        item = await anext(first)
                    except StopAsyncIteration:
                        break
                    except asyncio.CancelledError:
                        # Cancelled by the hub (which took the task) and by no one else.
                        if sub.task is None and task is not None and task.uncancel() == 0:
                            sub.take()  # raises what the hub ended the stream with
                        raise
                    finally:
                        sub.reading = False
                    cursor = item.revision
                    sent += 1
                    item = await self._room(sub, item, min(BULK_ROOM_WAIT, self._send_timeout))
                    if sent <= FREE_BULK_ITEMS:
                        yield item
                    else:
                        turn = await self._send_turns.take()
                        try:
                            yield item
                        finally:
                            turn.give_back()
                    self._sent(sub)
                    sub.sent_at = loop.time()
            # An idle stream keeps nothing of its snapshot.
            del first
            while True:
                waiter = sub.waiting()
                if waiter is not None:
                    await waiter
                changes = sub.take()
                if not changes:
                    if not self._head_is_fresh(loop.time()):
                        # A heartbeat would vouch for a head not read lately: silence says
                        # more, until the stream is ended (see _end_if_unread).
                        continue
                    cursor = max(cursor, self.head)
                    yield await self._room(sub, self._heartbeat_at(cursor), self._send_timeout)
                    self._sent(sub)
                    sub.sent_at = loop.time()
                    continue
                for change in changes:
                    if change.revision > cursor:
                        cursor = change.revision
                        yield await self._room(sub, change, self._send_timeout)
                        self._sent(sub)
                        sub.sent_at = loop.time()
                del changes
        finally:
            self._sent(sub)
            self._unsubscribe(sub)

    async def _snapshot(
        self, customer_id: str, campaign_id: str, full: bool
    ) -> AsyncGenerator[Item, None]:
        """The snapshot's items in revision order, page by page, then its SNAPSHOT_END."""
        if campaign_id:
            found, head = await self._campaigns.snapshot_one(customer_id, campaign_id, full=full)
            if found is None:
                raise NotFound(f"campaign {campaign_id} not found", metadata={"id": campaign_id})
            yield _snapshot_item(found, self.timeline)
        else:
            head = await self._campaigns.head_revision()
            page_size = _FULL_SNAPSHOT_PAGE if full else _SNAPSHOT_PAGE
            after = 0
            # Asked as the first page is read, which may be long after this stream asked
            # (behind the snapshots of thousands of others): when the customer's streams
            # hold their whole budget of unread messages by then, the read is not worth
            # doing, and would only hold up other customers' snapshots behind it.
            refusal: Callable[[], CampaignError | None] = partial(
                self.unread.refusal_now, customer_id
            )
            while True:
                try:
                    page = await self._campaigns.snapshot_page(
                        customer_id, after, head, page_size, full=full, refusal=refusal
                    )
                except ResourceExhausted:
                    self._report_unread()
                    raise
                # Only the first page: a snapshot under way is not broken off.
                refusal = _admitted
                for found in page:
                    yield _snapshot_item(found, self.timeline)
                if len(page) < page_size:
                    break
                after = page[-1].revision
                del page
        yield Item(
            Kind.SNAPSHOT_END,
            head,
            heartbeat_interval=self.heartbeat_interval,
            timeline=self.timeline,
        )

    async def _replay(
        self,
        customer_id: str,
        campaign_id: str,
        after_revision: int,
        full: bool,
        timeline: str,
        leases: bool,
    ) -> AsyncGenerator[Item, None]:
        """The changes after after_revision, then a heartbeat: the stream has caught up."""
        if timeline and self._timeline_source is not None:
            # Read now, not as the hub last saw them: another server may have recorded a
            # fork, and written past it, since.
            shared = (await self._timeline_source.read()).shared_up_to(timeline)
            if shared is None or after_revision > shared:
                raise _not_in_this_log(timeline, after_revision, shared)
        if campaign_id:
            await self._campaigns.get(customer_id, campaign_id)
        head = await self._campaigns.head_revision()
        if after_revision > head:
            raise OutOfRange(
                f"revision {after_revision} is ahead of the log (at {head}); "
                "start again from a snapshot",
                reason="REVISION_AHEAD_OF_LOG",
                metadata={"head_revision": str(head)},
            )
        if full:
            recorded = await self._campaigns.full_history_from()
            if after_revision < recorded:
                raise OutOfRange(
                    f"the changes up to revision {recorded} were logged before the log kept "
                    "whole campaigns; start again from a snapshot",
                    reason="FULL_VIEW_NOT_RECORDED",
                    metadata={"oldest_revision": str(recorded + 1)},
                )
        batch = _FULL_READ_BATCH if full else _READ_BATCH
        cursor = after_revision
        while True:
            events = await self._campaigns.events_after(
                cursor, customer_id, campaign_id, batch, full=full
            )
            # Read after the events: compaction only moves forward, so if it has not passed
            # the cursor now, it had not when the events were read, and they have no gap.
            compacted = await self._campaigns.compacted_revision()
            if compacted > cursor:
                raise _compacted(
                    compacted, f"the log no longer holds the changes after revision {cursor}"
                )
            for event in events:
                cursor = event.revision
                if not leases and event.reason in LEASE_REASONS:
                    continue
                yield Item(Kind.CHANGE, cursor, event=event, full=full, timeline=self.timeline)
            if len(events) < batch:
                break
            del events
        # Every matching change up to head has been sent (and those after it, to cursor).
        yield Item(
            Kind.HEARTBEAT,
            max(cursor, head),
            heartbeat_interval=self.heartbeat_interval,
            timeline=self.timeline,
        )


def _snapshot_item(found: Campaign | CampaignState, timeline: str) -> Item:
    if isinstance(found, Campaign):
        return Item(Kind.SNAPSHOT, found.revision, campaign=found, timeline=timeline)
    return Item(Kind.SNAPSHOT, found.revision, state=found, timeline=timeline)


def _admitted() -> CampaignError | None:
    return None


def _resume_needed() -> CampaignError:
    return Unavailable("the stream must be resumed; reconnect and resume", reason="RESUME")
