"""grpc core's options of the server: its call queue and its protections against peers."""

from __future__ import annotations

from ..settings import Settings
from .limits import receive_ceiling

# grpc core queues the calls that arrive faster than grpc.aio takes them (it takes one at a
# time) and, past 1,000 queued, refuses some at random, past 3,000 all of them, with
# CANCELLED. Thousands of WatchStatus streams reconnecting at once (a replica restarted) arrive
# that way: queue them instead; calls left unanswered there still end after 30 s
# (grpc.server_max_unrequested_time_in_server).
MAX_QUEUED_CALLS = 20_000
GRPC_OPTIONS = [
    ("grpc.server.max_pending_requests", MAX_QUEUED_CALLS),
    ("grpc.server.max_pending_requests_hard_limit", MAX_QUEUED_CALLS),
]


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
