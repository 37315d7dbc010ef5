"""A work queue of keys, as client-go's: a key waits at most once however often it is added,
is handed to one worker at a time, and one added while its worker runs comes back after."""

from __future__ import annotations

import asyncio


class WorkQueue:
    def __init__(self) -> None:
        self._ready: asyncio.Queue[str] = asyncio.Queue()
        self._waiting: set[str] = set()
        self._running: set[str] = set()
        # Added while running: queued again once its worker is done.
        self._again: set[str] = set()
        self._later: dict[str, asyncio.TimerHandle] = {}

    def add(self, key: str) -> None:
        if key in self._running:
            self._again.add(key)
        elif key not in self._waiting:
            self._waiting.add(key)
            self._ready.put_nowait(key)

    def add_after(self, key: str, delay: float) -> None:
        """Adds key in delay seconds (a retry with backoff); a sooner add takes it first."""
        if key in self._later:
            return
        loop = asyncio.get_running_loop()

        def due() -> None:
            del self._later[key]
            self.add(key)

        self._later[key] = loop.call_later(delay, due)

    async def get(self) -> str:
        key = await self._ready.get()
        self._waiting.discard(key)
        self._running.add(key)
        return key

    def done(self, key: str) -> None:
        self._running.discard(key)
        if key in self._again:
            self._again.discard(key)
            self.add(key)

    def close(self) -> None:
        for handle in self._later.values():
            handle.cancel()
        self._later.clear()
