"""Probes of the database: a write nobody reads, and reads of each table by an index, that
fail when the service's own writes or reads would."""

from __future__ import annotations

import secrets
import time

from .campaign_table import CampaignTable
from .event_log import EventLog
from .prepared import Prepared, param


class Probes(CampaignTable, EventLog):
    def _prepare_probes(self) -> None:
        db, M = self.db, self.t.meta
        # A row of this server's own: replicas that probed one row waited for each other's
        # probes, and one replica on a slow path made the others' probes time out.
        self._probe_key = f"write_probe:{secrets.token_hex(6)}"
        self._set_write_probe = Prepared(
            db,
            M.insert(key=self._probe_key, value=param(0)).on_conflict(
                conflict_target=[M.key], update={M.value: param(0)}
            ),
        )
        self._forget_probes = Prepared(
            db,
            M.delete().where(
                M.key.startswith("write_probe") & (M.key != self._probe_key) & (M.value < param(0))
            ),
        )

    def probe_read(self) -> float:
        """Reads each table the service reads, by an index and one row at most: a database
        that answers SELECT 1 but not them (a table missing, a permission revoked, a lock
        held on one) fails it, and a few index lookups cost no more than SELECT 1 did.
        Returns the seconds it took, on this thread: round trips to the database, mostly."""
        started = time.monotonic()
        head = self.head_revision()
        self._id_taken.one("")
        self._fingerprint.one(head)
        return time.monotonic() - started

    def probe_write(self, now: int) -> None:
        """A write nobody reads, committed like any other: whether the database takes
        writes now (its disk not full, a connection to be had, not a standby). The rows of
        servers that stopped probing a day ago go with it."""
        self._write(self._set_write_probe, now)
        self._write(self._forget_probes, now - 86_400_000_000)
