"""The store: its shared versions are committed ones only, and its statements behave as
Peewee's own do, errors and DEBUG log included."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterator

import pytest

from campaign_grpc.domain.errors import AlreadyExists
from campaign_grpc.storage.database import close_database, open_database
from campaign_grpc.storage.store import Store
from factories import new_id, runnable_draft


class RolledBack(Exception):
    pass


@pytest.fixture
def store(database_url: str) -> Iterator[Store]:
    s = Store(open_database(database_url))
    s.migrate()
    yield s
    close_database(s.db)


def test_a_version_read_inside_a_write_that_rolls_back_is_never_served(store: Store) -> None:
    customer = new_id()
    created = dataclasses.replace(runnable_draft(customer), id=new_id(), version=1, tm_create=1)
    with store.db.atomic():
        store.insert(created, "")

    def write_then_roll_back() -> None:
        with store.db.atomic():
            store.save(dataclasses.replace(created, name="never committed", version=2))
            seen = store.get(customer, created.id)
            assert seen is not None
            assert seen.name == "never committed"
            raise RolledBack

    with pytest.raises(RolledBack):
        write_then_roll_back()
    with store.db.atomic():
        store.save(dataclasses.replace(created, name="committed", version=2))

    found = store.get(customer, created.id)
    assert found is not None
    assert (found.version, found.name) == (2, "committed")


def test_statements_raise_peewees_errors_and_log_as_peewee_does(
    store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    customer = new_id()
    created = dataclasses.replace(runnable_draft(customer), id=new_id(), version=1, tm_create=1)
    with store.db.atomic():
        store.insert(created, "")
    with caplog.at_level(logging.DEBUG, logger="peewee"):
        assert store.get(customer, created.id) is not None
    assert any("SELECT" in str(r.msg) for r in caplog.records if r.name == "peewee")

    # The unique index refuses a second insert as Peewee's IntegrityError, which the store
    # turns into the domain's error.
    with pytest.raises(AlreadyExists), store.db.atomic():
        store.insert(dataclasses.replace(created, outdial_id=""), "")
