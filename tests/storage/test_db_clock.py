"""The database clock: the database's time read without a query, whatever the local wall clock."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import pytest

from campaign_grpc.domain.campaigns import wall_clock_us
from campaign_grpc.ops.clock_sync import ClockSync
from campaign_grpc.ops.server import App
from campaign_grpc.settings import Settings
from campaign_grpc.storage.connect import close_database, open_database
from campaign_grpc.storage.db_clock import DatabaseClock, Sample, read_clock
from campaign_grpc.storage.read_lanes import Readers

MS = 1_000_000  # nanoseconds
S = 1_000 * MS
# Where the fake database's clock is, and how far ahead of it the local wall clock starts.
DATABASE_EPOCH_NS = 1_800_000_000 * S
WALL_AHEAD_NS = 90 * S


class FakeTime:
    """A monotonic clock, a wall clock and a database's clock that move only when told.

    A sample's query reaches the database `there` nanoseconds after it is sent and its answer
    comes back `back` nanoseconds later: with the two unequal, the midpoint of the round trip
    misses the moment the database read its clock, as on a real network.
    """

    def __init__(self) -> None:
        self.monotonic = 5 * S
        self.wall_ahead = WALL_AHEAD_NS
        self.samples_taken = 0

    def database_ns(self) -> int:
        return DATABASE_EPOCH_NS + self.monotonic

    def wall_ns(self) -> int:
        return self.database_ns() + self.wall_ahead

    def monotonic_ns(self) -> int:
        return self.monotonic

    def advance(self, ns: int) -> None:
        self.monotonic += ns

    def sampler(self, there: int, back: int) -> Callable[[], Sample]:
        def sample() -> Sample:
            self.samples_taken += 1
            sent = self.monotonic
            self.advance(there)
            read = self.database_ns() // 1000
            self.advance(back)
            return Sample(sent, read, self.monotonic)

        return sample


class Sampler:
    """Hands the clock the samples a test lines up, one per sync()."""

    def __init__(self) -> None:
        self.next: list[Callable[[], Sample]] = []

    async def __call__(self) -> Sample:
        return self.next.pop(0)()


@pytest.fixture
def fake() -> FakeTime:
    return FakeTime()


@pytest.fixture
def sampler() -> Sampler:
    return Sampler()


@pytest.fixture
def clock(fake: FakeTime, sampler: Sampler) -> DatabaseClock:
    return DatabaseClock(sampler, window=3, wall_ns=fake.wall_ns, monotonic_ns=fake.monotonic_ns)


def off_us(clock: DatabaseClock, fake: FakeTime) -> int:
    """How far the clock reads from the database's clock now."""
    return clock() - fake.database_ns() // 1000


async def test_before_its_first_sample_it_reads_the_local_wall_clock(
    clock: DatabaseClock, fake: FakeTime
) -> None:
    assert not clock.synced
    assert clock.error_us is None
    assert clock() == fake.wall_ns() // 1000


async def test_a_sample_sets_it_to_the_database_clock_within_half_the_round_trip(
    clock: DatabaseClock, fake: FakeTime, sampler: Sampler
) -> None:
    sampler.next = [fake.sampler(there=1 * MS, back=3 * MS)]
    await clock.sync()
    assert clock.synced
    # The database read its clock 1 ms after the query was sent; the midpoint guesses 2 ms.
    assert off_us(clock, fake) == -1_000
    assert clock.error_us == 2_000
    assert clock.skew_us == WALL_AHEAD_NS // 1000 + 1_000


async def test_between_samples_it_follows_the_monotonic_clock_not_the_wall_clock(
    clock: DatabaseClock, fake: FakeTime, sampler: Sampler
) -> None:
    sampler.next = [fake.sampler(there=0, back=0)]
    await clock.sync()
    before = clock()
    # The wall clock is stepped an hour back (an operator, a bad NTP server): nothing moves.
    fake.wall_ahead -= 3600 * S
    assert clock() == before
    fake.advance(250 * MS)
    assert clock() == before + 250_000
    assert off_us(clock, fake) == 0


async def test_of_recent_samples_the_one_with_the_shortest_round_trip_is_believed(
    clock: DatabaseClock, fake: FakeTime, sampler: Sampler
) -> None:
    sampler.next = [
        fake.sampler(there=1 * MS, back=39 * MS),  # slow and lopsided: 19 ms off
        fake.sampler(there=1 * MS, back=1 * MS),  # quick: exact
        fake.sampler(there=29 * MS, back=1 * MS),  # slow the other way: 14 ms off
    ]
    await clock.sync()
    assert off_us(clock, fake) == -19_000
    await clock.sync()
    assert off_us(clock, fake) == 0
    await clock.sync()
    assert off_us(clock, fake) == 0
    assert clock.error_us == 1_000


