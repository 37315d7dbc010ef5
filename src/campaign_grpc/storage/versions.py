"""A bounded cache of values derived from one version of a campaign.

A campaign's (customer_id, id, version) never names two different contents: every change
takes a new version. What is derived from one version can therefore be kept without ever
being invalidated; the bound only limits memory.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, TypeVar

V = TypeVar("V")
Key = tuple[str, str, int]


class VersionCache(Generic[V]):
    """Two generations: new entries go to the young one; when it is full it becomes the old
    one and the previous old one is dropped whole. A hit in the old generation moves up.

    Every operation is O(1) and is a single dict operation or assignment, so threads may
    share the cache without a lock: a race only costs a value computed twice.
    """

    def __init__(self, capacity: int) -> None:
        self._generation = max(1, capacity // 2)
        self._young: dict[Key, V] = {}
        self._old: dict[Key, V] = {}

    def peek(self, key: Key) -> V | None:
        value = self._young.get(key)
        if value is None:
            value = self._old.get(key)
            if value is not None:
                self._put(key, value)
        return value

    def get(self, key: Key, make: Callable[[], V]) -> V:
        value = self.peek(key)
        if value is None:
            value = make()
            self._put(key, value)
        return value

    def _put(self, key: Key, value: V) -> None:
        young = self._young
        if len(young) >= self._generation:
            self._old, self._young = young, {}
            young = self._young
        young[key] = value

    def __len__(self) -> int:
        return len(self._young) + len(self._old)
