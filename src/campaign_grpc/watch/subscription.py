"""A watch stream's subscription: what the stream has yet to send, in a bounded buffer.

The hub pushes each change to the subscriptions it matches; the stream takes them when it
can send. One that falls a whole buffer behind is ended rather than grown without bound.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from ..domain.errors import CampaignError
from .errors import too_slow
from .items import Item


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
        # in a send its client does not read (see SlowReaders.cancel_stuck).
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
            self.end(too_slow)
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
