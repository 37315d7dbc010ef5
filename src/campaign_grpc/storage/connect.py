"""Opening a database by URL, with the settings every session starts with, and closing it."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import peewee as pw
from playhouse.postgres_ext import PooledPsycopg3Database

from .connections import drop_connection
from .sqlite_file import SqliteFile, switch_to_wal


class UnsupportedDatabase(ValueError):
    pass


def open_database(
    url: str,
    *,
    sqlite_synchronous: str = "FULL",
    pool_size: int = 8,
    lock_timeout: float = 5.0,
    statement_timeout: float = 30.0,
    stall_timeout: float = 5.0,
) -> pw.Database:
    """A database by URL: sqlite:///FILE, or postgresql://[USER@]HOST[:PORT]/NAME[?PARAMS].

    lock_timeout bounds how long a statement waits for a lock another session holds (on
    SQLite the file's write lock); statement_timeout how long a PostgreSQL statement runs;
    stall_timeout how long a PostgreSQL session lives on, on either side, once the other side
    is gone or silent (see _session_options).
    """
    parts = urlsplit(url)
    if parts.scheme == "sqlite":
        path = url[len("sqlite:///") :] if url.startswith("sqlite:///") else ""
        if not path:
            raise UnsupportedDatabase(f"a SQLite URL names a file: sqlite:///FILE, got {url!r}")
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        switch_to_wal(path)
        return SqliteFile(
            path,
            pragmas={
                "journal_mode": "wal",
                "synchronous": sqlite_synchronous,
                "busy_timeout": milliseconds(lock_timeout),
                "cache_size": -32_000,
                "temp_store": "memory",
            },
            check_same_thread=False,
        )
    if parts.scheme in ("postgresql", "postgres"):
        return _open_postgresql(url, pool_size, lock_timeout, statement_timeout, stall_timeout)
    raise UnsupportedDatabase(f"unsupported database URL scheme {parts.scheme!r}")


def milliseconds(seconds: float) -> int:
    return max(1, round(seconds * 1000))


def _session_options(lock_timeout: float, statement_timeout: float, stall_timeout: float) -> str:
    """The settings every session of the service starts with, after the URL's own options,
    which they override.

    Every session waits for a lock, and runs a statement, for a bounded time: a write stuck
    behind another session's lock (an operator's open transaction, say) fails and is retried
    by its client instead of holding the writer, and every write behind it, forever.

    And PostgreSQL ends a session whose client is gone or stalled within stall_timeout: one
    left idle in its transaction (idle_in_transaction_session_timeout), one whose replies go
    unacknowledged (tcp_user_timeout), one whose peer went silent (TCP keepalives). Its
    defaults keep such a session, and the row locks of its open transaction, for two hours:
    a replica cut off from the database held up every other replica's writes to the
    campaigns it had locked for as long.
    """
    stall_s = max(1, round(stall_timeout))
    probe_s = max(1, stall_s // 3)
    return " ".join(
        f"-c {name}={value}"
        for name, value in (
            ("lock_timeout", milliseconds(lock_timeout)),
            ("statement_timeout", milliseconds(statement_timeout)),
            ("idle_in_transaction_session_timeout", milliseconds(stall_timeout)),
            ("tcp_user_timeout", milliseconds(stall_timeout)),
            ("tcp_keepalives_idle", probe_s),
            ("tcp_keepalives_interval", probe_s),
            ("tcp_keepalives_count", 3),
        )
    )


def _client_keepalives(stall_timeout: float) -> dict[str, Any]:
    """libpq's side of the same bound: a connection whose server is gone or silent breaks
    within stall_timeout, instead of a statement waiting on it for as long as the kernel
    retransmits (some 15 minutes)."""
    stall_s = max(1, round(stall_timeout))
    probe_s = max(1, stall_s // 3)
    return {
        # A connection being made counts too: libpq's floor is 2 s.
        "connect_timeout": max(2, stall_s),
        "keepalives": 1,
        "keepalives_idle": probe_s,
        "keepalives_interval": probe_s,
        "keepalives_count": 3,
        "tcp_user_timeout": milliseconds(stall_timeout),
    }


class PostgresDatabase(PooledPsycopg3Database):  # type: ignore[misc]  # untyped base
    """PostgreSQL through a pool of psycopg connections, where a write transaction may
    commit in its own last message (see pg_revisions): Peewee's COMMIT then has nothing
    left to do, and would only cost a round trip and a warning."""

    def commit(self) -> None:
        from psycopg.pq import TransactionStatus

        if not self.is_closed() and (
            self.connection().info.transaction_status == TransactionStatus.IDLE
        ):
            return
        super().commit()


def _open_postgresql(
    url: str, pool_size: int, lock_timeout: float, statement_timeout: float, stall_timeout: float
) -> pw.Database:
    # libpq parses the URL (host, port, user, password, sslmode, options...), so every
    # parameter a PostgreSQL user knows works unchanged.
    from psycopg.conninfo import conninfo_to_dict

    try:
        params = conninfo_to_dict(url)
    except Exception as exc:
        raise UnsupportedDatabase(f"not a PostgreSQL URL: {url!r}: {exc}") from None
    name = params.pop("dbname", None)
    if not name:
        raise UnsupportedDatabase(f"a PostgreSQL URL names a database: {url!r}")
    options = _session_options(lock_timeout, statement_timeout, stall_timeout)
    params["options"] = f"{params.get('options', '')} {options}".strip()
    # The URL's own keepalive settings, if any, are the operator's and stay.
    params = {**_client_keepalives(stall_timeout), **params}
    # Each database thread keeps one connection; the pool caps how many a server holds and
    # makes a thread that finds none free wait for one instead of failing at once.
    db: pw.Database = PostgresDatabase(
        name, max_connections=pool_size, timeout=30, autoconnect=True, **params
    )
    return db


def is_sqlite(db: pw.Database) -> bool:
    return isinstance(db, pw.SqliteDatabase)


def is_postgresql(db: pw.Database) -> bool:
    return isinstance(db, pw.PostgresqlDatabase)


def db_system(db: pw.Database) -> str:
    """The database's name as OpenTelemetry's db.system attribute has it."""
    return "sqlite" if is_sqlite(db) else "postgresql"


def close_database(db: pw.Database) -> None:
    """Closes the calling thread's connection and, for a pool, every idle connection in it."""
    drop_connection(db)
    if isinstance(db, PooledPsycopg3Database):
        db.close_all()
