"""The dialers' sessions and the campaigns' leases, read and written in the writer's
transaction (see domain/leasing.py for what they mean).

Every write names the version it read, so that two replicas that decided on the same rows
cannot both commit (on PostgreSQL the check is made at commit, see pg_deferred). What the
transaction wrote is what it reads back.
"""

from __future__ import annotations

from typing import Any

import peewee as pw

from ..domain.leases import LeaseRow, SessionRow
from ..domain.types import Status
from .prepared import Prepared, param
from .transaction import Transaction

_SESSION = ("holder", "customer_id", "capacity", "expire_at", "incarnation", "version")
_LEASE = ("campaign_id", "customer_id", "holder", "token", "release_by", "version")


def _session(row: tuple[Any, ...]) -> SessionRow:
    return SessionRow(*row)


class LeaseStore:
    def __init__(self, store: Transaction) -> None:
        self._store = store
        db = store.db
        S, L, C = store.t.session, store.t.lease, store.t.campaign
        self._session_fields = [getattr(S, name) for name in _SESSION]
        lease_fields = [getattr(L, name) for name in _LEASE]
        self._sessions = Prepared(db, S.select(*self._session_fields).order_by(S.holder))
        self._session = Prepared(db, S.select(*self._session_fields).where(S.holder == param(0)))
        # The held leases, with the status of their campaigns: a lease of a campaign that
        # needs no dialer any more is let go.
        self._held = Prepared(
            db,
            L.select(*lease_fields, C.status)
            .join(C, pw.JOIN.LEFT_OUTER, on=(C.id == L.campaign_id))
            .where(L.holder != pw.SQL("''"))
            .order_by(L.campaign_id),
        )
        self._lease = Prepared(
            db,
            L.select(*lease_fields, C.status)
            .join(C, pw.JOIN.LEFT_OUTER, on=(C.id == L.campaign_id))
            .where(L.campaign_id == param(0)),
        )
        # A lease with its holder's expiry, in one statement: the fencing check of a write.
        self._lease_and_expiry = Prepared(
            db,
            L.select(*lease_fields, C.status, S.expire_at)
            .join(C, pw.JOIN.LEFT_OUTER, on=(C.id == L.campaign_id))
            .join(S, pw.JOIN.LEFT_OUTER, on=(S.holder == L.holder))
            .where(L.campaign_id == param(0)),
        )
        held = L.select(L.campaign_id).where((L.campaign_id == C.id) & (L.holder != pw.SQL("''")))
        # As SQL text, like the partial index it must match (see schema).
        needs_dialer = C.status != pw.SQL(str(int(Status.STOP)))
        self._unheld = Prepared(
            db,
            C.select(C.customer_id, C.id)
            .where(needs_dialer & ~pw.fn.EXISTS(held))
            .order_by(C.revision)
            .limit(param(0)),
        )
        self._insert_session = Prepared(
            db, S.insert({f: param(i) for i, f in enumerate(self._session_fields)})
        )
        self._update_session = Prepared(
            db,
            S.update(
                customer_id=param(0),
                capacity=param(1),
                expire_at=param(2),
                incarnation=param(3),
                version=param(4),
            ).where((S.holder == param(5)) & (S.version == param(6))),
        )
        self._delete_session = Prepared(
            db, S.delete().where((S.holder == param(0)) & (S.version == param(1)))
        )
        self._insert_lease = Prepared(
            db, L.insert({f: param(i) for i, f in enumerate(lease_fields)})
        )
        self._update_lease = Prepared(
            db,
            L.update(holder=param(0), token=param(1), release_by=param(2), version=param(3)).where(
                (L.campaign_id == param(4)) & (L.version == param(5))
            ),
        )

    # -- reads ---------------------------------------------------------------------------

    def sessions(self) -> list[SessionRow]:
        found = {row[0]: _session(row) for row in self._sessions.all()}
        return sorted(self._overlaid("session", found).values(), key=lambda s: s.holder)

    def session(self, holder: str) -> SessionRow | None:
        written, row = self._store.written_row(("session", holder))
        if written:
            return row  # type: ignore[no-any-return]
        found = self._session.one(holder)
        return None if found is None else _session(found)

    def held(self) -> list[LeaseRow]:
        """Every lease someone holds."""
        found = {row[0]: LeaseRow.from_row(row) for row in self._held.all()}
        overlaid = self._overlaid("lease", found)
        return [lease for lease in overlaid.values() if lease.holder]

    def lease(self, campaign_id: str) -> LeaseRow | None:
        written, row = self._store.written_row(("lease", campaign_id))
        if written:
            return row  # type: ignore[no-any-return]
        found = self._lease.one(campaign_id)
        return None if found is None else LeaseRow.from_row(found)

    def lease_and_expiry(self, campaign_id: str) -> tuple[LeaseRow | None, int | None]:
        """The campaign's lease, and when its holder's session expires (None: no session)."""
        written, _ = self._store.written_row(("lease", campaign_id))
        if not written:
            row = self._lease_and_expiry.one(campaign_id)
            if row is None:
                return None, None
            read = LeaseRow.from_row(row)
            written, _ = self._store.written_row(("session", read.holder))
            if not written:
                return read, row[7]
        lease = self.lease(campaign_id)
        session = self.session(lease.holder) if lease is not None and lease.holder else None
        return lease, None if session is None else session.expire_at

    def unheld(self, limit: int) -> list[tuple[str, str]]:
        """(customer_id, campaign_id) of campaigns that need a dialer and have none, the
        longest unchanged first."""
        rows = [(r[0], r[1]) for r in self._unheld.all(limit)]
        # Those this transaction granted, as its reads do not show yet.
        return [r for r in rows if not self._granted_here(r[1])]

    def _granted_here(self, campaign_id: str) -> bool:
        written, row = self._store.written_row(("lease", campaign_id))
        return written and row is not None and bool(row.holder)

    def _overlaid(self, kind: str, found: dict[str, Any]) -> dict[str, Any]:
        for (written_kind, key), row in self._store.written_rows():
            if written_kind != kind:
                continue
            if row is None:
                found.pop(key, None)
            else:
                found[key] = row
        return found

    # -- writes (compare-and-set on the version read) ------------------------------------

    def put_session(self, s: SessionRow, read: SessionRow | None) -> SessionRow:
        """Writes s over read (None: a new row); returns s with its new version."""
        store = self._store
        if read is None:
            s = s.with_version(1)
            store.write(self._insert_session, *s.values())
        else:
            s = s.with_version(read.version + 1)
            store.write_checked(
                self._update_session,
                s.customer_id,
                s.capacity,
                s.expire_at,
                s.incarnation,
                s.version,
                s.holder,
                read.version,
            )
        store.wrote_row(("session", s.holder), s)
        return s

    def delete_session(self, read: SessionRow) -> None:
        self._store.write_checked(self._delete_session, read.holder, read.version)
        self._store.wrote_row(("session", read.holder), None)

    def put_lease(self, lease: LeaseRow, read: LeaseRow | None) -> LeaseRow:
        store = self._store
        if read is None:
            lease = lease.with_version(1)
            store.write(
                self._insert_lease,
                lease.campaign_id,
                lease.customer_id,
                lease.holder,
                lease.token,
                lease.release_by,
                lease.version,
            )
        else:
            lease = lease.with_version(read.version + 1)
            store.write_checked(
                self._update_lease,
                lease.holder,
                lease.token,
                lease.release_by,
                lease.version,
                lease.campaign_id,
                read.version,
            )
        store.wrote_row(("lease", lease.campaign_id), lease)
        return lease
