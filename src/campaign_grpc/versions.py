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
    def __init__(self, capacity: int) -> None:
        self._capacity = capacity
        self._values: dict[Key, V] = {}

    def get(self, key: Key, make: Callable[[], V]) -> V:
        value = self._values.get(key)
        if value is None:
            value = make()
            if len(self._values) >= self._capacity:
                # Forget the oldest entry. Several threads may race here: pop() with a
                # default makes that harmless, the bound is kept approximately.
                oldest = next(iter(self._values), None)
                if oldest is not None:
                    self._values.pop(oldest, None)
            self._values[key] = value
        return value

    def peek(self, key: Key) -> V | None:
        return self._values.get(key)

    def __len__(self) -> int:
        return len(self._values)
