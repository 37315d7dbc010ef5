"""The version cache keeps what it was given, within its bound."""

from __future__ import annotations

from campaign_grpc.storage.versions import VersionCache


def key(n: int) -> tuple[str, str, int]:
    return ("customer", f"campaign-{n}", 1)


def test_a_value_is_made_once_and_then_found() -> None:
    cache: VersionCache[str] = VersionCache(10)
    made: list[int] = []

    def make(n: int) -> str:
        made.append(n)
        return f"value {n}"

    assert cache.get(key(1), lambda: make(1)) == "value 1"
    assert cache.get(key(1), lambda: make(1)) == "value 1"
    assert made == [1]
    assert cache.peek(key(2)) is None


def test_the_bound_holds_and_recent_entries_stay() -> None:
    cache: VersionCache[int] = VersionCache(100)
    for n in range(10_000):
        cache.get(key(n), lambda n=n: n)  # type: ignore[misc]
        assert len(cache) <= 100
    assert cache.peek(key(9_999)) == 9_999
    assert cache.peek(key(0)) is None


def test_an_entry_in_use_survives_turnover() -> None:
    cache: VersionCache[int] = VersionCache(100)
    cache.get(key(0), lambda: 0)
    for n in range(1, 1_000):
        cache.get(key(n), lambda n=n: n)  # type: ignore[misc]
        assert cache.peek(key(0)) == 0  # read often: moved up before its generation goes
