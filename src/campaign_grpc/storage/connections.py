"""A database thread's own connection: whether it broke, closing it, cancelling what it runs."""

from __future__ import annotations

import logging

import peewee as pw
from playhouse.postgres_ext import PooledPsycopg3Database

log = logging.getLogger(__name__)


def connection_lost(db: pw.Database) -> bool:
    """Whether this thread's connection broke (its server or the network went away), as
    opposed to a statement failing on a sound connection or no connection being made."""
    if db.is_closed():
        return False
    return bool(getattr(db.connection(), "broken", False))  # psycopg's flag; SQLite has none


def drop_connection(db: pw.Database) -> None:
    """Closes this thread's connection, broken or not; the next use opens a new one."""
    try:
        if not db.is_closed():
            db.close()
    except Exception:
        log.debug("closing a broken connection failed", exc_info=True)


def cancel_statements(db: pw.Database) -> None:
    """Asks PostgreSQL to cancel what every connection in use is running (sqlite3 cannot
    end a wait for a lock: busy_timeout does)."""
    if not isinstance(db, PooledPsycopg3Database):
        return
    # Peewee's pool keeps the connections in use by key; psycopg's cancel_safe sends the
    # request over a connection of its own, so any thread may call it.
    for pooled in list(getattr(db, "_in_use", {}).values()):
        try:
            pooled.connection.cancel_safe(timeout=1.0)
        except Exception:
            log.debug("cancelling a statement failed", exc_info=True)
