"""Compaction of the event log: its oldest events removed a prefix at a time, with the
superseded bodies only they referred to."""

from __future__ import annotations

from .event_log import EventLog
from .prepared import Prepared, param


class Compaction(EventLog):
    def _prepare_compaction(self) -> None:
        db, E, M, B = self.db, self.t.event, self.t.meta, self.t.body
        self._delete_bodies = Prepared(db, B.delete().where(B.superseded_at <= param(0)))
        self._oldest_events = Prepared(
            db,
            E.select(E.revision, E.tm_event)
            .where(E.revision > param(0))
            .order_by(E.revision)
            .limit(param(1)),
        )
        self._delete_events = Prepared(
            db, E.delete().where((E.revision > param(0)) & (E.revision <= param(1)))
        )
        self._set_compacted = Prepared(
            db,
            M.insert(key="compacted", value=param(0)).on_conflict(
                conflict_target=[M.key], update={M.value: param(0)}
            ),
        )
        self._take_compaction = Prepared(
            db,
            M.select(M.value).where(M.key == "compacted").for_update(skip_locked=True)
            if self._postgresql
            else M.select(M.value).where(M.key == "compacted"),
        )

    def compact(self, older_than: int, batch: int) -> int:
        """Removes up to batch of the oldest events logged before older_than; returns how many.

        Only ever a prefix of the log goes, and the compacted revision moves with it in the
        same transaction, so "after revision R" is either complete or known to be incomplete.
        """
        taken = self._take_compaction.one()
        # None: another replica is compacting (PostgreSQL), or the log never was; the row is
        # written with the first compaction, once, by whoever comes first.
        if taken is None and self._postgresql and self._compacted.one() is not None:
            return 0
        compacted = 0 if taken is None else int(taken[0])
        rows = self._oldest_events.all(compacted, batch)
        last = compacted
        for revision, tm_event in rows:
            if tm_event >= older_than:
                break
            last = revision
        if last == compacted:
            return 0
        self._write(self._delete_events, compacted, last)
        # The bodies superseded at or before it: every event written with them is gone too.
        self._write(self._delete_bodies, last)
        self._write(self._set_compacted, last)
        # Only this replica removes events past `compacted` (it holds the row), and the log
        # has no gap: the events read up to `last` are those removed.
        return sum(1 for revision, _ in rows if revision <= last)
