"""The store: its shared versions are committed ones only, and its statements behave as
Peewee's own do, errors and DEBUG log included."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterator

import pytest

from campaign_grpc.api.convert import CampaignWire, campaign_to_proto
from campaign_grpc.domain.errors import AlreadyExists
from campaign_grpc.domain.types import Campaign, EncodedCampaign, ListFilter
from campaign_grpc.storage.connect import close_database, open_database
from campaign_grpc.storage.store import Store
from campaign_grpc_client.v1 import campaign_pb2 as pb
from factories import big_actions, new_id, runnable_draft


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


MIB = 1024 * 1024


def insert_campaigns(store: Store, customer: str, actions: list[list[object]]) -> list[str]:
    """Campaigns with these actions, oldest first; their ids."""
    ids = []
    with store.db.atomic():
        for n, acts in enumerate(actions):
            c = dataclasses.replace(
                runnable_draft(customer), id=new_id(), tm_create=n + 1, actions=acts, outdial_id=""
            )
            store.insert(c, "")
            ids.append(c.id)
    return ids


def walk(store: Store, customer: str, limit: int) -> list[list[Campaign | EncodedCampaign]]:
    pages, after = [], None
    while True:
        page, after = store.list_page(ListFilter(customer), after, limit)
        pages.append(page)
        if after is None:
            return pages


def sent(wire: CampaignWire, c: Campaign | EncodedCampaign) -> bytes:
    """What ListCampaigns sends of a listed campaign."""
    return c.data if isinstance(c, EncodedCampaign) else wire.serialized(c)


@pytest.mark.parametrize("cached", [False, True], ids=["read", "cached"])
def test_pages_of_big_campaigns_stay_within_the_byte_budget_and_walk_them_all(
    database_url: str, cached: bool
) -> None:
    wire = CampaignWire()
    store = Store(open_database(database_url), page_bytes=MIB, wire=wire)
    store.migrate()
    try:
        customer = new_id()
        ids = insert_campaigns(store, customer, [big_actions() for _ in range(11)])
        if cached:
            for campaign_id in ids:
                found = store.get(customer, campaign_id)
                assert found is not None
                wire.serialized(found)
        pages = walk(store, customer, 50)
        assert [c.id for page in pages for c in page] == ids[::-1]
        for page in pages:
            assert sum(len(sent(wire, c)) + 5 for c in page) <= MIB
        # About 220 KB each: four to a page of 1 MiB, fewer than page_size asked for.
        assert [len(page) for page in pages] == [4, 4, 3]
    finally:
        close_database(store.db)


def test_a_page_of_rows_is_their_messages_made_without_decoding_them(database_url: str) -> None:
    wire = CampaignWire()
    store = Store(open_database(database_url), cache_bytes=1, page_bytes=MIB, wire=wire)
    store.migrate()
    try:
        customer = new_id()
        ids = insert_campaigns(store, customer, [big_actions(), [], big_actions()])
        listed = [c for page in walk(store, customer, 50) for c in page]
        assert all(isinstance(c, EncodedCampaign) for c in listed)
        assert [c.id for c in listed] == ids[::-1]
        for c in listed:
            stored = store.load(customer, c.id)
            assert stored is not None
            # What a client parses is the campaign as GetCampaign shows it, actions and all.
            assert pb.Campaign.FromString(sent(wire, c)) == campaign_to_proto(stored)
    finally:
        close_database(store.db)


def insert_unencoded(database_url: str, customer: str, count: int) -> list[str]:
    """Big campaigns as a release before the actions' encoding wrote them: by a store
    without the wire's form."""
    plain = Store(open_database(database_url))
    plain.migrate()
    try:
        return insert_campaigns(plain, customer, [big_actions() for _ in range(count)])
    finally:
        close_database(plain.db)


def test_rows_written_without_the_encoding_are_listed_then_given_it(
    database_url: str,
) -> None:
    customer = new_id()
    ids = insert_unencoded(database_url, customer, 3)
    wire = CampaignWire()
    store = Store(open_database(database_url), cache_bytes=1, page_bytes=MIB, wire=wire)
    try:
        before = [c for page in walk(store, customer, 50) for c in page]
        assert all(isinstance(c, Campaign) for c in before)
        assert not store.actions_all_encoded()
        after_seq: int | None = 0
        while after_seq is not None:  # two at a time, as the server's background job does
            with store.db.atomic():
                after_seq = store.encode_stored_actions(after_seq, 2)
        assert store.actions_all_encoded()
        after = [c for page in walk(store, customer, 50) for c in page]
        assert all(isinstance(c, EncodedCampaign) for c in after)
        assert [c.id for c in after] == [c.id for c in before] == ids[::-1]
        assert [pb.Campaign.FromString(sent(wire, c)) for c in after] == [
            pb.Campaign.FromString(sent(wire, c)) for c in before
        ]
    finally:
        close_database(store.db)


