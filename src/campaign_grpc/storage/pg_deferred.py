"""PostgreSQL: a write transaction's writes travel in its last message, with its COMMIT.

A row written early in a transaction stays locked until the transaction ends, and every
round trip after the write holds it longer: a replica on a slow path held the campaigns it
wrote for many of its round trips, and the other replicas' writes of those campaigns waited
for it (see bench/faults.py, its slow phase). Here the transaction only reads until its
end; its writes wait in DeferredWrites and go out in one pipeline with its COMMIT (see
pg_revisions and Store.journal_end), so that no row is locked across the network.

Nothing is locked while the transaction reads, so a write checks at commit that what it
decided on still holds: an update of a campaign names the version it read
(compare-and-set), and one that finds another version there fails the whole message with
SQLSTATE 40001 (PostgreSQL then skips the rest of the pipeline, COMMIT included), after
which the writer runs the batch again on fresh reads. What the
transaction wrote is what it reads back (DeferredWrites.read), as if written already.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ..domain.types import Campaign

Key = tuple[str, str]  # (customer_id, campaign id)

# What the compare-and-set of an update raises when the row moved on (see schema).
CONFLICT_FUNCTION = "campaign_write_conflict"
CONFLICT_SQLSTATE = "40001"
CREATE_CONFLICT_FUNCTION = f"""
CREATE OR REPLACE FUNCTION {CONFLICT_FUNCTION}() RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'a campaign changed under this write' USING ERRCODE = '{CONFLICT_SQLSTATE}';
END
$$"""


def compare_and_set(update_sql: str) -> str:
    """The update as a statement that fails the transaction when it changes no row."""
    return (
        f"WITH changed AS ({update_sql} RETURNING 1) SELECT {CONFLICT_FUNCTION}() "
        "FROM (SELECT count(*) AS n FROM changed) AS c WHERE n = 0"
    )


@dataclass(frozen=True, slots=True)
class _Undo:
    key: Key
    overlay: Campaign | None
    stored_version: int | None
    request: tuple[str, str] | None


class DeferredWrites:
    """The writes of the transaction in progress, and the campaigns as they wrote them."""

    def __init__(self) -> None:
        self.statements: list[tuple[str, Sequence[Any]]] = []
        self._overlay: dict[Key, Campaign] = {}
        # The version each campaign's row holds, as read, or as a write deferred leaves it.
        self._stored_version: dict[Key, int] = {}
        self._requests: dict[tuple[str, str], Key] = {}
        self._undo: list[_Undo] = []
        # Rows of other tables as this transaction wrote them (None: deleted), by a key of
        # the caller's making, with what each write replaced.
        self._rows: dict[Any, Any] = {}
        self._rows_undo: list[tuple[Any, bool, Any]] = []
        self._marks: list[tuple[int, int, int]] = []

    def clear(self) -> None:
        self.statements.clear()
        self._overlay.clear()
        self._stored_version.clear()
        self._requests.clear()
        self._undo.clear()
        self._rows.clear()
        self._rows_undo.clear()
        self._marks.clear()

    def wrote_row(self, key: Any, row: Any) -> None:
        """A row of another table is row once the writes deferred so far are made."""
        self._rows_undo.append((key, key in self._rows, self._rows.get(key)))
        self._rows[key] = row

    def rows(self) -> list[tuple[Any, Any]]:
        return list(self._rows.items())

    def row(self, key: Any) -> tuple[bool, Any]:
        """Whether this transaction wrote the row, and how it left it."""
        return (key in self._rows, self._rows.get(key))

    def add(self, sql: str, params: Sequence[Any]) -> None:
        self.statements.append((sql, params))

    def read(self, key: Key) -> Campaign | None:
        """The campaign as this transaction wrote it: a copy the caller may change."""
        c = self._overlay.get(key)
        return None if c is None else dataclasses.replace(c)

    def was_read(self, key: Key, version: int) -> None:
        """The row holds this version, as a read found it (the first read counts)."""
        self._stored_version.setdefault(key, version)

    def stored_version(self, key: Key) -> int | None:
        return self._stored_version.get(key)

    def wrote(self, c: Campaign, request_id: str = "") -> None:
        """c is the campaign's row once the writes deferred so far are made."""
        key = (c.customer_id, c.id)
        request = (c.customer_id, request_id) if request_id else None
        self._undo.append(
            _Undo(key, self._overlay.get(key), self._stored_version.get(key), request)
        )
        self._overlay[key] = dataclasses.replace(c)
        self._stored_version[key] = c.version
        if request is not None:
            self._requests[request] = key

    def by_request(self, customer_id: str, request_id: str) -> Campaign | None:
        key = self._requests.get((customer_id, request_id))
        return None if key is None else self.read(key)

    def holds_id(self, campaign_id: str) -> bool:
        return any(key[1] == campaign_id for key in self._overlay)

    def outdial_holder(self, customer_id: str, outdial_id: str, other_than: str) -> str | None:
        for (customer, campaign_id), c in self._overlay.items():
            mine = customer == customer_id and campaign_id != other_than
            if mine and c.tm_delete is None and c.outdial_id == outdial_id:
                return campaign_id
        return None

    def mark(self) -> int:
        self._marks.append((len(self.statements), len(self._undo), len(self._rows_undo)))
        return len(self._marks) - 1

    def rollback(self, mark: int) -> None:
        """Takes back every write deferred since the mark."""
        statements, undo, rows_undo = self._marks[mark]
        del self.statements[statements:]
        while len(self._rows_undo) > rows_undo:
            key, existed, row = self._rows_undo.pop()
            if existed:
                self._rows[key] = row
            else:
                self._rows.pop(key, None)
        while len(self._undo) > undo:
            u = self._undo.pop()
            if u.overlay is None:
                self._overlay.pop(u.key, None)
            else:
                self._overlay[u.key] = u.overlay
            if u.stored_version is None:
                self._stored_version.pop(u.key, None)
            else:
                self._stored_version[u.key] = u.stored_version
            if u.request is not None:
                self._requests.pop(u.request, None)
        del self._marks[mark:]
