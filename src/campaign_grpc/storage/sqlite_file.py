"""SQLite on one file: which file a connection opened, and the file's switch to WAL mode."""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import time
from typing import Any, cast
from urllib.parse import quote

import peewee as pw

from ..domain.errors import CampaignError, Unavailable
from .connections import drop_connection

log = logging.getLogger(__name__)


FileId = tuple[int, int]


def _file_id(path: str) -> FileId | None:
    """The device and inode of the file at path; None when there is none."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return (st.st_dev, st.st_ino)


class SqliteFile(pw.SqliteDatabase):
    """SQLite on one file, whose connections remember which file they opened.

    SQLite goes on reading and writing a file that was deleted, or replaced by another (a
    backup put in its place), through the connections it has open: writes are acknowledged
    into a file that no longer exists. Each batch of database work first checks the file
    at the path against the one its thread's connection has open (file_problem), and a
    write batch checks again once it has committed (committed_in_place).
    """

    def __init__(self, path: str, **kwargs: Any) -> None:
        self.path = path
        # mode=rw: a file that has gone is an error, not a new, empty database.
        super().__init__(f"file:{quote(path)}?mode=rw", uri=True, **kwargs)

    def _connect(self) -> Any:
        opened = _file_id(self.path)
        conn = super()._connect()  # type: ignore[misc]  # Peewee's stubs omit it
        state = self._thread_state()
        state.file = opened
        page_cache_kib = getattr(state, "page_cache_kib", None)
        if page_cache_kib is not None:
            conn.execute(f"PRAGMA cache_size = -{int(page_cache_kib)}")
        return conn

    def use_page_cache(self, kib: int) -> None:
        """The page cache of this thread's connections, from the next one opened on."""
        self._thread_state().page_cache_kib = kib

    def _thread_state(self) -> Any:
        """Peewee's state of this thread's connection, where the file it opened is kept."""
        return cast(Any, self)._state

    def _open_file(self) -> FileId | None:
        return getattr(self._thread_state(), "file", None) if not self.is_closed() else None

    def file_problem(self) -> CampaignError | None:
        """Why this thread cannot use the database file now, if it cannot. A connection to a
        file no longer at the path is closed, so that the next statement opens the one there
        now; whether that is the same database the log's identity tells (see identity.py)."""
        now = _file_id(self.path)
        if now is None:
            drop_connection(self)
            return Unavailable(
                f"the database file {self.path} is gone; restore it, or restart the server "
                "to make a new one",
                reason="DATABASE_FILE_MISSING",
            )
        opened = self._open_file()
        if opened is not None and opened != now:
            log.warning("the database file %s was replaced; opening the new one", self.path)
            drop_connection(self)
        return None

    def committed_in_place(self) -> bool:
        """Whether the file this thread's connection committed to is still the one at the
        path."""
        opened = self._open_file()
        return opened is None or opened == _file_id(self.path)


def switch_to_wal(path: str, within: float = 10.0) -> None:
    """Puts the file in WAL mode once, before any connection of ours sets its pragmas.

    The switch needs the file to itself, and SQLite refuses it at once, without waiting on
    busy_timeout, to a process that races another doing the same (two servers starting
    together on a new file): retry it briefly. The mode is stored in the file, so the
    connections' own journal_mode pragma is then a no-op.
    """
    deadline = time.monotonic() + within
    while True:
        try:
            with contextlib.closing(sqlite3.connect(path, timeout=within)) as conn:
                conn.execute("PRAGMA journal_mode=wal").fetchone()
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.02)
