"""The schema carries a version; a new database gets the current one, an old one is upgraded."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest

from campaign_grpc.api.convert import CampaignWire, campaign_to_proto
from campaign_grpc.domain.types import Campaign, EncodedCampaign, ListFilter, Reason, Status
from campaign_grpc.storage.connect import close_database, open_database
from campaign_grpc.storage.schema import (
    SCHEMA_VERSION,
    MigrationRefused,
    SchemaTooNew,
    current_version,
)
from campaign_grpc.storage.store import Store
from campaign_grpc_client.v1 import campaign_pb2 as pb
from factories import new_id, runnable_draft

V2_COLUMNS = {
    "campaign": ["finishing"],
    "event": ["next_campaign_id", "chained_from", "detail"],
}
V3_COLUMNS = {
    "campaign": ["stop_revision", "body_revision", "last_reason"],
    "event": [
        "version",
        "tm_update",
        "tm_delete",
        "stop_revision",
        "body_revision",
        "next_campaign_result",
        "unmet_run_conditions",
    ],
}
V4_COLUMNS = {"event": ["principal", "traceparent"]}
V5_COLUMNS = {"campaign": ["actions_wire", "actions_wire_body"]}
V8_COLUMNS = {"event": ["lease_holder", "fencing_token"]}
V3_INDEXES = [
    "campaign_id",
    "campaign_customer_id_revision",
    "campaign_revision",
    "campaign_next_campaign",
]


def columns(store: Store, table: str) -> set[str]:
    return {c.name for c in store.db.get_columns(table)}


def test_a_new_database_gets_the_current_schema(database_url: str) -> None:
    store = Store(open_database(database_url))
    assert store.migrate() == SCHEMA_VERSION
    assert store.migrate() == SCHEMA_VERSION  # again: nothing to do
    every = [*V2_COLUMNS.items(), *V3_COLUMNS.items(), *V4_COLUMNS.items(), *V8_COLUMNS.items()]
    for table, names in every:
        assert set(names) <= columns(store, table)
    assert store.db.table_exists("campaign_body")
    close_database(store.db)


def test_servers_starting_together_on_an_empty_database_create_the_schema_once(
    database_url: str,
) -> None:
    stores = [Store(open_database(database_url)) for _ in range(4)]

    def migrate(store: Store) -> int:
        try:
            return store.migrate()
        finally:
            close_database(store.db)

    with ThreadPoolExecutor(len(stores)) as pool:
        assert list(pool.map(migrate, stores)) == [SCHEMA_VERSION] * len(stores)
    check = Store(open_database(database_url))
    assert check.head_revision() == 0
    keys = {row[0] for row in check.db.execute_sql("SELECT key FROM meta").fetchall()}
    assert {"schema_version", "revision", "full_history_from", "epoch"} <= keys
    (epochs,) = check.db.execute_sql("SELECT COUNT(*) FROM meta WHERE key = 'epoch'").fetchone()
    assert epochs == 1
    close_database(check.db)


def test_a_version_1_database_is_upgraded_and_keeps_its_rows(
    database_url: str, customer: str
) -> None:
    store = Store(open_database(database_url))
    store.migrate()
    draft = runnable_draft(customer, id="2f1d7c8e-6a3b-4c5d-9e0f-1a2b3c4d5e6f", tm_create=1)
    with store.db.atomic():
        store.journal_begin()
        store.append_event(draft, draft.status, 1, 1)  # type: ignore[arg-type]
        store.insert(draft, "")
        store.journal_end()
    store.journal_take()
    # Take the database back to what version 1 wrote.
    back_to_version_2(store)
    for table, names in V2_COLUMNS.items():
        for name in names:
            store.db.execute_sql(f'ALTER TABLE "{table}" DROP COLUMN "{name}"')
    store.db.execute_sql("UPDATE meta SET value = 1 WHERE key = 'schema_version'")
    close_database(store.db)

    upgraded = Store(open_database(database_url))
    assert current_version(upgraded.db, upgraded.t) == 1
    assert upgraded.migrate() == SCHEMA_VERSION
    kept = upgraded.get(customer, draft.id)
    assert kept is not None
    assert kept.name == draft.name
    assert not kept.finishing
    (event,) = upgraded.events_after(0, customer, "", 10)
    assert (event.detail, event.next_campaign_id, event.chained_from) == ("", "", "")
    close_database(upgraded.db)


def back_to_version_7(store: Store) -> None:
    """Takes a current database back to what version 7 wrote."""
    store.db.execute_sql('DROP INDEX "campaign_needs_dialer"')
    store.db.execute_sql('DROP TABLE "campaign_lease"')
    store.db.execute_sql('DROP TABLE "dialer_session"')
    for table, names in V8_COLUMNS.items():
        for name in names:
            store.db.execute_sql(f'ALTER TABLE "{table}" DROP COLUMN "{name}"')
    store.db.execute_sql("UPDATE meta SET value = 7 WHERE key = 'schema_version'")


def test_a_version_7_database_gets_leases_and_keeps_its_events(
    database_url: str, customer: str
) -> None:
    store = Store(open_database(database_url))
    store.migrate()
    draft = runnable_draft(customer, tm_create=1)
    with store.db.atomic():
        store.journal_begin()
        store.append_event(draft, draft.status, 1, 1)  # type: ignore[arg-type]
        store.insert(draft, "")
        store.journal_end()
    store.journal_take()
    back_to_version_7(store)
    close_database(store.db)

    upgraded = Store(open_database(database_url))
    assert upgraded.migrate() == SCHEMA_VERSION
    assert set(V8_COLUMNS["event"]) <= columns(upgraded, "event")
    assert upgraded.db.table_exists("campaign_lease")
    assert upgraded.db.table_exists("dialer_session")
    (event,) = upgraded.events_after(0, customer, "", 10)
    assert (event.lease_holder, event.fencing_token) == ("", 0)
    close_database(upgraded.db)


def back_to_version_4(store: Store) -> None:
    """Takes a current database back to what version 4 wrote."""
    back_to_version_7(store)
    for table, names in V5_COLUMNS.items():
        for name in names:
            store.db.execute_sql(f'ALTER TABLE "{table}" DROP COLUMN "{name}"')
    store.db.execute_sql("DELETE FROM meta WHERE key = 'actions_encoded'")
    store.db.execute_sql("UPDATE meta SET value = 4 WHERE key = 'schema_version'")


def back_to_version_3(store: Store) -> None:
    """Takes a current database back to what version 3 wrote."""
    back_to_version_4(store)
    for table, names in V4_COLUMNS.items():
        for name in names:
            store.db.execute_sql(f'ALTER TABLE "{table}" DROP COLUMN "{name}"')
    store.db.execute_sql("UPDATE meta SET value = 3 WHERE key = 'schema_version'")


def back_to_version_2(store: Store) -> None:
    """Takes a current database back to what version 2 wrote."""
    back_to_version_3(store)
    for index in V3_INDEXES:
        store.db.execute_sql(f'DROP INDEX "{index}"')
    store.db.execute_sql('DROP TABLE "campaign_body"')
    for table, names in V3_COLUMNS.items():
        for name in names:
            store.db.execute_sql(f'ALTER TABLE "{table}" DROP COLUMN "{name}"')
    store.db.execute_sql("DELETE FROM meta WHERE key = 'full_history_from'")
    store.db.execute_sql("UPDATE meta SET value = 2 WHERE key = 'schema_version'")


def log_events(store: Store, *writes: tuple[Campaign, Status, Reason]) -> None:
    """Writes campaigns and their events as the domain would, in one transaction."""
    with store.db.atomic():
        store.journal_begin()
        for c, previous, reason in writes:
            store.append_event(c, previous, reason, 1, begins_stop=c.status == Status.STOPPING)
            if reason == Reason.CREATED:
                store.insert(c, "")
            else:
                store.save_state(c)
        store.journal_end()
    store.journal_take()


def test_a_version_2_database_is_upgraded_with_its_stops_confirmable(
    database_url: str, customer: str
) -> None:
    store = Store(open_database(database_url))
    store.migrate()
    stopping = runnable_draft(customer, id=new_id(), tm_create=1)
    idle = runnable_draft(customer, id=new_id(), tm_create=1)
    log_events(
        store,
        (stopping, Status.UNSPECIFIED, Reason.CREATED),
        (idle, Status.UNSPECIFIED, Reason.CREATED),
    )
    stopping.status = Status.STOPPING
    log_events(store, (stopping, Status.RUN, Reason.REQUESTED))
    back_to_version_2(store)
    close_database(store.db)

    upgraded = Store(open_database(database_url))
    assert current_version(upgraded.db, upgraded.t) == 2
    assert upgraded.migrate() == SCHEMA_VERSION
    # The stop a dialer saw before the upgrade is the one it confirms after it.
    kept = upgraded.load(customer, stopping.id)
    assert kept is not None
    assert (kept.status, kept.stop_revision) == (Status.STOPPING, 3)
    assert kept.last_reason == Reason.REQUESTED
    events = upgraded.events_after(0, customer, "", 10)
    assert [e.stop_revision for e in events] == [0, 0, 3]
    # Events from before the upgrade cannot show whole campaigns; the log says from where.
    assert upgraded.full_history_from() == 3
    close_database(upgraded.db)


def test_a_version_3_database_is_upgraded_and_its_events_name_no_one(
    database_url: str, customer: str
) -> None:
    store = Store(open_database(database_url))
    store.migrate()
    c = runnable_draft(customer, id=new_id(), tm_create=1)
    log_events(store, (c, Status.UNSPECIFIED, Reason.CREATED))
    back_to_version_3(store)
    close_database(store.db)

    upgraded = Store(open_database(database_url))
    assert current_version(upgraded.db, upgraded.t) == 3
    assert upgraded.migrate() == SCHEMA_VERSION
    (event,) = upgraded.events_after(0, customer, "", 10)
    # Who made a change before the upgrade is not known: nothing is made up.
    assert (event.principal, event.traceparent) == ("", "")
    close_database(upgraded.db)


def test_a_version_4_database_is_upgraded_and_its_campaigns_listed_as_stored_bytes(
    database_url: str, customer: str
) -> None:
    store = Store(open_database(database_url))
    store.migrate()
    stored = [runnable_draft(customer, id=new_id(), tm_create=n + 1) for n in range(3)]
    log_events(store, *((c, Status.UNSPECIFIED, Reason.CREATED) for c in stored))
    back_to_version_4(store)
    close_database(store.db)

    wire = CampaignWire()
    upgraded = Store(open_database(database_url), cache_bytes=1, wire=wire)
    assert current_version(upgraded.db, upgraded.t) == 4
    assert upgraded.migrate() == SCHEMA_VERSION
    with upgraded.db.atomic():
        assert upgraded.encode_stored_actions(0, 10) is None
    page, _ = upgraded.list_page(ListFilter(customer), None, 10)
    assert all(isinstance(c, EncodedCampaign) for c in page)
    expected = {
        c.id: campaign_to_proto(c) for c in (upgraded.load(customer, s.id) for s in stored) if c
    }
    assert {
        c.id: pb.Campaign.FromString(c.data) for c in page if isinstance(c, EncodedCampaign)
    } == expected
    close_database(upgraded.db)


def test_an_upgrade_refuses_ids_shared_by_two_customers_and_changes_nothing(
    database_url: str, customer: str
) -> None:
    store = Store(open_database(database_url))
    store.migrate()
    back_to_version_2(store)
    shared = new_id()
    for owner in (customer, new_id()):
        c = runnable_draft(owner, id=shared, tm_create=1)
        store.db.execute_sql(
            "INSERT INTO campaign (customer_id, id, type, name, detail, status, service_level,"
            " end_handle, actions, outplan_id, outdial_id, queue_id, next_campaign_id,"
            " tm_create, version, revision, finishing)"
            f" VALUES ({', '.join([store.db.param] * 17)})",
            (owner, c.id, 1, "", "", 1, 0, 1, "[]", "", "", "", "", 1, 1, 0, False),
        )
    close_database(store.db)

    again = Store(open_database(database_url))
    with pytest.raises(MigrationRefused, match=shared):
        again.migrate()
    assert current_version(again.db, again.t) == 2
    assert "stop_revision" not in columns(again, "campaign")
    close_database(again.db)


def test_a_database_from_a_newer_release_is_refused(database_url: str) -> None:
    store = Store(open_database(database_url))
    store.migrate()
    store.db.execute_sql(
        f"UPDATE meta SET value = {store.db.param} WHERE key = 'schema_version'",
        (SCHEMA_VERSION + 1,),
    )
    with pytest.raises(SchemaTooNew):
        store.migrate()
    close_database(store.db)


def test_the_hot_queries_use_an_index(sqlite_url: str) -> None:
    """A query that scans a customer's campaigns gets slower with every campaign created."""
    store = Store(open_database(sqlite_url))
    store.migrate()
    hot = (
        store._outdial_holder,
        store._get,
        store._get_by_request,
        store._due,
        store._next_deadline,
    )
    for statement in hot:
        plan = store.db.execute_sql(
            "EXPLAIN QUERY PLAN " + statement.sql, [None] * statement.sql.count("?")
        ).fetchall()
        text = " ".join(str(row[-1]) for row in plan)
        assert "USING INDEX" in text or "USING COVERING INDEX" in text, (statement.sql, text)
        assert "campaign_customer_id_seq" not in text, (statement.sql, text)
    close_database(store.db)
