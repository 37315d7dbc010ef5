"""Prometheus metrics over HTTP: calls, latencies, watch streams, events, campaigns, db errors.

Each App has a registry of its own, so that servers sharing a process (as in the tests) never
share counters. Call metrics use the names of go-grpc-prometheus, so existing dashboards fit.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import socketserver
import threading
from collections.abc import Iterable
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import peewee as pw
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, make_wsgi_app
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from campaign_grpc_client.v1 import campaign_pb2 as pb

from ..api.interceptors import Call
from ..settings import split_address
from ..storage import batching, db_errors
from ..storage.read_lanes import Readers
from ..storage.store import Store
from ..watch.hub import Hub
from ..watch.items import Kind
from . import logs

log = logging.getLogger(__name__)

WATCH_METHOD = "/campaign.v1.CampaignService/WatchStatus"
STATUSES = [pb.Campaign.Status.Name(v) for v in pb.Campaign.Status.values() if v]
# How long a scrape waits for the count of campaigns before it leaves that metric out.
COUNT_TIMEOUT = 5.0
_LABELS = ("grpc_type", "grpc_service", "grpc_method")
# The loggers whose errors are the database's (see _CountErrors).
_DATABASE_LOGGERS = (db_errors.__name__, batching.__name__)
# Shown at 0 from the start, so that a rate over them needs no first error.
DATABASE_ERROR_REASONS = (
    "DATABASE_UNAVAILABLE",
    "DATABASE_LOCK_TIMEOUT",
    "DATABASE_STATEMENT_TIMEOUT",
    "DATABASE_CHANGED",
    "DATABASE_FILE_MISSING",
    "DATABASE_FILE_REPLACED",
)


def count_by_status(store: Store) -> dict[str, int]:
    """Live (not deleted) campaigns of every customer, by status name."""
    C = store.t.campaign
    query = C.select(C.status, pw.fn.COUNT(C.seq)).where(C.tm_delete.is_null()).group_by(C.status)
    counts = dict.fromkeys(STATUSES, 0)
    for status, n in query.tuples():
        counts[pb.Campaign.Status.Name(status)] = int(n)
    return counts


class Metrics:
    """The registry, the call observer that feeds it, and the HTTP endpoint that serves it."""

    def __init__(self, hub: Hub, store: Store, readers: Readers) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.started = Counter("grpc_server_started", "RPCs started.", _LABELS, registry=r)
        self.handled = Counter(
            "grpc_server_handled",
            "RPCs completed, by status code.",
            (*_LABELS, "grpc_code"),
            registry=r,
        )
        self.handling = Histogram(
            "grpc_server_handling_seconds",
            "Seconds from the start of an RPC to its status (for a stream, its whole life).",
            _LABELS,
            registry=r,
        )
        self.watch_streams = Gauge(
            "campaign_grpc_watch_streams", "WatchStatus streams open.", registry=r
        )
        self.events_delivered = Counter(
            "campaign_grpc_events_delivered",
            "Changes (KIND_CHANGE messages) sent on WatchStatus streams.",
            registry=r,
        )
        self.database_errors = Counter(
            "campaign_grpc_database_errors",
            "Database operations that failed (a call answered UNAVAILABLE, or a check retried), "
            "by the reason given.",
            ["reason"],
            registry=r,
        )
        for reason in DATABASE_ERROR_REASONS:
            self.database_errors.labels(reason)
        self.calls_refused = Counter(
            "campaign_grpc_calls_refused",
            "Calls refused or dropped before their handler ran, by reason (a limit, a request "
            "that did not arrive in time or at all, a missing token).",
            ("reason",),
            registry=r,
        )
        self.connections_closed = Counter(
            "campaign_grpc_connections_closed",
            "Client connections the server closed for their calls, by reason (grpc core's "
            "own GOAWAYs are not seen here).",
            ("reason",),
            registry=r,
        )
        self._state = _StateCollector(hub, store, readers)
        r.register(self._state)
        self.calls = CallMetrics(self)
        self._errors = _CountErrors(self.database_errors)
        self._http: tuple[WSGIServer, threading.Thread] | None = None

    def serve(self, address: str) -> int:
        """Serves /metrics on address (HOST:PORT); returns the port. Call on the event loop."""
        host, port = split_address(address)
        self._state.loop = asyncio.get_running_loop()
        self._http = _serve_http(host, port, make_wsgi_app(self.registry))
        # db_errors logs every database error once, and batching what fails after a batch's
        # work; one handler counts them. Servers that share a process (only the tests) count
        # each other's errors too.
        for logger in _DATABASE_LOGGERS:
            logging.getLogger(logger).addHandler(self._errors)
        return int(self._http[0].server_address[1])

    def close(self) -> None:
        """Stops the endpoint. Blocks a little: run it off the event loop."""
        for logger in _DATABASE_LOGGERS:
            logging.getLogger(logger).removeHandler(self._errors)
        if self._http is not None:
            server, thread = self._http
            self._http = None
            server.shutdown()
            server.server_close()
            thread.join(5)


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


def _serve_http(host: str, port: int, app: Any) -> tuple[WSGIServer, threading.Thread]:
    family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]

    class Server(socketserver.ThreadingMixIn, WSGIServer):
        address_family = family
        daemon_threads = True

    server = make_server(host, port, app, Server, handler_class=_QuietHandler)
    # A short poll keeps shutdown() quick.
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.05}, name="metrics", daemon=True
    )
    thread.start()
    return server, thread


class _CountErrors(logging.Handler):
    """Counts the database errors logged, by the reason each was answered with."""

    def __init__(self, counter: Counter) -> None:
        super().__init__(logging.ERROR)
        self._counter = counter

    def emit(self, record: logging.LogRecord) -> None:
        self._counter.labels(getattr(record, "reason", "DATABASE_UNAVAILABLE")).inc()


class _StateCollector(Collector):
    """Read at each scrape: the event log's head, and campaigns by status counted off the loop."""

    def __init__(self, hub: Hub, store: Store, readers: Readers) -> None:
        self._hub = hub
        self._store = store
        self._readers = readers
        self.loop: asyncio.AbstractEventLoop | None = None

    def describe(self) -> Iterable[Metric]:
        return [self._written(0), self._dropped(), self._campaigns({})]

    def collect(self) -> Iterable[Metric]:
        # The hub has read the log up to head: every event written by this server or another
        # sharing the database. A counter that survives restarts, as the log does.
        yield self._written(self._hub.head)
        yield self._dropped()
        counts = self._count()
        if counts is not None:
            yield self._campaigns(counts)

    @staticmethod
    def _written(head: int) -> CounterMetricFamily:
        return CounterMetricFamily(
            "campaign_grpc_events_written",
            "Status events written to the event log (its head revision, as this server read it).",
            value=head,
        )

    @staticmethod
    def _dropped() -> CounterMetricFamily:
        return CounterMetricFamily(
            "campaign_grpc_log_lines_dropped",
            "Log lines dropped because the log destination did not keep up.",
            value=logs.dropped_lines(),
        )

    @staticmethod
    def _campaigns(counts: dict[str, int]) -> GaugeMetricFamily:
        family = GaugeMetricFamily(
            "campaign_grpc_campaigns", "Live (not deleted) campaigns, by status.", labels=["status"]
        )
        for status, n in counts.items():
            family.add_metric([status], n)
        return family

    def _count(self) -> dict[str, int] | None:
        # Called on the HTTP server's thread: the count runs on a reader thread, never on
        # the event loop, and a scrape gives up on it rather than hang.
        loop = self.loop
        if loop is None or loop.is_closed():
            return None
        counting = asyncio.run_coroutine_threadsafe(
            self._readers.run(lambda: count_by_status(self._store)), loop
        )
        try:
            return counting.result(COUNT_TIMEOUT)
        except Exception:  # the database error itself is logged (and counted) where it happens
            counting.cancel()
            log.warning("counting campaigns for /metrics failed", exc_info=True)
            return None


class CallMetrics:
    """Feeds the call metrics from the server's call observer (see interceptors.Observe)."""

    def __init__(self, metrics: Metrics) -> None:
        self._m = metrics

    @staticmethod
    def _labels(call: Call) -> tuple[str, str, str]:
        return (call.kind, call.service, call.name)

    def started(self, call: Call) -> None:
        self._m.started.labels(*self._labels(call)).inc()
        if call.method == WATCH_METHOD:
            self._m.watch_streams.inc()

    def finished(self, call: Call, code: str, seconds: float) -> None:
        labels = self._labels(call)
        self._m.handled.labels(*labels, code).inc()
        self._m.handling.labels(*labels).observe(seconds)
        if call.method == WATCH_METHOD:
            self._m.watch_streams.dec()

    def sent(self, call: Call, message: Any) -> None:
        # WatchStatus sends the hub's items; they become messages in its serializer.
        if call.method == WATCH_METHOD and message.kind == Kind.CHANGE:
            self._m.events_delivered.inc()
