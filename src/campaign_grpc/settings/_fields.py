"""The settings of a server: each one a field with its default, help and parser."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from campaign_grpc_client.methods import METHODS

from ._parsers import _address, _count, _non_negative, _page_bytes, _positive, _switch

# What --max-unary-writes-in-flight keeps room for.
_READ_NAMES = ", ".join(m.name for m in METHODS.values() if m.read and not m.streaming)


def _setting(default: Any, help: str, parse: Callable[[str], Any] = str, **extra: Any) -> Any:
    return field(default=default, metadata={"help": help, "parse": parse, **extra})


def _switch_setting(default: bool, help: str) -> Any:
    """A setting that is on or off: the flag alone turns it on (--insecure), or says which."""
    return _setting(default, help, _switch, nargs="?", const=True)


@dataclass(frozen=True)
class Settings:
    listen: str = _setting(
        "127.0.0.1:50051", "address to serve on (port 0 picks a free one)", metavar="HOST:PORT"
    )
    database_url: str = _setting(
        "sqlite:///campaigns.db",
        "where campaigns live: sqlite:///FILE or postgresql://[USER@]HOST[:PORT]/DATABASE",
        metavar="URL",
    )
    database_pool_size: int = _setting(
        8,
        "PostgreSQL connections of the database threads: the writer and each read thread "
        "take one (the LISTEN for other replicas' events holds one more)",
        _count,
    )
    database_lock_timeout: float = _setting(
        5.0,
        "seconds a statement waits for a lock another session holds (PostgreSQL's "
        "lock_timeout, SQLite's busy_timeout) before it fails with UNAVAILABLE "
        "(DATABASE_LOCK_TIMEOUT), nothing written",
        _positive,
    )
    database_statement_timeout: float = _setting(
        30.0,
        "seconds a PostgreSQL statement may run (statement_timeout) before it is cancelled "
        "and fails with UNAVAILABLE (DATABASE_STATEMENT_TIMEOUT), nothing written",
        _positive,
    )
    database_stall_timeout: float = _setting(
        5.0,
        "seconds a PostgreSQL session lives on once the other side is gone or silent: the "
        "server ends one left idle in a transaction, or whose data goes unacknowledged, "
        "that long (idle_in_transaction_session_timeout, tcp_user_timeout, keepalives), and "
        "so does this side. It bounds how long a replica cut off from the database holds "
        "the campaigns its open transaction locked",
        _positive,
    )
    cache_bytes: int = _setting(
        48 * 1024 * 1024,
        "memory the caches of campaigns read may hold, estimated in bytes: a third for "
        "decoded campaigns, the rest for their encoded messages. A campaign of 1,000 actions "
        "with 170-byte options costs about 660 KB decoded and 225 KB encoded; one of two "
        "actions under 2 KB",
        _count,
        metavar="BYTES",
    )
    list_page_bytes: int = _setting(
        1024 * 1024,
        "most bytes of campaigns in one ListCampaigns page, and of events in one "
        "ListCampaignEvents page (at most 3 MiB: clients receive 4 MiB by default); a page "
        "holds fewer than page_size rather than more bytes, and always at least one",
        _page_bytes,
        metavar="BYTES",
    )
    stop_grace: float = _setting(
        60.0, "seconds a campaign may stay STOPPING before it becomes STOP by itself", _positive
    )
    heartbeat_interval: float = _setting(
        10.0, "seconds between WatchStatus heartbeats while nothing changes", _positive
    )
    lease_ttl: float = _setting(
        10.0,
        "seconds a dialer's leases (HoldLeases) live without a keep-alive, by the database's "
        "clock: a dialer that dies is replaced within this and half a second more",
        _positive,
    )
    shutdown_grace: float = _setting(
        10.0, "seconds in-flight calls get to finish on SIGTERM or SIGINT", _positive
    )
    watch_buffer: int = _setting(
        1024, "events a WatchStatus stream may fall behind before it is ended", _count
    )
    watch_send_timeout: float = _setting(
        30.0,
        "seconds a WatchStatus stream may wait for its client to read a message before it is "
        "cancelled (a client that stopped reading would hold its place for good)",
        _positive,
    )
    read_threads: int | None = _setting(
        None,
        "threads serving database reads: 1 on SQLite, whose reads are quick and whose threads "
        "would only take turns with the event loop for the interpreter, 4 on PostgreSQL, "
        "whose reads wait on the network",
        _count,
        metavar="N",
    )
    sqlite_synchronous: str = _setting(
        "FULL", "SQLite's synchronous pragma (FULL survives power loss)", choices=("FULL", "NORMAL")
    )
    health_interval: float = _setting(
        2.0, "seconds between database checks that drive the health status", _positive
    )
    database_slow_threshold: float = _setting(
        0.25,
        "seconds the health check's read of the database (three index lookups) may take, "
        "the median of the last five, before this server reports campaign.v1.CampaignService "
        "NOT_SERVING (DATABASE_SLOW): a replica on a slow path to the database turns its "
        "load balancer's calls to the others. 0: never",
        _non_negative,
    )
    event_poll_interval: float = _setting(
        0.5, "seconds between looks for events written by other processes", _positive
    )
    event_retention: float = _setting(
        86_400.0,
        "seconds events stay in the log; a WatchStatus may resume from a revision this recent",
        _positive,
    )
    compaction_interval: float = _setting(
        60.0, "seconds between removals of events older than the retention", _positive
    )
    log_format: str = _setting("plain", "log line format", choices=("plain", "json"))
    log_level: str = _setting("INFO", "log level", choices=("DEBUG", "INFO", "WARNING", "ERROR"))
    log_buffer: int = _setting(
        10_000,
        "log lines held for a log destination that does not keep up (stderr a pipe read "
        "slowly, or not at all); more are dropped and counted, never waited for",
        _count,
    )
    metrics_listen: str = _setting(
        "", "address of the Prometheus /metrics endpoint over HTTP; off unless given", _address
    )
    health_listen: str = _setting(
        "",
        "an address where grpc.health.v1 alone is served in plaintext, without tokens, for "
        "probes that speak neither TLS nor tokens (Kubernetes' native gRPC probes); the same "
        "statuses as on --listen; off unless given",
        _address,
    )
    max_request_bytes: int = _setting(
        1024 * 1024,
        "largest request accepted; larger ones get RESOURCE_EXHAUSTED. A campaign of 1,000 "
        "actions with typical options is about 240 KiB (options travel as Struct, about 1.5x "
        "their JSON), and reading a request holds the event loop about 60 ms per MiB",
        _count,
        metavar="BYTES",
    )
    max_watch_streams: int = _setting(
        20_000,
        "WatchStatus streams open at once on this server; more get RESOURCE_EXHAUSTED",
        _count,
    )
    max_watch_streams_per_customer: int = _setting(
        2_000,
        "WatchStatus streams one customer_id may hold open on this server (the watches of all "
        "customers, with no customer_id, count as one more customer)",
        _count,
    )
    max_watch_unread_bytes: int = _setting(
        128 * 1024 * 1024,
        "bytes of WatchStatus messages handed to gRPC and not yet read by their clients, over "
        "all streams (grpc keeps a copy of each until the client's window takes it); a "
        "stream's next message waits for room, and one that waits --watch-send-timeout is "
        "ended with RESOURCE_EXHAUSTED (WATCH_UNREAD_BYTES)",
        _count,
        metavar="BYTES",
    )
    max_watch_unread_bytes_per_customer: int = _setting(
        32 * 1024 * 1024,
        "of --max-watch-unread-bytes, how many one customer_id's streams may hold; past it "
        "its streams' next messages wait, then end with RESOURCE_EXHAUSTED "
        "(WATCH_UNREAD_BYTES_FOR_CUSTOMER). A full-view message of a campaign of 1,000 "
        "actions is about 200 KB",
        _count,
        metavar="BYTES",
    )
    max_unary_in_flight: int = _setting(
        1_000,
        "unary calls this server runs at once; more get RESOURCE_EXHAUSTED (health checks never)",
        _count,
    )
    max_unary_writes_in_flight: int = _setting(
        750,
        "of --max-unary-in-flight, how many may be writes: the rest is kept for reads "
        f"({_READ_NAMES}), so that writes stuck behind a slow database leave reads the "
        "database could serve their share",
        _count,
    )
    max_unary_in_flight_per_customer: int = _setting(
        100,
        "unary calls one customer_id may have in flight on this server (requests naming no "
        "customer count as one more customer)",
        _count,
    )
    max_request_bytes_in_flight: int = _setting(
        8 * 1024 * 1024,
        "bytes of unary requests the server holds at once, from their arrival to their answer; "
        "handling a request takes several times its size in memory (about 9 MB for 1 MiB)",
        _count,
        metavar="BYTES",
    )
    request_receive_timeout: float = _setting(
        10.0,
        "seconds a call's request message may take to arrive after its headers; a call that "
        "has none by then is ended with DEADLINE_EXCEEDED",
        _positive,
    )
    max_aborted_calls: int = _setting(
        100,
        "calls one connection may end before their request arrives (reset at once, or "
        "half-closed with none) within 10 s; past it the connection is closed (rapid reset, "
        "CVE-2023-44487)",
        _count,
    )
    max_health_watches: int = _setting(
        1_000,
        "grpc.health.v1.Health/Watch streams open at once; more get RESOURCE_EXHAUSTED "
        "(Check never)",
        _count,
    )
    max_connections: int = _setting(
        4_000,
        "client connections open at once; more are closed as soon as they are accepted",
        _count,
    )
    max_streams_per_connection: int = _setting(
        2_200,
        "calls and streams one connection may have open at once (HTTP/2 "
        "SETTINGS_MAX_CONCURRENT_STREAMS); clients queue the ones past it. At least "
        "--max-watch-streams-per-customer plus --max-unary-in-flight-per-customer, so that "
        "one client's watches never leave its unary calls queued on its own connection",
        _count,
    )
    handshake_timeout: float = _setting(
        10.0,
        "seconds a new connection has to complete its TLS and HTTP/2 handshake",
        _positive,
    )
    max_connection_idle: float = _setting(
        300.0,
        "seconds a connection may have no call open before it is closed (GOAWAY); clients "
        "reconnect by themselves when they next call",
        _positive,
    )
    keepalive_interval: float = _setting(
        60.0,
        "seconds of quiet on a connection after which the server PINGs the client; a client "
        "that does not answer within 20 s is disconnected",
        _positive,
    )
    auth_tokens: str = _setting(
        "",
        "file of bearer tokens' SHA-256 digests, each with the customer_id it acts for or * "
        "(every customer); re-read on SIGHUP; off: no authentication",
        metavar="FILE",
    )
    tls_cert: str = _setting(
        "", "PEM certificate chain to serve TLS with (needs --tls-key)", metavar="FILE"
    )
    tls_key: str = _setting("", "PEM private key of --tls-cert", metavar="FILE")
    tls_client_ca: str = _setting(
        "",
        "PEM CA certificates: clients must present a certificate signed by one (mutual TLS)",
        metavar="FILE",
    )
    tracing: bool = _switch_setting(
        False,
        "trace every call with OpenTelemetry; the standard OTEL_* variables set the exporter "
        "(OTEL_TRACES_EXPORTER: otlp by default, or console; OTLP to "
        "OTEL_EXPORTER_OTLP_ENDPOINT over OTEL_EXPORTER_OTLP_PROTOCOL: grpc by default, or "
        "http/protobuf), the service name, the sampler and the propagators; serve refuses "
        "values it cannot honour",
    )
    reuse_port: bool = _switch_setting(
        False,
        "share --listen with other processes that ask for it too (SO_REUSEPORT: the kernel "
        "splits the connections between them); off, a port in use stops the server",
    )
    reflection: bool = _switch_setting(True, "serve gRPC server reflection")
    migrate: bool = _switch_setting(
        True,
        "bring the database schema up to date before serving; off (--no-migrate), serve only "
        "checks that the schema is this release's and refuses to start otherwise, so that its "
        "database role needs no right to change tables (run `campaign-grpc migrate` apart)",
    )
    insecure: bool = _switch_setting(
        False, "serve beyond loopback with neither TLS nor tokens (the flag alone turns it on)"
    )

    @property
    def read_thread_count(self) -> int:
        """read_threads, or by database when not given. One on SQLite: its reads take
        microseconds, and more threads only take turns with the event loop for the
        interpreter (on two cores, four read threads served 15% fewer GetCampaign and a third
        fewer ListCampaigns calls a second than one). Four on PostgreSQL, whose reads spend
        most of their time waiting on the network."""
        if self.read_threads is not None:
            return self.read_threads
        return 1 if urlsplit(self.database_url).scheme == "sqlite" else 4