def test_actions_an_older_release_changed_are_never_listed_as_their_old_encoding(
    database_url: str,
) -> None:
    wire = CampaignWire()
    store = Store(open_database(database_url), cache_bytes=1, page_bytes=MIB, wire=wire)
    store.migrate()
    try:
        customer = new_id()
        (campaign_id,) = insert_campaigns(store, customer, [big_actions()])
        # A server of the release before, still serving during the upgrade, changes the
        # actions as it knows them: text, version and body_revision, not the encoding.
        with store.db.atomic():
            store.db.execute_sql(
                "UPDATE campaign SET actions = '[]', version = version + 1, tm_update = 7, "
                "body_revision = body_revision + 1 WHERE id = " + store.db.param,
                (campaign_id,),
            )
        (listed,), _ = store.list_page(ListFilter(customer), None, 10)
        stored = store.load(customer, campaign_id)
        assert stored is not None
        assert stored.actions == []
        assert pb.Campaign.FromString(sent(wire, listed)) == campaign_to_proto(stored)
        # The background job encodes it again.
        with store.db.atomic():
            assert store.encode_stored_actions(0, 10) is None
        (listed,), _ = store.list_page(ListFilter(customer), None, 10)
        assert isinstance(listed, EncodedCampaign)
        assert pb.Campaign.FromString(listed.data) == campaign_to_proto(stored)
    finally:
        close_database(store.db)


def test_a_page_takes_the_cached_messages_of_rows_it_would_have_to_decode(
    database_url: str,
) -> None:
    customer = new_id()
    # Rows without their encoding, not given it yet, too big for the decoded cache; their
    # messages fit the wire's.
    ids = insert_unencoded(database_url, customer, 6)
    wire = CampaignWire()
    store = Store(open_database(database_url), cache_bytes=1, page_bytes=MIB, wire=wire)
    try:
        first = walk(store, customer, 50)
        again = walk(store, customer, 50)
        assert all(isinstance(c, EncodedCampaign) for page in again for c in page)
        assert [[c.id for c in page] for page in again] == [[c.id for c in page] for page in first]
        assert [c.id for page in again for c in page] == ids[::-1]
        for page in again:
            assert sum(len(sent(wire, c)) + 5 for c in page) <= MIB
        assert [sent(wire, c) for page in again for c in page] == [
            sent(wire, c) for page in first for c in page
        ]
    finally:
        close_database(store.db)


def test_a_page_never_takes_the_cached_message_of_an_earlier_version(database_url: str) -> None:
    wire = CampaignWire()
    store = Store(open_database(database_url), cache_bytes=1, wire=wire)
    store.migrate()
    try:
        customer = new_id()
        ids = insert_campaigns(store, customer, [big_actions() for _ in range(3)])
        for campaign_id in ids:  # every message cached
            found = store.get(customer, campaign_id)
            assert found is not None
            wire.serialized(found)
        changed = store.load(customer, ids[1])
        assert changed is not None
        with store.db.atomic():
            store.save(
                dataclasses.replace(
                    changed, name="renamed", version=changed.version + 1, tm_update=9
                )
            )
        listed = [c for page in walk(store, customer, 50) for c in page]
        assert [c.id for c in listed] == ids[::-1]
        names = [pb.Campaign.FromString(sent(wire, c)).name for c in listed]
        assert names[1] == "renamed"
        assert names[0] == names[2] != "renamed"
    finally:
        close_database(store.db)


def test_a_campaign_larger_than_the_budget_is_a_page_of_its_own(database_url: str) -> None:
    wire = CampaignWire()
    store = Store(open_database(database_url), page_bytes=64 * 1024, wire=wire)
    store.migrate()
    try:
        customer = new_id()
        small = runnable_draft(customer).actions
        ids = insert_campaigns(store, customer, [small, big_actions(), small, small])
        pages = walk(store, customer, 50)
        assert [[c.id for c in page] for page in pages] == [ids[:1:-1], [ids[1]], [ids[0]]]
    finally:
        close_database(store.db)