async def test_a_quick_sample_gives_way_once_it_leaves_the_window(
    clock: DatabaseClock, fake: FakeTime, sampler: Sampler
) -> None:
    sampler.next = [fake.sampler(there=1 * MS, back=1 * MS)]
    sampler.next += [fake.sampler(there=1 * MS, back=5 * MS) for _ in range(3)]
    for _ in range(4):
        await clock.sync()
        fake.advance(15 * S)
    # Three slower samples since (the window): the quick one is forgotten.
    assert clock.error_us == 3_000 + 15 * 15
    assert off_us(clock, fake) == -2_000


async def test_an_old_quick_sample_gives_way_to_a_fresh_one_once_drift_may_exceed_it(
    fake: FakeTime, sampler: Sampler
) -> None:
    clock = DatabaseClock(sampler, window=8, wall_ns=fake.wall_ns, monotonic_ns=fake.monotonic_ns)
    sampler.next = [fake.sampler(there=0, back=0)]
    await clock.sync()
    fake.advance(100 * S)  # 1.5 ms of possible drift at 15 ppm
    sampler.next = [fake.sampler(there=1 * MS, back=1 * MS)]
    await clock.sync()
    assert clock.error_us == 1_000


async def test_the_skew_of_the_wall_clock_is_warned_about_once_per_change(
    clock: DatabaseClock, fake: FakeTime, sampler: Sampler, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="campaign_grpc.storage.db_clock")

    async def sync_with_wall_ahead(seconds: float) -> list[tuple[int, str]]:
        caplog.clear()
        fake.wall_ahead = int(seconds * S)
        sampler.next = [fake.sampler(there=0, back=0)]
        await clock.sync()
        return [(r.levelno, r.getMessage()) for r in caplog.records]

    [(level, message)] = await sync_with_wall_ahead(90)
    assert level == logging.WARNING
    assert message.startswith("the local wall clock is 90.000 s ahead of the database's")
    assert await sync_with_wall_ahead(90) == []
    assert await sync_with_wall_ahead(90.5) == []  # within a second of what was said
    [(level, message)] = await sync_with_wall_ahead(-90)
    assert level == logging.WARNING
    assert message.startswith("the local wall clock is 90.000 s behind the database's")
    [(level, message)] = await sync_with_wall_ahead(0.2)
    assert level == logging.INFO
    assert "agrees with the database's again" in message
    assert await sync_with_wall_ahead(-0.9) == []


async def test_a_failed_sample_leaves_the_clock_on_the_last_good_one(
    clock: DatabaseClock, fake: FakeTime, sampler: Sampler
) -> None:
    sampler.next = [fake.sampler(there=0, back=0)]
    await clock.sync()

    def broken() -> Sample:
        raise ConnectionError("the database went away")

    sampler.next = [broken]
    with pytest.raises(ConnectionError):
        await clock.sync()
    fake.advance(3 * S)
    assert off_us(clock, fake) == 0


async def test_the_sync_samples_before_serving_and_then_every_interval(
    clock: DatabaseClock, fake: FakeTime, sampler: Sampler
) -> None:
    sampler.next = [fake.sampler(there=MS, back=MS) for _ in range(4)]
    sync = ClockSync(clock, interval_s=15)
    await sync.first(3)
    assert fake.samples_taken == 3
    assert await sync.step() == 15
    assert fake.samples_taken == 4


async def test_postgresql_clock_sampled_on_a_read_thread(postgres_url: str) -> None:
    db = open_database(postgres_url)
    readers = Readers(db, 1)
    try:
        clock = DatabaseClock(lambda: readers.run(lambda: read_clock(db)))
        sample = await clock.sync()
        # The database runs on this machine: one clock, read across a local round trip.
        assert 0 < sample.round_trip_ns < 1 * S
        assert clock.error_us is not None
        assert clock.error_us < 500_000
        assert abs(clock() - time.time_ns() // 1000) < 500_000
    finally:
        readers.close()
        close_database(db)


async def test_the_server_takes_its_time_from_postgresql_and_from_the_local_clock_on_sqlite(
    start_server, settings: Settings
) -> None:  # type: ignore[no-untyped-def]
    app: App = await start_server(settings)
    if settings.database_url.startswith("sqlite"):
        assert app.clock is wall_clock_us
        return
    assert isinstance(app.clock, DatabaseClock)
    assert app.clock.synced  # before it served
    assert app.campaigns.now() == pytest.approx(app.clock(), abs=1_000_000)
