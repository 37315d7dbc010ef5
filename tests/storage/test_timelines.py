"""The log's timelines: recorded once per fork, and which revisions of each one still hold."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from campaign_grpc.storage import timelines
from campaign_grpc.storage.connect import close_database, is_sqlite, open_database
from campaign_grpc.storage.store import Store
from campaign_grpc.storage.timelines import UNBOUNDED, Timeline, Timelines


def test_a_timeline_shares_its_revisions_up_to_the_first_fork_after_it() -> None:
    log = Timelines((Timeline("a" * 16, 0), Timeline("b" * 16, 40), Timeline("c" * 16, 25)))
    assert log.current.token == "c" * 16
    assert log.shared_up_to("c" * 16) == UNBOUNDED
    assert log.shared_up_to("b" * 16) == 25
    # a forked into b at 40, and b into c at 25: a's revisions past 25 are in neither.
    assert log.shared_up_to("a" * 16) == 25
    assert log.shared_up_to("d" * 16) is None


@pytest.fixture
def store(database_url: str) -> Iterator[Store]:
    s = Store(open_database(database_url))
    s.migrate()
    try:
        yield s
    finally:
        close_database(s.db)


def set_head(store: Store, revision: int) -> None:
    M = store.t.meta
    M.update(value=revision).where(M.key == "revision").execute()


def test_a_database_gets_one_timeline_and_a_new_one_only_at_a_fork(store: Store) -> None:
    db = store.db
    first = timelines.start(db, fork=False)
    assert len(first.history) == 1
    assert timelines.is_token(first.current.token)
    # Found where it was: nothing new, however often it is looked at.
    set_head(store, 7)
    assert timelines.start(db, fork=False).history == first.history
    assert timelines.read(db).history == first.history

    forked = timelines.start(db, fork=True)
    assert forked.history[:-1] == first.history
    assert forked.current.forked_at == 7
    assert forked.current.token != first.current.token
    assert forked.shared_up_to(first.current.token) == 7


def test_a_postgresql_database_says_where_it_is(store: Store) -> None:
    place = timelines.read(store.db).place
    if is_sqlite(store.db):
        assert place == ""
    else:
        # The cluster's system identifier, the WAL timeline it writes on, the database's oid.
        system, timeline, oid = (int(part) for part in place.split("/"))
        assert timeline >= 1
        assert system > 0
        assert oid > 0
