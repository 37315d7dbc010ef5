"""The tables, bound to one database, and the versioned steps that create and migrate them."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import peewee as pw
from playhouse.migrate import SchemaMigrator
from playhouse.migrate import migrate as migrate_columns

from ..domain.types import UPDATABLE_FIELD_ORDER, Status
from . import timelines
from .pg_deferred import CREATE_CONFLICT_FUNCTION

SCHEMA_VERSION = 8


@dataclass(frozen=True)
class Tables:
    campaign: Any
    event: Any
    meta: Any
    body: Any
    session: Any
    lease: Any

    def all(self) -> list[Any]:
        return [self.meta, self.campaign, self.event, self.body, self.session, self.lease]


# The columns of a campaign that UpdateCampaign changes, its "body": kept for as long as the
# log refers to them (see CampaignBody).
BODY_COLUMNS = UPDATABLE_FIELD_ORDER


def bind_tables(db: pw.Database) -> Tables:
    """Model classes of their own per database, so that two stores never share a binding."""

    class Base(pw.Model):
        class Meta:
            database = db
            legacy_table_names = False

    class Meta(Base):
        key = pw.CharField(primary_key=True, max_length=32)
        value = pw.BigIntegerField()

    class Campaign(Base):
        # The insertion order: pages walk it, so a page boundary never skips or repeats.
        seq = pw.BigAutoField()
        customer_id = pw.CharField(max_length=36)
        id = pw.CharField(max_length=36)
        type = pw.SmallIntegerField()
        name = pw.TextField()
        detail = pw.TextField()
        status = pw.SmallIntegerField()
        service_level = pw.SmallIntegerField()
        end_handle = pw.SmallIntegerField()
        actions = pw.TextField()
        outplan_id = pw.CharField(max_length=36)
        outdial_id = pw.CharField(max_length=36)
        queue_id = pw.CharField(max_length=36)
        next_campaign_id = pw.CharField(max_length=36)
        tm_create = pw.BigIntegerField()
        tm_update = pw.BigIntegerField(null=True)
        tm_delete = pw.BigIntegerField(null=True)
        version = pw.IntegerField()
        revision = pw.BigIntegerField()
        stop_deadline = pw.BigIntegerField(null=True)
        request_id = pw.CharField(max_length=36, null=True)
        finishing = pw.BooleanField(default=False)
        stop_revision = pw.BigIntegerField(default=0)
        body_revision = pw.BigIntegerField(default=0)
        last_reason = pw.SmallIntegerField(default=0)
        # The actions as the wire encodes them, beside their JSON text (which the domain
        # reads): list pages are made of these bytes. Null where a release before version 5,
        # or a store without the wire's encoding, wrote the row.
        actions_wire = pw.BlobField(null=True)
        # The body_revision the encoding was made for: a release before version 5, serving
        # beside this one during an upgrade, changes the actions without their encoding, and
        # the body_revision with them, so that an encoding of other actions is never sent.
        actions_wire_body = pw.BigIntegerField(null=True)

        class Meta:
            table_name = "campaign"
            indexes = (
                (("customer_id", "id"), True),
                (("customer_id", "request_id"), True),
                (("customer_id", "seq"), False),
                # A campaign's id is one key across all customers.
                (("id",), True),
                # Snapshots walk campaigns in revision order.
                (("customer_id", "revision"), False),
                (("revision",), False),
            )

    # One outdial belongs to at most one live campaign of a customer; the database
    # enforces it too, so that racing writers on other replicas cannot both win.
    Campaign.add_index(
        Campaign.index(
            Campaign.customer_id, Campaign.outdial_id, unique=True, name="campaign_live_outdial"
        ).where((Campaign.tm_delete.is_null()) & (Campaign.outdial_id != ""))
    )
    Campaign.add_index(
        Campaign.index(Campaign.stop_deadline, name="campaign_stop_deadline").where(
            Campaign.status == int(Status.STOPPING)
        )
    )
    # The campaigns that need a dialer: leases are granted from it (see leases.py).
    Campaign.add_index(
        Campaign.index(Campaign.status, name="campaign_needs_dialer").where(
            Campaign.status != pw.SQL(str(int(Status.STOP)))
        )
    )
    # The live campaigns that name a campaign as their next one: a delete looks them up.
    Campaign.add_index(
        Campaign.index(
            Campaign.customer_id, Campaign.next_campaign_id, name="campaign_next_campaign"
        ).where((Campaign.tm_delete.is_null()) & (Campaign.next_campaign_id != ""))
    )

    class Event(Base):
        revision = pw.BigIntegerField(primary_key=True)
        customer_id = pw.CharField(max_length=36)
        campaign_id = pw.CharField(max_length=36)
        status = pw.SmallIntegerField()
        previous_status = pw.SmallIntegerField()
        deleted = pw.BooleanField()
        reason = pw.SmallIntegerField()
        tm_event = pw.BigIntegerField()
        next_campaign_id = pw.CharField(max_length=36, default="")
        chained_from = pw.CharField(max_length=36, default="")
        detail = pw.TextField(default="")
        # The campaign's state after the change (the full view shows it with its body).
        version = pw.IntegerField(default=0)
        tm_update = pw.BigIntegerField(null=True)
        tm_delete = pw.BigIntegerField(null=True)
        stop_revision = pw.BigIntegerField(default=0)
        body_revision = pw.BigIntegerField(default=0)
        next_campaign_result = pw.SmallIntegerField(default=0)
        # The types of the next campaign's unmet run conditions, comma-separated.
        unmet_run_conditions = pw.TextField(default="")
        # Who made the change, and the trace context of the request that did.
        principal = pw.TextField(default="")
        traceparent = pw.TextField(default="")
        # With a lease's reason: its holder and fencing token (see leases.py).
        lease_holder = pw.TextField(default="")
        fencing_token = pw.BigIntegerField(default=0)

        class Meta:
            table_name = "event"
            indexes = (
                (("customer_id", "revision"), False),
                (("customer_id", "campaign_id", "revision"), False),
            )

    class CampaignBody(Base):
        """A body that UpdateCampaign replaced, for the events written while it was current:
        the body of revision `revision`, superseded at `superseded_at`. Once the log is
        compacted past superseded_at no event refers to it, and it goes too."""

        customer_id = pw.CharField(max_length=36)
        campaign_id = pw.CharField(max_length=36)
        revision = pw.BigIntegerField()
        superseded_at = pw.BigIntegerField(index=True)
        type = pw.SmallIntegerField()
        name = pw.TextField()
        detail = pw.TextField()
        service_level = pw.SmallIntegerField()
        end_handle = pw.SmallIntegerField()
        actions = pw.TextField()
        outplan_id = pw.CharField(max_length=36)
        outdial_id = pw.CharField(max_length=36)
        queue_id = pw.CharField(max_length=36)
        next_campaign_id = pw.CharField(max_length=36)

        class Meta:
            table_name = "campaign_body"
            primary_key = pw.CompositeKey("campaign_id", "revision")

    class DialerSession(Base):
        """A dialer holding leases (HoldLeases): alive until expire_at, by the database's
        clock, unless it keeps alive again. incarnation grows with each stream that takes
        the session over; version with every write, for compare-and-set."""

        holder = pw.CharField(primary_key=True, max_length=128)
        customer_id = pw.CharField(max_length=36)
        capacity = pw.IntegerField()
        expire_at = pw.BigIntegerField()
        incarnation = pw.BigIntegerField()
        version = pw.BigIntegerField()

        class Meta:
            table_name = "dialer_session"

    class CampaignLease(Base):
        """Who holds a campaign's lease ("" when nobody does), and the fencing token of its
        last grant, which the next grant raises. Kept once released, for the token."""

        campaign_id = pw.CharField(primary_key=True, max_length=36)
        customer_id = pw.CharField(max_length=36)
        holder = pw.CharField(max_length=128)
        token = pw.BigIntegerField()
        # When the holder was asked to let go, the time by which it must.
        release_by = pw.BigIntegerField(null=True)
        version = pw.BigIntegerField()

        class Meta:
            table_name = "campaign_lease"

    CampaignLease.add_index(
        CampaignLease.index(CampaignLease.holder, name="campaign_lease_held").where(
            CampaignLease.holder != pw.SQL("''")
        )
    )
    return Tables(
        campaign=Campaign,
        event=Event,
        meta=Meta,
        body=CampaignBody,
        session=DialerSession,
        lease=CampaignLease,
    )


def _create(db: pw.Database, tables: Tables) -> None:
    """A new database gets the current schema at once."""
    db.create_tables(tables.all(), safe=True)
    timelines.create_table(db)
    _create_conflict_function(db)
    tables.meta.insert(key="revision", value=0).on_conflict_ignore().execute()
    tables.meta.insert(key=FULL_HISTORY_FROM, value=0).on_conflict_ignore().execute()


# The log revision from which events record the campaign's state for the full view: the
# head when a database was upgraded to version 3, 0 for one created at it.
FULL_HISTORY_FROM = "full_history_from"


class MigrationRefused(RuntimeError):
    """The database holds data the new schema cannot take; the message says what to do."""


def _v1_to_v2(db: pw.Database, tables: Tables) -> None:
    """End-of-list chaining: the finishing flag and the chain's notes on events."""
    m = SchemaMigrator.from_database(db)
    C, E = tables.campaign, tables.event
    migrate_columns(
        m.add_column("campaign", "finishing", C.finishing),
        m.add_column("event", "next_campaign_id", E.next_campaign_id),
        m.add_column("event", "chained_from", E.chained_from),
        m.add_column("event", "detail", E.detail),
    )


