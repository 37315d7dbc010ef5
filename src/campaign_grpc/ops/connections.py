"""Closing one client connection that grpc core keeps open, and deciding when to.

grpc core closes a connection itself for the abuse it recognises (too many PINGs, a header
list or frame it cannot accept), but not for a peer that opens streams and resets them at
once (rapid reset, CVE-2023-44487) or half-closes them without a request: it refuses the
streams past its per-connection cap, yet lets the attacker go on forever, and every stream
that got in costs the event loop a call. grpc.aio has no way to close one connection, so
the server does what the peer's own kernel would do on a disconnect: it shuts the socket
down. Core then sees the connection end and cancels its calls as for any client that left.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import time
from collections.abc import Callable

log = logging.getLogger(__name__)

# Connections remembered at once; past it the longest-remembered is forgotten.
MAX_TRACKED = 10_000


def peer_address(peer: str) -> tuple[str, int] | None:
    """grpc's peer string (ipv4:1.2.3.4:5678, ipv6:[::1]:5678) as (host, port)."""
    kind, _, rest = peer.partition(":")
    if kind not in ("ipv4", "ipv6"):
        return None
    host, _, port = rest.rpartition(":")
    if not port.isdigit():
        return None
    return host.removeprefix("[").removesuffix("]"), int(port)


def shut_down(peer: str) -> bool:
    """Shuts down this process's TCP connection from peer; whether one was found. Reads
    /proc/self/fd: blocking, and linear in the open files, so run it off the event loop."""
    address = peer_address(peer)
    if address is None:
        return False
    try:
        fds = os.listdir("/proc/self/fd")
    except OSError:
        return False
    for name in fds:
        try:
            if not os.readlink(f"/proc/self/fd/{name}").startswith("socket:"):
                continue
            duplicate = os.dup(int(name))
        except OSError:
            continue
        # A duplicate of the descriptor: closing it leaves core's own open, and shutdown()
        # acts on the socket both share.
        with socket.socket(fileno=duplicate) as sock, contextlib.suppress(OSError):
            if sock.type == socket.SOCK_STREAM and _same(sock.getpeername(), address):
                sock.shutdown(socket.SHUT_RDWR)
                return True
    return False


def _same(name: object, address: tuple[str, int]) -> bool:
    if not isinstance(name, tuple) or len(name) < 2:
        return False
    host = str(name[0]).removeprefix("::ffff:")
    return host == address[0].removeprefix("::ffff:") and name[1] == address[1]


class AbortedCalls:
    """Counts, per connection, calls that ended before their request arrived: reset by the
    client, or half-closed with no message. A sound client does that seldom; past `limit`
    within `window` seconds the connection is closed, once, by close (given the peer)."""

    def __init__(
        self,
        limit: int,
        close: Callable[[str], None],
        window: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.limit = limit
        self.window = window
        self._close = close
        self._clock = clock
        # peer -> (calls counted, start of their window); None once closed
        self._counts: dict[str, tuple[int, float] | None] = {}

    def count(self, peer: str) -> None:
        now = self._clock()
        entry = self._counts.pop(peer, (0, now))
        if entry is None:  # closing already: its last calls are still ending
            self._counts[peer] = None
            return
        calls, since = entry if now - entry[1] < self.window else (0, now)
        calls += 1
        if len(self._counts) >= MAX_TRACKED:
            del self._counts[next(iter(self._counts))]
        if calls > self.limit:
            self._counts[peer] = None
            self._close(peer)
        else:
            self._counts[peer] = (calls, since)
