"""The server: its gRPC side assembled over the backend (interceptors, services, reflection,
health, ports), started and stopped in order, and serve(), which runs it until a signal."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal

import grpc
from grpc_health.v1 import health, health_pb2_grpc

from ..api import reflection
from ..api.admission import Admission, Budgets, HealthWatches
from ..api.audit import AuditLog
from ..api.auth_gate import Authorize, customers_of
from ..api.interceptors import (
    AccessLog,
    DeadlineGate,
    Gate,
    Observe,
    Observer,
    Receiving,
    UnaryCallsInFlight,
)
from ..api.lease_service import LeaseService
from ..api.servicer import CampaignServicer
from ..settings import Settings
from ..settings import check as check_settings
from . import security
from .backend import Backend
from .connections import AbortedCalls, shut_down
from .grpc_options import grpc_options
from .health import HEALTH_WATCH_METHOD, SERVING, set_health, watch_database
from .metrics import Metrics
from .peer_reports import PeerReports
from .ports import ListenRefused, add_port, describe_tls, serve_health_alone
from .registration import SERVICE, SERVICE_NAME, add_campaign_service
from .shutdown import WatchStreamsOpen, end_calls
from .tracing import Tracing

log = logging.getLogger(__name__)


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
        self.backend = Backend(settings, tracing=tracing)
        # The parts of the backend that the services are built on.
        self.wire = self.backend.wire
        self.store = self.backend.store
        self.caches = self.backend.caches
        self.clock = self.backend.clock
        self.leasing = self.backend.leasing
        self.campaigns = self.backend.campaigns
        self.hub = self.backend.hub
        self.lease_keeper = self.backend.lease_keeper
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
            self.metrics = Metrics(self.hub, self.store, self.backend.readers)
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
            self.port = add_port(self.server, self.settings.listen, self._tls)
        except RuntimeError as exc:  # grpc's "Failed to bind to address"
            raise ListenRefused(
                f"cannot listen on {self.settings.listen}: the address is in use (another "
                "server?) or not available here; --reuse-port shares a port on purpose"
            ) from exc
        if self.port == 0:
            raise ListenRefused(f"cannot listen on {self.settings.listen}")
        await self.backend.start()
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
            self._health_server, self.health_port = await serve_health_alone(
                self.health, self.settings.health_listen, grpc_options(self.settings)
            )
        if self.settings.reflection:
            reflection.enable(self.server, [SERVICE_NAME, health.SERVICE_NAME])
        await self.server.start()
        await set_health(self.health, SERVING)
        self._health_task = asyncio.create_task(
            watch_database(
                self.health, self.settings, self.campaigns, self.store, self.backend.writer
            ),
            name="health",
        )
        log.info(
            "serving campaign.v1 on %s (database %s, %s, %s)",
            self.settings.listen.rsplit(":", 1)[0] + f":{self.port}",
            "sqlite" if self.backend.sqlite else "postgresql",
            describe_tls(self._tls),
            "bearer tokens" if self.tokens is not None else "no authentication",
        )
        return self.port

    async def reload_tokens(self) -> None:
        """Reads the token file again (on SIGHUP); open connections and streams carry on."""
        if self.tokens is not None:
            await asyncio.get_running_loop().run_in_executor(None, self.tokens.reload)

    async def stop(self) -> None:
        """Health NOT_SERVING, no new calls, in-flight calls finish, watchers end, DB closes."""
        if self.stopped:
            return
        self.stopped = True
        if self._health_task is not None:
            self._health_task.cancel()
        grace_ends = await end_calls(
            self.server,
            self.health,
            hub=self.hub,
            lease_keeper=self.lease_keeper,
            in_flight=self._in_flight,
            watch_streams=self._watch_streams,
            grace=self.settings.shutdown_grace,
        )
        if self._health_server is not None:
            # Last: a probe saw NOT_SERVING for as long as the main port drained.
            await self._health_server.stop(0)
        await self.backend.close_jobs()
        loop = asyncio.get_running_loop()
        if self.metrics is not None:
            await loop.run_in_executor(None, self.metrics.close)
        await self.backend.close_database(grace_ends)
        if self.tracing is not None:
            await loop.run_in_executor(None, self.tracing.shutdown)
        log.info("stopped")


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
