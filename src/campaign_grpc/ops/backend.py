"""Everything of one server but gRPC: the database and its threads, the store, the domain, the
watch hub, and the jobs they run in the background, wired together, started and closed."""

from __future__ import annotations

import asyncio
import logging

from ..api import convert
from ..domain.campaigns import Campaigns, Clock, wall_clock_us
from ..domain.leasing import Leasing
from ..settings import Settings
from ..storage.connect import UnsupportedDatabase, close_database, is_sqlite, open_database
from ..storage.db_clock import DatabaseClock, read_clock
from ..storage.pg_notify import Listener
from ..storage.read_lanes import Readers
from ..storage.store import DECODED_SHARE, Store
from ..storage.timelines import LogTimelines
from ..storage.writer import Writer
from ..watch.hub import Hub
from ..watch.lease_keeper import LeaseKeeper
from .actions_encoding import ActionsEncoding
from .caches import Caches
from .clock_sync import ClockSync
from .compaction import Compactor
from .limits import UnreadBytes, WatchStreamCounts
from .memory import MemoryTrimmer
from .stop_timer import StopTimer
from .tracing import Tracing

log = logging.getLogger(__name__)


class Backend:
    """start() then close_jobs() and close_database(); nothing is opened but the database
    before start()."""

    def __init__(self, settings: Settings, *, tracing: Tracing | None) -> None:
        self._migrate = settings.migrate
        self._db = open_database(
            settings.database_url,
            sqlite_synchronous=settings.sqlite_synchronous,
            pool_size=settings.database_pool_size,
            lock_timeout=settings.database_lock_timeout,
            statement_timeout=settings.database_statement_timeout,
            stall_timeout=settings.database_stall_timeout,
        )
        self.sqlite = is_sqlite(self._db)
        read_threads = settings.read_thread_count
        # The writer, the read threads and the one of the bulk reads hold a connection each.
        needed = read_threads + 2
        if not self.sqlite and settings.database_pool_size < needed:
            raise UnsupportedDatabase(
                f"--database-pool-size {settings.database_pool_size} is too small: the writer, "
                f"{read_threads} read threads and the bulk read thread need {needed}"
            )
        # The caches of campaigns read: decoded ones for the domain, encoded ones for the
        # wire, which also weighs the campaigns of a list page.
        decoded_bytes = int(settings.cache_bytes * DECODED_SHARE)
        self.wire = convert.CampaignWire(settings.cache_bytes - decoded_bytes)
        self.store = Store(
            self._db,
            cache_bytes=decoded_bytes,
            page_bytes=settings.list_page_bytes,
            wire=self.wire,
        )
        self._trimmer = MemoryTrimmer()
        self.caches = Caches([self.store.cache, self.wire.cache], released=self._trimmer.release)
        self.readers = Readers(self._db, read_threads, bulk=Store.BULK_READS, tracing=tracing)
        self.writer = Writer(
            self._db,
            journal=self.store,
            tracing=tracing,
            lock_budget=settings.database_lock_timeout,
        )
        # Replicas compare the times they write (stop deadlines, the log's stamps): on
        # PostgreSQL they are the database's, as one replica's wall clock may be off; SQLite's
        # servers share one machine's clock.
        self.clock: Clock = wall_clock_us
        self._clock_sync: ClockSync | None = None
        if not self.sqlite:
            db = self._db
            database_clock = DatabaseClock(lambda: self.readers.run(lambda: read_clock(db)))
            self.clock, self._clock_sync = database_clock, ClockSync(database_clock)
        self.leasing = Leasing(
            self.store,
            self.writer,
            self.readers,
            clock=self.clock,
            ttl_s=settings.lease_ttl,
            release_grace_s=settings.stop_grace,
        )
        self.campaigns = Campaigns(
            self.store,
            self.writer,
            self.readers,
            stop_grace_s=settings.stop_grace,
            clock=self.clock,
            fence=lambda campaign_id, token, now, changes: self.leasing.check_fence(
                campaign_id, token, now, changes=changes
            ),
        )
        self.hub = Hub(
            self.campaigns,
            heartbeat_interval=settings.heartbeat_interval,
            buffer_limit=settings.watch_buffer,
            send_timeout=settings.watch_send_timeout,
            poll_interval=settings.event_poll_interval,
            encode=convert.encode_item,
            streams=WatchStreamCounts(
                settings.max_watch_streams, settings.max_watch_streams_per_customer
            ),
            unread=UnreadBytes(
                settings.max_watch_unread_bytes, settings.max_watch_unread_bytes_per_customer
            ),
            log_state=lambda revision: self.readers.run(lambda: self.store.log_state(revision)),
            identity=self.store.identity,
            on_reset=self.caches.clear,
            timelines=LogTimelines(self._db, self.readers),
        )
        self.writer.on_commit = self.hub.publish
        self.lease_keeper = LeaseKeeper(self.leasing)
        self.hub.add_listener(self.lease_keeper.on_event)
        # Other replicas' events: on PostgreSQL a notification wakes the hub at once; the
        # poll (event_poll_interval) finds them anyway, on SQLite and when one is lost.
        self._listener = None if self.sqlite else Listener(settings.database_url, self.hub.wake)
        self._stop_timer = StopTimer(self.campaigns)
        self._compactor = Compactor(
            self.store,
            self.writer,
            self.campaigns.now,
            retention_s=settings.event_retention,
            interval_s=settings.compaction_interval,
        )
        self._actions_encoding = ActionsEncoding(self.store, self.writer)

    async def start(self) -> None:
        await asyncio.get_running_loop().run_in_executor(None, self._prepare_schema)
        if self._clock_sync is not None:
            await self._clock_sync.first()
            self._clock_sync.start()
        await self.hub.start()
        if self._listener is not None:
            self._listener.start()
        self._stop_timer.start()
        self.lease_keeper.start()
        self._compactor.start()
        self._actions_encoding.start()
        self.caches.start()
        self._trimmer.start()

    def _prepare_schema(self) -> None:
        try:
            version = self.store.migrate() if self._migrate else self.store.require_current_schema()
        finally:
            # This executor thread keeps no connection: the pool's are for the database threads.
            self._db.close()
        log.info("database schema at version %d", version)

    async def close_jobs(self) -> None:
        """Ends the background jobs; the hub and the lease keeper are closed before, with the
        calls they serve."""
        await self._stop_timer.close()
        await self._compactor.close()
        if self._clock_sync is not None:
            await self._clock_sync.close()
        await self._actions_encoding.close()
        await self.caches.close()
        await self._trimmer.close()
        if self._listener is not None:
            await self._listener.close()

    async def close_database(self, grace_ends: float) -> None:
        """Closes the database threads, then the database, by the loop's time grace_ends."""
        loop = asyncio.get_running_loop()

        # A write stuck behind another session's lock holds its thread until its lock
        # timeout: the grace is what it gets, and what it has not done by then is dropped
        # (its caller heard CANCELLED already; nothing of it committed).
        def left() -> float:
            # At least a moment: threads with nothing to do still have to see the end.
            return max(0.5, grace_ends - loop.time())

        done = await loop.run_in_executor(None, self.writer.close, left())
        done &= await loop.run_in_executor(None, self.readers.close, left())
        if done:
            close_database(self._db)
