"""A cache of values derived from one version of a campaign, bounded in bytes.

A campaign's (customer_id, id, version, time of that version) never names two different
contents: every change takes a new version, written at its own microsecond. What is derived
from one version can therefore be kept without ever being invalidated, even across a
database restored from a backup, where the same version number may come back with other
contents but never at the same time. The bound only limits memory, and it is counted in
bytes: a campaign of 1,000 actions costs a thousand times one of two actions.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Generic, TypeVar

from ..domain.types import Campaign

V = TypeVar("V")
# customer_id, id, version, and the time of that version in microseconds (tm_update, or
# tm_create for the first version).
Key = tuple[str, str, int, int]


def version_key(c: Campaign) -> Key:
    return (c.customer_id, c.id, c.version, c.tm_create if c.tm_update is None else c.tm_update)


class VersionCache(Generic[V]):
    """Two generations of at most half the budget each: new entries go to the young one;
    when it is full it becomes the old one and the previous old one is dropped whole. A hit
    in the old generation moves up. age() turns the generations over as well, so that what
    nobody reads leaves within two calls of it, and an idle server gives its memory back.

    Each value comes with its size in bytes, as its maker estimates it. A value larger than
    a generation is made and returned but not kept. One lock guards the dicts and the
    byte counts; it is never held while a value is made.
    """

    def __init__(self, budget_bytes: int) -> None:
        self.budget_bytes = budget_bytes
        self._generation = max(1, budget_bytes // 2)
        self._lock = threading.Lock()
        self._young: dict[Key, tuple[V, int]] = {}
        self._old: dict[Key, tuple[V, int]] = {}
        self._young_bytes = 0
        self._old_bytes = 0

    def peek(self, key: Key) -> V | None:
        with self._lock:
            entry = self._young.get(key)
            if entry is None:
                entry = self._old.pop(key, None)
                if entry is None:
                    return None
                self._old_bytes -= entry[1]
                self._put(key, entry)
            return entry[0]

    def get(self, key: Key, make: Callable[[], tuple[V, int]]) -> V:
        """The value of key, made by make() (the value and its size) when it is not held."""
        value = self.peek(key)
        if value is None:
            value, size = make()
            self.put(key, value, size)
        return value

    def put(self, key: Key, value: V, size: int) -> None:
        if size > self._generation:
            return
        with self._lock:
            if key not in self._young:
                self._put(key, (value, size))

    def _put(self, key: Key, entry: tuple[V, int]) -> None:
        if self._young_bytes + entry[1] > self._generation:
            self._turn_over()
        self._young[key] = entry
        self._young_bytes += entry[1]

    def _turn_over(self) -> None:
        self._old, self._young = self._young, {}
        self._old_bytes, self._young_bytes = self._young_bytes, 0

    def age(self) -> None:
        """Turns the generations over: what was not read since the last call but one goes."""
        with self._lock:
            if self._young or self._old:
                self._turn_over()

    def clear(self) -> None:
        with self._lock:
            self._young, self._old = {}, {}
            self._young_bytes = self._old_bytes = 0

    @property
    def bytes(self) -> int:
        """The bytes held, as estimated by cost."""
        return self._young_bytes + self._old_bytes

    def __len__(self) -> int:
        return len(self._young) + len(self._old)
