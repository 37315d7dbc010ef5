"""The server assembly: storage, domain, watch hub, gRPC services, health and shutdown."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import gc
import logging
import signal
import statistics
import time
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Any, cast

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from campaign_grpc_client.v1 import campaign_pb2, campaign_pb2_grpc

from ..api import convert, reflection
from ..api.admission import Admission, Budgets, HealthWatches
from ..api.audit import AuditLog
from ..api.auth_gate import Authorize, customers_of
from ..api.interceptors import (
    AccessLog,
    Call,
    DeadlineGate,
    Gate,
    Observe,
    Observer,
    Receiving,
    UnaryCallsInFlight,
)
from ..api.lease_service import LeaseService
from ..api.servicer import CampaignServicer
from ..domain.campaigns import Campaigns, Clock, wall_clock_us
from ..domain.errors import CampaignError
from ..domain.leasing import Leasing
from ..settings import Settings
from ..settings import check as check_settings
from ..storage.connect import UnsupportedDatabase, close_database, is_sqlite, open_database
from ..storage.db_clock import DatabaseClock, read_clock
from ..storage.pg_notify import Listener
from ..storage.read_lanes import Readers
from ..storage.store import DECODED_SHARE, Store
from ..storage.timelines import LogTimelines
from ..storage.writer import Writer
from ..watch.hub import Hub
from ..watch.lease_keeper import LeaseKeeper
from . import security
from .actions_encoding import ActionsEncoding
from .caches import Caches
from .clock_sync import ClockSync
from .compaction import Compactor
from .connections import AbortedCalls, shut_down
from .limits import UnreadBytes, WatchStreamCounts, receive_ceiling
from .memory import MemoryTrimmer
from .metrics import Metrics
from .peer_reports import PeerReports
from .stop_timer import StopTimer
from .tracing import Tracing

log = logging.getLogger(__name__)

SERVICE = campaign_pb2.DESCRIPTOR.services_by_name["CampaignService"]
SERVICE_NAME = SERVICE.full_name
WATCH_METHOD = f"/{SERVICE_NAME}/WatchStatus"
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
# grpc core queues the calls that arrive faster than grpc.aio takes them (it takes one at a
# time) and, past 1,000 queued, refuses some at random, past 3,000 all of them, with
# CANCELLED. Thousands of WatchStatus streams reconnecting at once (a replica restarted) arrive
# that way: queue them instead; calls left unanswered there still end after 30 s
# (grpc.server_max_unrequested_time_in_server).
MAX_QUEUED_CALLS = 20_000
# Health intervals a failed write holds the service NOT_SERVING (see App._watch_database).
WRITE_FAILURE_HOLD = 5
# What the port of --health-listen takes: probes, a few connections of a call or two each.
HEALTH_PORT_STREAMS = 16
HEALTH_PORT_CONNECTIONS = 64
# Seconds a stop leaves health watches to send NOT_SERVING before it cancels the calls.
HEALTH_FLUSH_S = 0.25
GRPC_OPTIONS = [
    ("grpc.server.max_pending_requests", MAX_QUEUED_CALLS),
    ("grpc.server.max_pending_requests_hard_limit", MAX_QUEUED_CALLS),
]
HEALTH_WATCH_METHOD = f"/{health.SERVICE_NAME}/Watch"


def grpc_options(settings: Settings) -> list[tuple[str, int]]:
    """grpc core's own protections against hostile and broken peers, from the settings.

    Each is enforced by core before a call reaches Python, where it is cheapest; see the
    README's "Hostile clients" for what each one answers.
    """
    ms = 1000
    return [
        *GRPC_OPTIONS,
        ("grpc.max_receive_message_length", receive_ceiling(settings.max_request_bytes)),
        # Streams a connection may hold: HTTP/2 SETTINGS_MAX_CONCURRENT_STREAMS. Past it core
        # refuses a new stream (REFUSED_STREAM) while the streams it allocated, reset ones
        # still queued for grpc.aio among them, are over the cap: a rapid-reset connection
        # gets no more than this many into the queue.
        ("grpc.max_concurrent_streams", settings.max_streams_per_connection),
        # Connections past the cap are closed as soon as they are accepted.
        ("grpc.max_allowed_incoming_connections", settings.max_connections),
        # A connection that sends nothing, or no HTTP/2 preface and SETTINGS, is closed.
        ("grpc.server_handshake_timeout_ms", int(settings.handshake_timeout * ms)),
        # An idle connection is sent GOAWAY, so that silent connections do not pile up.
        ("grpc.max_connection_idle_ms", int(settings.max_connection_idle * ms)),
        # The server PINGs a quiet connection and drops it when the PING goes unanswered:
        # peers gone without a FIN, and peers that stopped reading their socket.
        ("grpc.keepalive_time_ms", int(settings.keepalive_interval * ms)),
        ("grpc.keepalive_timeout_ms", 20 * ms),
        # PINGs from the client: at most one every 10 s while no call is open (grpc's
        # clients send none by default), two strikes and the connection gets GOAWAY
        # ENHANCE_YOUR_CALM (core's defaults are 5 minutes and 2; stated here on purpose).
        ("grpc.http2.min_ping_interval_without_data_ms", 10 * ms),
        ("grpc.http2.max_ping_strikes", 2),
        # Headers and metadata of one call: 16 KiB at most, refused at once past it (the
        # soft limit below which core refuses some calls at random is set to the same).
        ("grpc.max_metadata_size", 16 * 1024),
        ("grpc.absolute_max_metadata_size", 16 * 1024),
        # grpc core sets SO_REUSEPORT by default: a second server on a port in use would
        # start and take half of the connections, silently.
        ("grpc.so_reuseport", int(settings.reuse_port)),
    ]


class ListenRefused(OSError):
    """The address to serve on cannot be had: in use by another process, say."""


def add_campaign_service(servicer: CampaignServicer, server: grpc.aio.Server) -> None:
    """Registers the service as the generated code does, but with WatchStatus serialized by
    convert.item_to_wire: a change sent to thousands of streams is encoded once, not once each;
    and ListCampaigns by convert.page_to_wire: a page is its campaigns' cached encodings."""
    handlers: dict[str, grpc.RpcMethodHandler[Any, Any]] = {}

    class Registration:
        # The generated function's two calls, caught to take its handlers as they are.
        def add_generic_rpc_handlers(self, generic: object) -> None:
            pass

        def add_registered_method_handlers(
            self, service: str, method_handlers: dict[str, grpc.RpcMethodHandler[Any, Any]]
        ) -> None:
            handlers.update(method_handlers)

    campaign_pb2_grpc.add_CampaignServiceServicer_to_server(servicer, Registration())  # type: ignore[arg-type]
    watch = handlers["WatchStatus"]
    behaviour: Any = watch.unary_stream  # the stubs know only the sync handler types
    handlers["WatchStatus"] = grpc.unary_stream_rpc_method_handler(
        behaviour,
        request_deserializer=watch.request_deserializer,
        response_serializer=convert.item_to_wire,
    )
    listing = handlers["ListCampaigns"]
    handlers["ListCampaigns"] = grpc.unary_unary_rpc_method_handler(
        cast(Any, listing.unary_unary),
        request_deserializer=listing.request_deserializer,
        response_serializer=convert.page_to_wire,
    )
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE_NAME, handlers),))
    server.add_registered_method_handlers(SERVICE_NAME, handlers)