def _v2_to_v3(db: pw.Database, tables: Tables) -> None:
    """Ids unique across customers, stops confirmed by revision, the full view's history."""
    C, E, M = tables.campaign, tables.event, tables.meta
    shared = C.select(C.id).group_by(C.id).having(pw.fn.COUNT(C.customer_id) > 1).limit(20).tuples()
    duplicates = [row[0] for row in shared]
    if duplicates:
        raise MigrationRefused(
            "campaign ids are unique across customers from schema version 3, and these ids "
            f"belong to more than one customer: {', '.join(duplicates)}. Give all but one of "
            "each a new id (in both the campaign table and its customer's systems), then "
            "run `campaign-grpc migrate` again; nothing was changed."
        )
    m = SchemaMigrator.from_database(db)
    migrate_columns(
        m.add_column("campaign", "stop_revision", C.stop_revision),
        m.add_column("campaign", "body_revision", C.body_revision),
        m.add_column("campaign", "last_reason", C.last_reason),
        m.add_column("event", "version", E.version),
        m.add_column("event", "tm_update", E.tm_update),
        m.add_column("event", "tm_delete", E.tm_delete),
        m.add_column("event", "stop_revision", E.stop_revision),
        m.add_column("event", "body_revision", E.body_revision),
        m.add_column("event", "next_campaign_result", E.next_campaign_result),
        m.add_column("event", "unmet_run_conditions", E.unmet_run_conditions),
    )
    stopping = int(Status.STOPPING)
    # Before version 3 a STOPPING campaign's last change was the one that began its stop,
    # and every STOPPING event began one.
    C.update(stop_revision=C.revision).where(C.status == stopping).execute()
    E.update(stop_revision=E.revision).where(E.status == stopping).execute()
    C.update(body_revision=C.revision).execute()
    last = E.select(E.reason).where(E.revision == C.revision)
    C.update(last_reason=pw.fn.COALESCE(last, 0)).execute()
    db.create_tables([tables.body], safe=True)
    for index in (
        C.index(C.id, unique=True, name="campaign_id"),
        C.index(C.customer_id, C.revision, name="campaign_customer_id_revision"),
        C.index(C.revision, name="campaign_revision"),
        # As SQL text: SQLite takes no parameter in a partial index's condition.
        C.index(C.customer_id, C.next_campaign_id, name="campaign_next_campaign").where(
            (C.tm_delete.is_null()) & (C.next_campaign_id != pw.SQL("''"))
        ),
    ):
        db.execute(index)
    head = M.select(M.value).where(M.key == "revision")
    M.insert(key=FULL_HISTORY_FROM, value=head).on_conflict_ignore().execute()


