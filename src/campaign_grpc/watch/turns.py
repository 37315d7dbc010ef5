"""Turns at sending the bulk of a stream: the items of a snapshot or of a replay.

grpc.aio sends every message from the event loop, and the kernel's send on loopback runs
with the interpreter held, so each message costs the loop a share of its time. A few large
snapshots sending at once queue every step of a unary call behind theirs (another customer's
GetCampaign waits many times longer than when idle); sent one item at a time, the loop has
room between them, for somewhat less snapshot throughput (see bench/big.py).
Live changes and heartbeats take no turn: they are few, and late ones are what a watch is for.
"""

from __future__ import annotations

import asyncio


class Turn:
    """A turn taken; given back once, by its holder or by the clock, whichever comes first."""

    __slots__ = ("_expiry", "_semaphore")

    def __init__(self, semaphore: asyncio.Semaphore, hold_s: float) -> None:
        self._semaphore: asyncio.Semaphore | None = semaphore
        self._expiry = asyncio.get_running_loop().call_later(hold_s, self.give_back)

    def give_back(self) -> None:
        if self._semaphore is not None:
            self._expiry.cancel()
            self._semaphore.release()
            self._semaphore = None


class SendTurns:
    """At most `concurrent` streams send a bulk item at once. A turn lasts at most hold_s:
    a client that stops reading, whose send never completes, does not keep it."""

    def __init__(self, concurrent: int = 1, hold_s: float = 0.02) -> None:
        if concurrent < 1:
            raise ValueError("concurrent must be at least 1")
        self._semaphore = asyncio.Semaphore(concurrent)
        self._hold_s = hold_s

    async def take(self) -> Turn:
        await self._semaphore.acquire()
        return Turn(self._semaphore, self._hold_s)