class WatchStreamsOpen:
    """Counts open WatchStatus streams, so that shutdown cancels none that is still on its
    way to send the UNAVAILABLE the hub ended it with."""

    def __init__(self) -> None:
        self.count = 0
        self._none = asyncio.Event()
        self._none.set()

    def started(self, call: Call) -> None:
        if call.method == WATCH_METHOD:
            self.count += 1
            self._none.clear()

    def finished(self, call: Call, code: str, seconds: float) -> None:
        if call.method == WATCH_METHOD:
            self.count -= 1
            if self.count == 0:
                self._none.set()

    async def wait_none(self) -> None:
        await self._none.wait()


class App:
    """One running server. start() then stop(); port is known after start()."""

    def __init__(self, settings: Settings, *, tracing: Tracing | None = None) -> None:
        # Before anything is opened: settings that contradict each other refuse the start.
        check_settings(settings)
        self.settings = settings
        self.port = 0
        self.stopped = False
        # Off unless --tracing (or given, as the tests do with an exporter of their own).
        if tracing is None and settings.tracing:
            tracing = Tracing.from_environment()
        self.tracing = tracing
        protection = security.load(settings)
        self._tls = protection.tls
        self.tokens = protection.tokens
        if security.tokens_in_plaintext(settings):
            log.warning("bearer tokens travel in plaintext beyond loopback: enable TLS")
        self._db = open_database(
            settings.database_url,
            sqlite_synchronous=settings.sqlite_synchronous,
            pool_size=settings.database_pool_size,
            lock_timeout=settings.database_lock_timeout,
            statement_timeout=settings.database_statement_timeout,
            stall_timeout=settings.database_stall_timeout,
        )
        read_threads = settings.read_thread_count
        # The writer, the read threads and the one of the bulk reads hold a connection each.
        needed = read_threads + 2
        if not is_sqlite(self._db) and settings.database_pool_size < needed:
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
        self._readers = Readers(self._db, read_threads, bulk=Store.BULK_READS, tracing=tracing)
        self._writer = Writer(
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
        if not is_sqlite(self._db):
            db = self._db
            database_clock = DatabaseClock(lambda: self._readers.run(lambda: read_clock(db)))
            self.clock, self._clock_sync = database_clock, ClockSync(database_clock)
        self.leasing = Leasing(
            self.store,
            self._writer,
            self._readers,
            clock=self.clock,
            ttl_s=settings.lease_ttl,
            release_grace_s=settings.stop_grace,
        )
        self.campaigns = Campaigns(
            self.store,
            self._writer,
            self._readers,
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
            log_state=lambda revision: self._readers.run(lambda: self.store.log_state(revision)),
            identity=self.store.identity,
            on_reset=self.caches.clear,
            timelines=LogTimelines(self._db, self._readers),
        )
        self._writer.on_commit = self.hub.publish
        self.lease_keeper = LeaseKeeper(self.leasing)
        self.hub.add_listener(self.lease_keeper.on_event)
        # Other replicas' events: on PostgreSQL a notification wakes the hub at once; the
        # poll (event_poll_interval) finds them anyway, on SQLite and when one is lost.
        self._listener = (
            None if is_sqlite(self._db) else Listener(settings.database_url, self.hub.wake)
        )
        self._stop_timer = StopTimer(self.campaigns)
        self._compactor = Compactor(
            self.store,
            self._writer,
            self.campaigns.now,
            retention_s=settings.event_retention,
            interval_s=settings.compaction_interval,
        )
        self._actions_encoding = ActionsEncoding(self.store, self._writer)
        self.health = health.aio.HealthServicer()
        self._health_task: asyncio.Task[None] | None = None
        # The port of --health-listen, once started.
        self._health_server: grpc.aio.Server | None = None
        self.health_port: int | None = None
        self._closing: set[asyncio.Future[bool]] = set()
        self._in_flight = UnaryCallsInFlight()
        # Load balancers must see the server healthy however busy it is: health is exempt.
        self.admission = Admission(
            Budgets(
                calls=settings.max_unary_in_flight,
                writes=settings.max_unary_writes_in_flight,
                per_customer=settings.max_unary_in_flight_per_customer,
                request_bytes=settings.max_request_bytes_in_flight,
            ),
            customer_of=customers_of(SERVICE),
            exempt=(health.SERVICE_NAME,),
        )
        self._health_watches = HealthWatches(HEALTH_WATCH_METHOD, settings.max_health_watches)
        self._watch_streams = WatchStreamsOpen()
        observers: list[Observer] = [
            self._in_flight,
            self._watch_streams,
            self._health_watches,
            AccessLog(),
        ]
        # Off unless --metrics-listen is given; metrics_port is known after start().
        self.metrics: Metrics | None = None
        self.metrics_port: int | None = None
        if settings.metrics_listen:
            self.metrics = Metrics(self.hub, self.store, self._readers)
            observers.append(self.metrics.calls)
        gates: list[Gate] = [DeadlineGate(), self._health_watches]
        if self.tokens is not None:
            # First: a caller without a token is told so before anything else.
            gates.insert(0, Authorize(self.tokens, SERVICE))
        self.peer_reports = PeerReports()
        if self.metrics is not None:
            counters = {
                "refused": self.metrics.calls_refused,
                "closed": self.metrics.connections_closed,
            }
            self.peer_reports.listeners.append(
                lambda what, reason: counters[what].labels(reason).inc()
            )
        self.aborted_calls = AbortedCalls(settings.max_aborted_calls, self._close_connection)
        self.receiving = Receiving(
            settings.request_receive_timeout,
            settings.max_unary_in_flight,
            aborted=self.aborted_calls.count,
        )
        observe = Observe(
            observers,
            gates=gates,
            max_request_bytes=settings.max_request_bytes,
            admission=self.admission,
            receiving=self.receiving,
            on_refusal=lambda error, peer: self.peer_reports.refused(
                error.reason, peer, error.message
            ),
            recorders=[AuditLog()],
            tracing=tracing,
        )
        self.server = grpc.aio.server(interceptors=[observe], options=grpc_options(settings))

    def _close_connection(self, peer: str) -> None:
        self.peer_reports.closed(
            "ABORTED_CALLS",
            peer,
            f"more than {self.settings.max_aborted_calls} calls ended before their request "
            f"within {self.aborted_calls.window:g} s",
        )
        task = asyncio.get_running_loop().run_in_executor(None, shut_down, peer)
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    @property
    def unary_calls_in_flight(self) -> int:
        return self._in_flight.count

    async def start(self) -> int:
        # The port first: a server that cannot have it touches nothing else.
        try:
            self.port = self._add_port()
        except RuntimeError as exc:  # grpc's "Failed to bind to address"
            raise ListenRefused(
                f"cannot listen on {self.settings.listen}: the address is in use (another "
                "server?) or not available here; --reuse-port shares a port on purpose"
            ) from exc
        if self.port == 0:
            raise ListenRefused(f"cannot listen on {self.settings.listen}")
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
        if self.metrics is not None:
            self.metrics_port = self.metrics.serve(self.settings.metrics_listen)
            host = self.settings.metrics_listen.rsplit(":", 1)[0]
            log.info("metrics on http://%s:%d/metrics", host, self.metrics_port)
        add_campaign_service(
            CampaignServicer(
                self.campaigns,
                self.hub,
                self.wire,
                LeaseService(self.leasing, self.lease_keeper),
            ),
            self.server,
        )
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        if self.settings.health_listen:
            self.health_port = await self._serve_health_alone(self.settings.health_listen)
        if self.settings.reflection:
            reflection.enable(self.server, [SERVICE_NAME, health.SERVICE_NAME])
        await self.server.start()
        await self._set_health(SERVING)
        self._health_task = asyncio.create_task(self._watch_database(), name="health")
        log.info(
            "serving campaign.v1 on %s (database %s, %s, %s)",
            self.settings.listen.rsplit(":", 1)[0] + f":{self.port}",
            "sqlite" if is_sqlite(self._db) else "postgresql",
            _describe_tls(self._tls),
            "bearer tokens" if self.tokens is not None else "no authentication",
        )
        return self.port

    async def _serve_health_alone(self, address: str) -> int:
        """grpc.health.v1 in plaintext on an address of its own, with the statuses of the main
        port: Kubernetes' native gRPC probes speak neither TLS nor tokens. Only Check and Watch
        are there, so nothing else needs either."""
        # The main port's protections, with its caps replaced, not repeated: of two values for
        # one key, which one grpc core takes is not something to rely on.
        options = dict(grpc_options(self.settings))
        # A probe holds a call or two: a peer that opens streams by the thousand is not one.
        options["grpc.max_concurrent_streams"] = HEALTH_PORT_STREAMS
        options["grpc.max_allowed_incoming_connections"] = HEALTH_PORT_CONNECTIONS
        self._health_server = grpc.aio.server(options=list(options.items()))
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self._health_server)
        try:
            port = self._health_server.add_insecure_port(address)
        except RuntimeError as exc:
            raise ListenRefused(f"cannot listen on --health-listen {address}: {exc}") from exc
        await self._health_server.start()
        log.info("health alone on %s (plaintext)", address.rsplit(":", 1)[0] + f":{port}")
        return port

    def _add_port(self) -> int:
        if self._tls is None:
            return self.server.add_insecure_port(self.settings.listen)
        credentials = grpc.ssl_server_credentials(
            [(self._tls.private_key, self._tls.cert_chain)],
            root_certificates=self._tls.client_ca,
            require_client_auth=self._tls.client_ca is not None,
        )
        return self.server.add_secure_port(self.settings.listen, credentials)

    async def reload_tokens(self) -> None:
        """Reads the token file again (on SIGHUP); open connections and streams carry on."""
        if self.tokens is not None:
            await asyncio.get_running_loop().run_in_executor(None, self.tokens.reload)

    def _prepare_schema(self) -> None:
        try:
            if self.settings.migrate:
                version = self.store.migrate()
            else:
                version = self.store.require_current_schema()
        finally:
            # This executor thread keeps no connection: the pool's are for the database threads.
            self._db.close()
        log.info("database schema at version %d", version)

    async def _set_health(self, status: int) -> None:
        for name in ("", SERVICE_NAME):
            await self.health.set(name, status)

    async def _watch_database(self) -> None:
        """Health tells a load balancer what the server can do: "" whether it can serve at
        all (the database answers reads), the service's name whether it can serve every
        call of it, writes included. A write that commits is the only proof that writes
        work: a foreign lock, a full disk or no free connection all let reads through."""
        interval = self.settings.health_interval
        # A write may wait for a lock that long before it fails by itself.
        write_within = interval + self.settings.database_lock_timeout
        hold = WRITE_FAILURE_HOLD * interval
        serving = {"": True, SERVICE_NAME: True}
        slowness = _Slowness(self.settings.database_slow_threshold)
        while True:
            await asyncio.sleep(interval)
            # A slow path answers late, not never: "" (whether the server can serve at all)
            # waits as long as a write may; slowness tells on the service's name alone.
            reads = await _probe(self._probe_read(slowness), write_within)
            writes = reads if reads.failed else await _probe(self._probe_write(), write_within)
            if not writes.failed and slowness.slow:
                writes = _Probe(True, slowness.reason)
            # The probe writes a few bytes: a disk with room for them and not for a campaign
            # passes it. A write of the service that failed on the database's side holds
            # the service NOT_SERVING for a while all the same, as a circuit breaker does,
            # then the probe is believed again (and the next failure holds it once more).
            failure = self._writer.last_failure
            held = failure is not None and time.monotonic() - failure.at < hold
            if failure is not None and held and not writes.failed:
                writes = _Probe(True, failure.reason)
            now_serving = {"": not reads.failed, SERVICE_NAME: not writes.failed}
            if now_serving == serving:
                continue
            if reads.failed:
                log.warning("the database does not answer (%s): NOT_SERVING", reads.reason)
            elif writes.failed and writes.reason.startswith("DATABASE_SLOW"):
                log.warning(
                    "the database answers this server slowly (%s): %s NOT_SERVING, calls are "
                    "still served",
                    writes.reason,
                    SERVICE_NAME,
                )
            elif writes.failed:
                log.warning(
                    "the database takes no writes (%s): %s NOT_SERVING, reads go on",
                    writes.reason,
                    SERVICE_NAME,
                )
            else:
                log.warning("the database answers reads and writes again: SERVING")
            for name, ok in now_serving.items():
                if ok != serving[name]:
                    await self.health.set(name, SERVING if ok else NOT_SERVING)
            serving = now_serving

    async def _probe_read(self, slowness: _Slowness) -> None:
        slowness.add(await self.campaigns.probe_read())

    async def _probe_write(self) -> None:
        now = self.campaigns.now()
        await self._writer.run(lambda: self.store.probe_write(now))

    async def stop(self) -> None:
        """Health NOT_SERVING, no new calls, in-flight calls finish, watchers end, DB closes."""
        if self.stopped:
            return
        self.stopped = True
        if self._health_task is not None:
            self._health_task.cancel()
        await self.health.enter_graceful_shutdown()
        grace = self.settings.shutdown_grace
        loop = asyncio.get_running_loop()
        grace_ends = loop.time() + grace
        stopping = asyncio.create_task(self.server.stop(grace))
        # Streams never finish by themselves: end them now so clients reconnect elsewhere.
        await self.hub.close()
        await self.lease_keeper.close()
        # Once the unary calls are done and the watches have sent their UNAVAILABLE, nothing
        # is left worth waiting for (an idle health watch would otherwise hold the whole
        # grace): a shorter grace stops at once, and cancels the calls still open.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(grace):
                await self._in_flight.wait_idle()
                await self._watch_streams.wait_none()
        # Health watches hear NOT_SERVING from tasks of their own: on a busy machine those
        # had not sent it yet when the calls were cancelled, and a load balancer watching
        # learned nothing. A moment, within the grace, lets them.
        await asyncio.sleep(max(0.0, min(HEALTH_FLUSH_S, grace_ends - loop.time())))
        await self.server.stop(0)
        await stopping
        if self._health_server is not None:
            # Last: a probe saw NOT_SERVING for as long as the main port drained.
            await self._health_server.stop(0)
        await self._stop_timer.close()
        await self._compactor.close()
        if self._clock_sync is not None:
            await self._clock_sync.close()
        await self._actions_encoding.close()
        await self.caches.close()
        await self._trimmer.close()
        if self._listener is not None:
            await self._listener.close()
        if self.metrics is not None:
            await loop.run_in_executor(None, self.metrics.close)

        # A write stuck behind another session's lock holds its thread until its lock
        # timeout: the grace is what it gets, and what it has not done by then is dropped
        # (its caller heard CANCELLED already; nothing of it committed).
        def left() -> float:
            # At least a moment: threads with nothing to do still have to see the end.
            return max(0.5, grace_ends - loop.time())

        done = await loop.run_in_executor(None, self._writer.close, left())
        done &= await loop.run_in_executor(None, self._readers.close, left())
        if done:
            close_database(self._db)
        if self.tracing is not None:
            await loop.run_in_executor(None, self.tracing.shutdown)
        log.info("stopped")


