"""A TCP proxy on 127.0.0.1 that a test cuts, delays, partitions and restores, to play the
faults of the path between a server and what is behind it (the shared PostgreSQL server,
which must keep running for everyone else).

- cut() resets every connection, and every new one until restore().
- delay (seconds) holds every chunk of data that long before passing it on, either way, in
  order: a slow link.
- blackhole() passes nothing on, either way, until restore(), as a partition does. What was
  sent meanwhile is held, as TCP holds what it has not seen acknowledged, and delivered at
  restore(); a connection with data held for user_timeout seconds is reset, as the side
  waiting for an acknowledgement would give up (tcp_user_timeout), and with idle_timeout any
  connection is reset after that long, as keepalives would find the peer gone.
- drop_reply_after(marker) passes the client's data up to and including the first chunk
  holding marker, then drops that connection without passing the server's answer back: an
  answer lost in the network.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field


@dataclass(eq=False)
class _Direction:
    """One way of one connection: what is held while the path is blackholed."""

    sink: asyncio.StreamWriter
    held: list[bytes] = field(default_factory=list)
    held_since: float | None = None
    # When the last delayed chunk goes out: a later one never overtakes it.
    due: float = 0.0


@dataclass(eq=False)
class _Link:
    client: asyncio.StreamWriter
    upstream: asyncio.StreamWriter
    ways: tuple[_Direction, _Direction]

    def abort(self) -> None:
        self.client.transport.abort()
        self.upstream.transport.abort()


class TcpProxy:
    def __init__(self, target_host: str, target_port: int) -> None:
        self._target = (target_host, target_port)
        self._server: asyncio.Server | None = None
        # Each connection through it, and the tasks that carry them.
        self._links: set[_Link] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._open = True
        self.blackholed = False
        self._blackhole_task: asyncio.Task[None] | None = None
        # (marker, whether to forward the chunk holding it) while armed.
        self.reply_drop: tuple[bytes, bool] | None = None
        self.replies_dropped = 0
        self.delay = 0.0
        self.port = 0
        self.connections = 0
        self.reset_by_blackhole = 0

    @property
    def open_connections(self) -> int:
        return len(self._links)

    async def start(self) -> int:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self.port

    def cut(self) -> None:
        self._open = False
        # Not by cancelling the tasks: asyncio's streams log a cancelled handler as an error.
        for link in list(self._links):
            link.abort()

    def blackhole(
        self, *, user_timeout: float | None = None, idle_timeout: float | None = None
    ) -> None:
        self.blackholed = True
        self._blackhole_task = asyncio.create_task(self._time_out(user_timeout, idle_timeout))

    def drop_reply_after(self, marker: bytes, *, forward: bool = True) -> None:
        """The next chunk holding marker is forwarded (or, with forward=False, dropped
        too), and its connection then dropped with nothing more passed back."""
        self.reply_drop = (marker, forward)

    def restore(self) -> None:
        self._open = True
        self.blackholed = False
        if self._blackhole_task is not None:
            self._blackhole_task.cancel()
            self._blackhole_task = None
        for link in self._links:
            for way in link.ways:
                if way.held and not way.sink.transport.is_closing():
                    way.sink.write(b"".join(way.held))
                way.held, way.held_since = [], None

    async def close(self) -> None:
        self.cut()
        if self._blackhole_task is not None:
            self._blackhole_task.cancel()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _time_out(self, user_timeout: float | None, idle_timeout: float | None) -> None:
        loop = asyncio.get_running_loop()
        began = loop.time()
        while True:
            await asyncio.sleep(0.05)
            now = loop.time()
            for link in list(self._links):
                held = [w.held_since for w in link.ways if w.held_since is not None]
                stale = user_timeout is not None and held and now - min(held) >= user_timeout
                idle = idle_timeout is not None and now - began >= idle_timeout
                if stale or idle:
                    self.reset_by_blackhole += 1
                    self._links.discard(link)
                    link.abort()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if not self._open:
            writer.transport.abort()
            return
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(*self._target)
        except OSError:
            writer.transport.abort()
            return
        self.connections += 1
        link = _Link(writer, upstream_writer, (_Direction(upstream_writer), _Direction(writer)))
        self._links.add(link)
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        pumps = [
            asyncio.create_task(self._pump(reader, link, link.ways[0], upstream=True)),
            asyncio.create_task(self._pump(upstream_reader, link, link.ways[1])),
        ]
        try:
            # When one side ends, both are dropped at once.
            await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
        finally:
            self._links.discard(link)
            self._tasks.discard(task)
            for pump in pumps:
                pump.cancel()
            await asyncio.gather(*pumps, return_exceptions=True)
            link.abort()

    async def _pump(
        self, source: asyncio.StreamReader, link: _Link, way: _Direction, *, upstream: bool = False
    ) -> None:
        loop = asyncio.get_running_loop()
        sink = way.sink
        with contextlib.suppress(ConnectionError):
            while data := await source.read(65536):
                if self.blackholed:
                    way.held.append(data)
                    if way.held_since is None:
                        way.held_since = loop.time()
                    continue
                drop = self.reply_drop
                if upstream and drop is not None and drop[0] in data:
                    self.reply_drop = None
                    self.replies_dropped += 1
                    if drop[1]:
                        sink.write(data)
                        await sink.drain()
                    # The client hears nothing more: its side goes first, then, once the
                    # server has surely read the chunk, the server's.
                    link.client.transport.abort()
                    await asyncio.sleep(0.2)
                    link.upstream.transport.abort()
                    return
                if self.delay > 0 or way.due > loop.time():
                    way.due = max(way.due, loop.time() + self.delay)
                    loop.call_at(way.due, _write_unless_closed, sink, data)
                    continue
                sink.write(data)
                await sink.drain()


def _write_unless_closed(sink: asyncio.StreamWriter, data: bytes) -> None:
    if not sink.transport.is_closing():
        sink.write(data)