def _v3_to_v4(db: pw.Database, tables: Tables) -> None:
    """Who made each change, and the trace of the request that did."""
    m = SchemaMigrator.from_database(db)
    E = tables.event
    migrate_columns(
        m.add_column("event", "principal", E.principal),
        m.add_column("event", "traceparent", E.traceparent),
    )


def _v4_to_v5(db: pw.Database, tables: Tables) -> None:
    """The actions' encoding beside their text; Store.migrate() fills it in for old rows."""
    m = SchemaMigrator.from_database(db)
    C = tables.campaign
    migrate_columns(
        m.add_column("campaign", "actions_wire", C.actions_wire),
        m.add_column("campaign", "actions_wire_body", C.actions_wire_body),
    )


# UPGRADES[i] takes an existing database from version i + 1 to i + 2; append, never edit.
def _v5_to_v6(db: pw.Database, tables: Tables) -> None:
    """The log's timelines (see timelines.py)."""
    timelines.create_table(db)


def _create_conflict_function(db: pw.Database) -> None:
    """PostgreSQL: what a write made at commit raises when the campaign it decided on moved
    on meanwhile (see pg_deferred). SQLite's writers hold the file's lock: they need none."""
    if isinstance(db, pw.PostgresqlDatabase):
        db.execute_sql(CREATE_CONFLICT_FUNCTION)