@dataclass(frozen=True, slots=True)
class _Probe:
    failed: bool
    reason: str = ""


class _Slowness:
    """Whether the database's answers come slowly to this server: the median of its last
    read probes' times against the threshold (0: never slow). One late answer (a pause of
    the database, a busy moment here) is not a slow path."""

    SAMPLES = 5

    def __init__(self, threshold: float) -> None:
        self._threshold = threshold
        self._times: collections.deque[float] = collections.deque(maxlen=self.SAMPLES)

    def add(self, seconds: float) -> None:
        self._times.append(seconds)

    @property
    def median(self) -> float:
        return statistics.median(self._times) if self._times else 0.0

    @property
    def slow(self) -> bool:
        full = len(self._times) == self.SAMPLES
        return full and self._threshold > 0 and self.median > self._threshold

    @property
    def reason(self) -> str:
        return f"DATABASE_SLOW: reads take {self.median * 1000:.0f} ms"


async def _probe(check: Awaitable[Any], within: float) -> _Probe:
    """Whether check completed within its time, and why not."""
    try:
        async with asyncio.timeout(within):
            await check
    except TimeoutError:
        return _Probe(True, f"no answer within {within:g} s")
    except CampaignError as exc:
        return _Probe(True, exc.reason)
    except Exception as exc:
        return _Probe(True, type(exc).__name__)
    return _Probe(False)


