"""Follows the event log in the database: reads its new events once, in revision order, and
hands each to the hub; checks that the log is still the one it followed.

A write of this process arrives through publish() as it commits; those of other processes
are read on a wake-up (a notification) or at the next poll.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from ..domain.campaigns import Campaigns
from ..domain.errors import CampaignError
from ..domain.types import Event
from ..storage.identity import Fingerprint, LogIdentity, LogState, fingerprint
from ..storage.timelines import Timelines, TimelineSource
from . import errors

log = logging.getLogger(__name__)

_READ_BATCH = 1000
# A heartbeat says the log's head was read at most one heartbeat interval ago; a server that
# has not read it for _UNREAD_INTERVALS intervals ends its streams, so that their clients go to
# another replica before their own rule (three silent intervals) would have to tell them.
_UNREAD_INTERVALS = 2
# The log is read at least this many times a heartbeat interval: one slow read alone does not
# leave the heartbeats without a fresh head.
_READS_PER_INTERVAL = 4


class LogTail:
    """Reads the log after head and hands each new event to dispatch, in order."""

    def __init__(
        self,
        campaigns: Campaigns,
        *,
        poll_interval: float,
        heartbeat_interval: float,
        log_state: Callable[[int], Awaitable[LogState]] | None,
        identity: LogIdentity,
        on_reset: Callable[[], None],
        timelines: TimelineSource | None,
        dispatch: Callable[[Event], None],
        end_all: Callable[[Callable[[], CampaignError]], None],
        subscriber_count: Callable[[], int],
        full_view: Callable[[], bool],
    ) -> None:
        """dispatch hands an event to the streams it matches; end_all ends every stream;
        full_view() says whether any stream has the full view, for which the log is read
        with campaigns. See Hub for the others."""
        self._campaigns = campaigns
        self._poll_interval = poll_interval
        self._heartbeat_interval = heartbeat_interval
        self._log_state = log_state or self._head_and_compaction
        self.identity = identity
        self._on_reset = on_reset
        self._timeline_source = timelines
        self._timelines: Timelines | None = None
        self._dispatch = dispatch
        self._end_all = end_all
        self._subscriber_count = subscriber_count
        self._full_view = full_view
        # The database's epoch, and the event at head (None: not known), as last seen.
        self._epoch: int | None = None
        self._at_head: Fingerprint | None = None
        self._checked_at = 0.0
        self._check_now = False
        self._wake = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closed = False
        # Every event up to head has been handed to the subscriptions it matches.
        self.head = 0
        # When (the loop's clock) the last read that found nothing after head began: the
        # log's head was head then, or later. None before the first.
        self._read_at: float | None = None
        # When the last read that reached the head, or handed out a batch on its way there,
        # began: a hub catching up on a long backlog reads all along without reaching it.
        self._progress_at: float | None = None

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

    def close(self) -> None:
        self._closed = True
        self._wake.set()

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

    def _head_age(self, now: float) -> float:
        """Seconds since the log's head was last read (0 before the hub started)."""
        return 0.0 if self._read_at is None else max(0.0, now - self._read_at)

    def head_is_fresh(self, now: float) -> bool:
        return self._head_age(now) <= self._heartbeat_interval

    def stalled_for(self, now: float) -> float:
        return 0.0 if self._progress_at is None else max(0.0, now - self._progress_at)

    def unread_too_long(self, now: float) -> bool:
        return self.stalled_for(now) > _UNREAD_INTERVALS * self._heartbeat_interval

    async def run(self) -> None:
        # Often enough that a heartbeat always finds a head read within its interval.
        pause = min(self._poll_interval, self._heartbeat_interval / _READS_PER_INTERVAL)
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
        full = self._full_view()
        events = await self._campaigns.events_after(after, "", "", _READ_BATCH, full=full)
        if not full and self._full_view():
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
            self._subscriber_count(),
        )
        self._end_all(lambda: errors.database_changed(why, state.head, sent))
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
            self._subscriber_count(),
        )
        lost = (
            "this server fell behind the log, which no longer holds the changes after "
            f"revision {self.head}"
        )
        self._end_all(lambda: errors.compacted(compacted, lost))
        self.head = compacted
        self._at_head = None
