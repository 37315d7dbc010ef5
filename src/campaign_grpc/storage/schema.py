"""The tables, bound to one database, and the versioned steps that create and migrate them."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import peewee as pw
from playhouse.migrate import SchemaMigrator
from playhouse.migrate import migrate as migrate_columns

from ..domain.types import Status

SCHEMA_VERSION = 2


@dataclass(frozen=True)
class Tables:
    campaign: Any
    event: Any
    meta: Any

    def all(self) -> list[Any]:
        return [self.meta, self.campaign, self.event]


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

        class Meta:
            table_name = "campaign"
            indexes = (
                (("customer_id", "id"), True),
                (("customer_id", "request_id"), True),
                (("customer_id", "seq"), False),
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

        class Meta:
            table_name = "event"
            indexes = (
                (("customer_id", "revision"), False),
                (("customer_id", "campaign_id", "revision"), False),
            )

    return Tables(campaign=Campaign, event=Event, meta=Meta)


def _create(db: pw.Database, tables: Tables) -> None:
    """A new database gets the current schema at once."""
    db.create_tables(tables.all(), safe=True)
    tables.meta.insert(key="revision", value=0).on_conflict_ignore().execute()


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


# UPGRADES[i] takes an existing database from version i + 1 to i + 2; append, never edit.
UPGRADES: list[Callable[[pw.Database, Tables], None]] = [_v1_to_v2]


class SchemaTooNew(RuntimeError):
    pass


def current_version(db: pw.Database, tables: Tables) -> int:
    if not db.table_exists("meta"):
        return 0
    row = tables.meta.get_or_none(tables.meta.key == "schema_version")
    return int(row.value) if row else 0


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


def _migrate(db: pw.Database, tables: Tables) -> int:
    with db.atomic():
        version = current_version(db, tables)
    if version > SCHEMA_VERSION:
        raise SchemaTooNew(
            f"the database schema is version {version}; this release knows {SCHEMA_VERSION}"
        )
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