def _describe_tls(tls: security.TLSFiles | None) -> str:
    if tls is None:
        return "plaintext"
    return "mutual TLS" if tls.client_ca is not None else "TLS"


# Allocations less deallocations between two collections of the youngest generation (700 by
# default). Reading a page of the largest campaigns makes tens of thousands of objects: at
# 700, a few walks of them set off hundreds of collections a second, and the full collections
# among them held the interpreter long enough to lag the event loop and another customer's
# GetCampaign; at 10,000, a few a second and no full one (see bench/big.py).
YOUNG_GC_THRESHOLD = 10_000


def _tune_gc() -> None:
    """For the serving process only: the tests' processes keep Python's defaults."""
    _, middle, old = gc.get_threshold()
    gc.set_threshold(YOUNG_GC_THRESHOLD, middle, old)


async def serve(settings: Settings) -> None:
    _tune_gc()
    app = App(settings)
    await app.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    signals = [signal.SIGTERM, signal.SIGINT]
    for sig in signals:
        loop.add_signal_handler(sig, stop.set)
    reloads: set[asyncio.Task[None]] = set()

    def reload() -> None:
        # SIGHUP means "read your files again" to a server; one with nothing to read must not
        # die of it, as a process does by default.
        if app.tokens is None:
            log.info("SIGHUP: nothing to reload (no --auth-tokens)")
            return
        task = asyncio.create_task(app.reload_tokens(), name="reload tokens")
        reloads.add(task)
        task.add_done_callback(reloads.discard)

    loop.add_signal_handler(signal.SIGHUP, reload)
    signals.append(signal.SIGHUP)
    await stop.wait()
    log.info("shutting down")
    with contextlib.suppress(NotImplementedError):
        for sig in signals:
            loop.remove_signal_handler(sig)
    await app.stop()
