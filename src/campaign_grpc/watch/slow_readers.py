"""Streams whose clients do not read: the room each message takes among the bytes sent and
not yet read, the cancelling of sends stuck for good, and their warnings, counted.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging

from ..domain.errors import ResourceExhausted
from ..ops.limits import UnreadBytes
from .items import Encode, Item
from .subscription import Subscription

log = logging.getLogger(__name__)

# Streams ended for clients that do not read are logged once per this many seconds, with
# their count: thousands of them (one client's) would otherwise log a line each.
UNREAD_LOG_INTERVAL = 10.0


class SlowReaders:
    """The hub's bookkeeping of the bytes its streams hold and of the streams it cancels."""

    def __init__(self, unread: UnreadBytes, encode: Encode | None, send_timeout: float) -> None:
        # The bytes of the messages in sends not completed yet; a stream waits for room
        # for its next one at most as long as a send may take (see room).
        self.unread = unread
        self._encode = encode
        self._send_timeout = send_timeout
        # Streams cancelled for a client that stopped reading (see cancel_stuck).
        self.stuck_cancelled = 0
        # What log_now last reported, and whether a report is due.
        self._logged = (0, 0)
        self._log_handle: asyncio.TimerHandle | None = None
        self._closed = False

    async def room(self, sub: Subscription, item: Item, within: float) -> Item:
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
                self.report()
                raise
            payload = item.payload if item.payload is not None else self._encode(item)
        sub.unread = size
        return item if item.payload is not None else dataclasses.replace(item, payload=payload)

    def sent(self, sub: Subscription) -> None:
        """The stream's message left (or never will): its room goes to the next."""
        self.unread.give_back(sub.customer_id, sub.unread)
        sub.unread = 0

    def cancel_stuck(self, sub: Subscription) -> None:
        """Ends a stream whose client has stopped reading: its send would wait for the
        client's flow-control window for as long as the connection lives, holding its place
        among the server's streams. Cancelled, it frees them at once."""
        if sub.task is None or sub.task.done():
            return
        sub.task.cancel()
        sub.task = None
        self.stuck_cancelled += 1
        self.report()

    def report(self) -> None:
        """Logs the streams ended for clients that do not read at the end of the interval."""
        if self._log_handle is None and not self._closed:
            loop = asyncio.get_running_loop()
            self._log_handle = loop.call_later(UNREAD_LOG_INTERVAL, self.log_now)

    def log_now(self) -> None:
        self._log_handle = None
        cancelled, refused = self.stuck_cancelled, self.unread.refused
        was_cancelled, was_refused = self._logged
        if (cancelled, refused) == (was_cancelled, was_refused):
            return
        self._logged = (cancelled, refused)
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

    def close(self) -> None:
        """Logs what is left to report, and reports nothing after."""
        self._closed = True
        if self._log_handle is not None:
            self._log_handle.cancel()
            self.log_now()
