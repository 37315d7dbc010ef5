"""The watch hub: fans each new event of the log out to the streams it matches, and wakes
idle streams to send their heartbeats.

The event log in the database is the truth. The hub's log tail (log_tail.py) reads new events
once, in revision order, and the hub hands each to the subscriptions it matches
(subscription.py); a stream starts from a snapshot or a replay of the log (history.py), then
follows its subscription. A stream that cannot keep up is ended instead of growing without
bound, and resumes from the last revision it received.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import AsyncGenerator, Awaitable, Callable

from ..domain.campaigns import Campaigns
from ..domain.errors import CampaignError
from ..domain.types import LEASE_REASONS, Event
from ..ops.limits import UnreadBytes, WatchStreamCounts
from ..storage.identity import LogIdentity, LogState
from ..storage.timelines import TimelineSource
from . import errors
from .history import History
from .items import Encode, Item, Kind
from .log_tail import LogTail
from .slow_readers import SlowReaders
from .subscription import Subscription
from .turns import SendTurns

log = logging.getLogger(__name__)

# The items of a snapshot or replay sent before it takes turns (see turns.py): a watch of one
# campaign or of a small customer is over before it could hold anyone up, and thousands of
# such watches opening at once are not slowed down by a queue for turns (see
# bench/fanout.py, which opens 10,000 watches of one campaign).
FREE_BULK_ITEMS = 32
# Heartbeats go out to one slot of the streams at a time, a slot every interval / _BEAT_SLOTS.
_BEAT_SLOTS = 16
# How long a snapshot's or a replay's next item may wait for room among the unread bytes
# (ops.limits.UnreadBytes): meanwhile the stream holds its page of campaigns, its own when
# the caches could not keep them (up to about 1 MB each), and the server's memory grows with
# every stream that waits. Room taken by clients that read comes back soon; room that does
# not come back within this is held by clients that do not read. Live changes wait up to
# --watch-send-timeout: what they hold is shared.
BULK_ROOM_WAIT = 1.0


class Hub:
    """Fans each new event of the log out to the matching subscriptions."""

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
        self._tail = LogTail(
            campaigns,
            poll_interval=poll_interval,
            heartbeat_interval=heartbeat_interval,
            log_state=log_state,
            identity=identity or LogIdentity(),
            on_reset=on_reset,
            timelines=timelines,
            dispatch=self._dispatch,
            end_all=self._end_all,
            subscriber_count=lambda: self.subscriber_count,
            full_view=lambda: self._full_subscribers > 0,
        )
        self._encode = encode
        # Taken by each stream before it reads anything, so that a refused one costs nothing.
        self.streams = streams or WatchStreamCounts()
        # The heartbeat of the latest revision, shared by every idle stream.
        self._heartbeat = Item(Kind.HEARTBEAT, -1)
        self.heartbeat_interval = heartbeat_interval
        self._send_timeout = send_timeout
        # Shared by the snapshots and replays of every stream (see turns.py).
        self._send_turns = send_turns or SendTurns()
        # The bytes of the messages in sends not completed yet, and the streams cancelled
        # for clients that stopped reading.
        self.unread = unread or UnreadBytes()
        self._slow = SlowReaders(self.unread, encode, send_timeout)
        self._history = History(
            campaigns,
            heartbeat_interval=heartbeat_interval,
            timeline=lambda: self.timeline,
            timelines=timelines,
            unread=self.unread,
            on_refused=self._slow.report,
        )
        self._buffer_limit = buffer_limit
        self._subs: dict[tuple[str, str], set[Subscription]] = {}
        self._listeners: list[Callable[[Event], None]] = []
        self._subscribed = 0
        # Subscriptions of the full view: while there are any, the log is read with campaigns.
        self._full_subscribers = 0
        self._tasks: list[asyncio.Task[None]] = []
        self._closed = False
        # Set while the streams are ended for a log not read: logged once an outage.
        self._unread_since: float | None = None

    @property
    def head(self) -> int:
        """Every event up to head has been handed to the subscriptions it matches."""
        return self._tail.head

    @property
    def timeline(self) -> str:
        """The token of the log's current timeline, as this hub last found it."""
        return self._tail.timeline

    @property
    def stuck_cancelled(self) -> int:
        """Streams cancelled for a client that stopped reading (see SlowReaders.cancel_stuck)."""
        return self._slow.stuck_cancelled

    async def start(self) -> None:
        await self._tail.start()
        self._tasks = [
            asyncio.create_task(self._tail.run(), name="watch-hub"),
            asyncio.create_task(self._beat(), name="watch-heartbeats"),
        ]

    def publish(self, events: list[Event]) -> None:
        """Called by this process's writer after a commit with the events it wrote: on the
        hub's event loop, where its callers are; from anywhere else it goes there first."""
        self._tail.publish(events)

    def wake(self, revision: int = 0) -> None:
        """Reads the log now: some process wrote up to revision to it (0: unknown).

        Called on the event loop's thread. This process's own writes arrive through
        publish() first, so their announcements find nothing left to read.
        """
        self._tail.wake(revision)

    @property
    def subscriber_count(self) -> int:
        return sum(len(s) for s in self._subs.values())

    async def close(self) -> None:
        """Ends every stream with UNAVAILABLE so that clients reconnect elsewhere."""
        self._closed = True
        self._slow.close()
        self._end_all(errors.shutting_down)
        self._tail.close()
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
            sub.end(errors.shutting_down)
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
                else:  # pragma: no cover - the log tail reads campaigns while full streams exist
                    log.error("event %d reached a full view without its campaign", event.revision)
                    sub.end(errors.resume_needed)

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
        so that thousands of heartbeats do not go out in the same instant."""
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
                            self._slow.cancel_stuck(sub)
            slot = (slot + 1) % _BEAT_SLOTS

    def _end_if_unread(self, now: float) -> None:
        """Ends every stream once the log has not been read for too long (see LogTail):
        heartbeats of the last head read would tell clients all is well while changes
        committed through other replicas do not reach them."""
        if not self._tail.unread_too_long(now):
            if self._unread_since is not None:
                log.warning("the event log is read again: WatchStatus streams are served")
                self._unread_since = None
            return
        unread, head = self._tail.stalled_for(now), self.head
        if self._unread_since is None:
            self._unread_since = now
            log.warning(
                "the event log has not been read for %.1f s: ending %d WatchStatus streams, "
                "and refusing new ones until it is",
                unread,
                self.subscriber_count,
            )
        self._end_all(lambda: errors.log_unreadable(unread, head))
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
            if self._tail.unread_too_long(loop.time()):
                raise errors.log_unreadable(self._tail.stalled_for(loop.time()), self.head)
            first = (
                self._history.snapshot(customer_id, campaign_id, full)
                if after_revision == 0
                else self._history.replay(
                    customer_id, campaign_id, after_revision, full, timeline, leases
                )
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
                    item = await self._slow.room(sub, item, min(BULK_ROOM_WAIT, self._send_timeout))
                    if sent <= FREE_BULK_ITEMS:
                        yield item
                    else:
                        turn = await self._send_turns.take()
                        try:
                            yield item
                        finally:
                            turn.give_back()
                    self._slow.sent(sub)
                    sub.sent_at = loop.time()
            # An idle stream keeps nothing of its snapshot.
            del first
            while True:
                waiter = sub.waiting()
                if waiter is not None:
                    await waiter
                changes = sub.take()
                if not changes:
                    if not self._tail.head_is_fresh(loop.time()):
                        # A heartbeat would vouch for a head not read lately: silence says
                        # more, until the stream is ended (see _end_if_unread).
                        continue
                    cursor = max(cursor, self.head)
                    yield await self._slow.room(sub, self._heartbeat_at(cursor), self._send_timeout)
                    self._slow.sent(sub)
                    sub.sent_at = loop.time()
                    continue
                for change in changes:
                    if change.revision > cursor:
                        cursor = change.revision
                        yield await self._slow.room(sub, change, self._send_timeout)
                        self._slow.sent(sub)
                        sub.sent_at = loop.time()
                del changes
        finally:
            self._slow.sent(sub)
            self._unsubscribe(sub)
