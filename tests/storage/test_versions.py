"""The version cache keeps what it was given, within its budget in bytes."""

from __future__ import annotations

from campaign_grpc.storage.versions import Key, VersionCache


def key(n: int) -> Key:
    return ("customer", f"campaign-{n}", 1, 1_800_000_000_000_000)


def test_a_value_is_made_once_and_then_found() -> None:
    cache: VersionCache[str] = VersionCache(1000)
    made: list[int] = []

    def make(n: int) -> tuple[str, int]:
        made.append(n)
        return f"value {n}", 10

    assert cache.get(key(1), lambda: make(1)) == "value 1"
    assert cache.get(key(1), lambda: make(1)) == "value 1"
    assert made == [1]
    assert cache.peek(key(2)) is None


def test_the_same_version_written_at_another_time_is_another_entry() -> None:
    cache: VersionCache[str] = VersionCache(1000)
    cache.put(("customer", "campaign", 3, 100), "before the restore", 10)
    assert cache.peek(("customer", "campaign", 3, 200)) is None


def test_the_budget_in_bytes_holds_and_recent_entries_stay() -> None:
    cache: VersionCache[int] = VersionCache(100_000)
    for n in range(10_000):
        cache.get(key(n), lambda n=n: (n, 1000 + n % 7))  # type: ignore[misc]
        assert cache.bytes <= 100_000
    assert cache.peek(key(9_999)) == 9_999
    assert cache.peek(key(0)) is None


def test_large_values_take_their_size_not_one_slot() -> None:
    cache: VersionCache[bytes] = VersionCache(1_000_000)
    for n in range(100):
        cache.put(key(n), b"", 200_000)
    # A generation is half the budget: two of 200 KB each, and the two before them.
    assert len(cache) <= 4
    assert cache.bytes <= 1_000_000


def test_a_value_larger_than_a_generation_is_not_kept() -> None:
    cache: VersionCache[str] = VersionCache(1000)
    assert cache.get(key(1), lambda: ("huge", 600)) == "huge"
    assert cache.peek(key(1)) is None


def test_an_entry_in_use_survives_turnover() -> None:
    cache: VersionCache[int] = VersionCache(100 * 10)
    cache.get(key(0), lambda: (0, 10))
    for n in range(1, 1_000):
        cache.get(key(n), lambda n=n: (n, 10))  # type: ignore[misc]
        assert cache.peek(key(0)) == 0  # read often: moved up before its generation goes


def test_what_nobody_reads_leaves_within_two_ages_and_what_is_read_stays() -> None:
    cache: VersionCache[int] = VersionCache(1_000_000)
    cache.put(key(1), 1, 10)
    cache.put(key(2), 2, 10)
    cache.age()
    assert cache.peek(key(1)) == 1
    cache.age()
    assert cache.peek(key(1)) == 1
    assert cache.peek(key(2)) is None
    assert cache.bytes == 10


def test_clear_drops_everything() -> None:
    cache: VersionCache[int] = VersionCache(1000)
    cache.put(key(1), 1, 10)
    cache.clear()
    assert cache.peek(key(1)) is None
    assert cache.bytes == 0