def _v6_to_v7(db: pw.Database, tables: Tables) -> None:
    """Writes made at commit, checked against the version read (see pg_deferred)."""
    _create_conflict_function(db)


def _v7_to_v8(db: pw.Database, tables: Tables) -> None:
    """Leases of campaigns held by dialers, and their changes in the log."""
    m = SchemaMigrator.from_database(db)
    C, E = tables.campaign, tables.event
    migrate_columns(
        m.add_column("event", "lease_holder", E.lease_holder),
        m.add_column("event", "fencing_token", E.fencing_token),
    )
    db.create_tables([tables.session, tables.lease], safe=True)
    db.execute(
        C.index(C.status, name="campaign_needs_dialer").where(
            C.status != pw.SQL(str(int(Status.STOP)))
        )
    )


UPGRADES: list[Callable[[pw.Database, Tables], None]] = [
    _v1_to_v2,
    _v2_to_v3,
    _v3_to_v4,
    _v4_to_v5,
    _v5_to_v6,
    _v6_to_v7,
    _v7_to_v8,
]


class SchemaTooNew(RuntimeError):
    pass


class SchemaNotMigrated(RuntimeError):
    """The schema is older than this release's, and this server was told not to migrate."""


def current_version(db: pw.Database, tables: Tables) -> int:
    if not db.table_exists("meta"):
        return 0
    row = tables.meta.get_or_none(tables.meta.key == "schema_version")
    return int(row.value) if row else 0


def require_current(db: pw.Database, tables: Tables) -> int:
    """The schema's version, if it is this release's; for a server that does not migrate."""
    version = _known_version(db, tables)
    if version < SCHEMA_VERSION:
        raise SchemaNotMigrated(
            f"the database schema is version {version}, and this release serves version "
            f"{SCHEMA_VERSION}: run `campaign-grpc migrate` with a role that may change tables, "
            "then serve (or serve without --no-migrate)"
        )
    return version


# Any fixed number, the same in every release: replicas that start together queue on it.
_MIGRATION_LOCK = 0x63616D70  # "camp"


def migrate(db: pw.Database, tables: Tables) -> int:
    """Brings the schema to SCHEMA_VERSION in one transaction per step; returns the version."""
    if not isinstance(db, pw.PostgresqlDatabase):
        # SQLite: each step's transaction holds the file's write lock, and re-reads the version.
        return _migrate(db, tables)
    # PostgreSQL runs CREATE TABLE IF NOT EXISTS of two sessions at once into a unique
    # violation on its catalog: replicas that start together take turns on a session lock,
    # and the later ones find the work done.
    db.execute_sql("SELECT pg_advisory_lock(%s)", (_MIGRATION_LOCK,))
    try:
        return _migrate(db, tables)
    finally:
        db.execute_sql("SELECT pg_advisory_unlock(%s)", (_MIGRATION_LOCK,))


def _known_version(db: pw.Database, tables: Tables) -> int:
    """The schema's version, unless it is of a later release than this one."""
    with db.atomic():
        version = current_version(db, tables)
    if version > SCHEMA_VERSION:
        raise SchemaTooNew(
            f"the database schema is version {version}; this release knows {SCHEMA_VERSION}"
        )
    return version


def _migrate(db: pw.Database, tables: Tables) -> int:
    version = _known_version(db, tables)
    # SQLite: IMMEDIATE takes the write lock before the version is read again, so that a process
    # starting at the same time waits for it (busy_timeout) instead of failing to upgrade a
    # read lock into a write lock with "database is locked".
    step_args = ("IMMEDIATE",) if isinstance(db, pw.SqliteDatabase) else ()
    while version < SCHEMA_VERSION:
        with db.atomic(*step_args):
            # Re-read under the transaction: another process may have migrated meanwhile.
            if current_version(db, tables) == version:
                if version == 0:
                    _create(db, tables)
                    version = SCHEMA_VERSION
                else:
                    UPGRADES[version - 1](db, tables)
                    version += 1
                tables.meta.insert(key="schema_version", value=version).on_conflict(
                    conflict_target=[tables.meta.key], update={tables.meta.value: version}
                ).execute()
            else:
                version = current_version(db, tables)
    return version
