"""Peewee queries compiled to SQL once and executed many times with new parameters.

Building a query with Peewee costs far more than running it on SQLite; a query whose shape
never changes is built once, with markers where its parameters go, and then only executed.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import peewee as pw

_MARK = "\x00campaign-param:"
# Turns a DB-API error into Peewee's class for it (IntegrityError and the rest), as
# execute_sql does; Peewee's stubs do not declare it.
as_peewee_errors: Any = vars(pw)["__exception_wrapper__"]
# Where Peewee logs the statements it runs, at DEBUG: ours are logged there too.
_peewee_log = logging.getLogger("peewee")


def param(index: int) -> Any:
    """Where the index-th execution parameter goes in a query being prepared."""
    return pw.Value(f"{_MARK}{index}", converter=False)


class Prepared:
    def __init__(self, db: pw.Database, query: Any) -> None:
        self._db = db
        # On SQLite a statement runs on the thread's connection directly: Peewee's
        # execute_sql (a cursor object, its query hooks, layers of calls) costs more than
        # SQLite takes to run most of ours. Its errors and its DEBUG log are kept.
        self._on_connection = isinstance(db, pw.SqliteDatabase)
        self.sql, params = query.sql()
        # Each bound value is either a parameter given at execution or a constant of the shape.
        self._plan: list[tuple[int, Any]] = []
        for value in params:
            if isinstance(value, str) and value.startswith(_MARK):
                self._plan.append((int(value[len(_MARK) :]), None))
            else:
                self._plan.append((-1, value))
        self._direct = [i for i, _ in self._plan] == list(range(len(self._plan)))

    def bind(self, args: Sequence[Any]) -> Sequence[Any]:
        """The parameters of an execution with these args, in the order of sql's markers."""
        return self._bind(args)

    def _bind(self, args: Sequence[Any]) -> Sequence[Any]:
        if self._direct:
            return args
        return [args[i] if i >= 0 else const for i, const in self._plan]

    def execute(self, *args: Any) -> Any:
        db = self._db
        if not self._on_connection:
            return db.execute_sql(self.sql, self._bind(args))
        params = self._bind(args)
        if _peewee_log.isEnabledFor(logging.DEBUG):
            _peewee_log.debug((self.sql, params))
        with as_peewee_errors:
            return db.connection().execute(self.sql, params)

    def one(self, *args: Any) -> tuple[Any, ...] | None:
        row: tuple[Any, ...] | None = self.execute(*args).fetchone()
        return row

    def all(self, *args: Any) -> list[tuple[Any, ...]]:
        rows: list[tuple[Any, ...]] = self.execute(*args).fetchall()
        return rows

    def rows(self, *args: Any) -> Iterator[tuple[Any, ...]]:
        """The rows one at a time: on SQLite each is read only when asked for, so a caller
        that stops early reads no more. The statement is closed however the loop ends: an
        open one would hold SQLite's read snapshot."""
        cursor = self.execute(*args)
        try:
            with as_peewee_errors:
                yield from cursor
        finally:
            cursor.close()


class Statements:
    """Prepares each shape of a query the first time it is asked for."""

    def __init__(self, db: pw.Database) -> None:
        self._db = db
        self._cache: dict[Any, Prepared] = {}

    def get(self, key: Any, build: Callable[[], Any]) -> Prepared:
        found = self._cache.get(key)
        if found is None:
            found = self._cache[key] = Prepared(self._db, build())
        return found
