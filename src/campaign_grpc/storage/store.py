"""Storage: the narrow set of operations the domain needs (domain.ports), on SQLite or
PostgreSQL via Peewee.

Store is assembled of parts, one job each, that share the database and its tables (_base):

- transaction: the writer's transaction in progress, its journal of events and its
  deferred writes;
- campaign_table: one campaign read or written by its key, and the rules' lookups;
- event_log: events appended and read back, and the log's revisions;
- listing: list pages bounded in bytes, and a watch's snapshot pages;
- compaction, reencoding, probes: the upkeep the server runs in the background.

Rows are named records (rows.py). Methods of Store are synchronous and run on the database
threads (see batching.py, writer.py and read_lanes.py). Write methods are only called inside
the writer's transaction, so a domain operation composed of several of them is atomic.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from functools import cached_property

import peewee as pw

from .compaction import Compaction
from .identity import new_epoch
from .leases import LeaseStore
from .listing import Listing
from .pages import WireForm
from .probes import Probes
from .reencoding import ACTIONS_ENCODED, Reencoding
from .schema import migrate, require_current

__all__ = ["ACTIONS_ENCODED", "DECODED_SHARE", "Store", "WireForm"]

# The part of the memory budget of the caches that decoded campaigns get; the rest holds
# their encoded messages (see api.convert.CampaignWire).
DECODED_SHARE = 1 / 3


class Store(Listing, Compaction, Reencoding, Probes):
    """Reads (get, list_page, snapshot_page) may share the Campaign objects they return
    between callers: treat them as read-only. Writes start from load(), which always reads
    afresh."""

    def __init__(
        self,
        db: pw.Database,
        *,
        cache_bytes: int = 16 * 1024 * 1024,
        page_bytes: int = 1024 * 1024,
        wire: WireForm | None = None,
    ) -> None:
        """cache_bytes bounds the decoded campaigns kept for reads; page_bytes the campaigns
        of a list page, each weighed by the size of its message. With wire, the campaigns
        written keep their actions encoded too, and list pages are made of messages: those
        wire has cached, or those made of the rows' stored bytes; without it (a store that
        only migrates, some tests) the rows are decoded and sizes estimated."""
        super().__init__(db, cache_bytes=cache_bytes, page_bytes=page_bytes, wire=wire)
        self._prepare_transaction()
        self._prepare_campaign_table()
        self._prepare_event_log()
        self._prepare_compaction()
        self._prepare_probes()

    @cached_property
    def leases(self) -> LeaseStore:
        """The dialers' sessions and the campaigns' leases, in the same transactions."""
        return LeaseStore(self)

    def migrate(self) -> int:
        """Brings the schema up to date, and gives a database its epoch if it has none: at
        its creation, or on the first start of this release on an older one (see
        identity.py). Two servers migrating at once keep whichever epoch came first."""
        with self._without_timeouts():
            version = migrate(self.db, self.t)
            with self.db.atomic():
                M = self.t.meta
                M.insert(key="epoch", value=new_epoch()).on_conflict_ignore().execute()
        return version

    def require_current_schema(self) -> int:
        """What a server that does not migrate checks instead: the schema is this release's."""
        return require_current(self.db, self.t)

    @contextlib.contextmanager
    def _without_timeouts(self) -> Iterator[None]:
        """A migration may wait for another replica's, and an upgrade of a large table may
        take long: the session's lock and statement timeouts do not apply to it."""
        if not self._postgresql:
            yield
            return
        self.db.execute_sql("SET lock_timeout = 0; SET statement_timeout = 0")
        try:
            yield
        finally:
            # Back to the session's own values: the connection goes back to the pool.
            self.db.execute_sql("RESET lock_timeout; RESET statement_timeout")
