"""A TCP proxy on 127.0.0.1 that a test cuts and restores, to play an outage of what is
behind it (the shared PostgreSQL server, which must keep running for everyone else)."""

from __future__ import annotations

import asyncio
import contextlib


class TcpProxy:
    """Forwards every connection to target; cut() resets them all and every new one until
    restore(). blackhole() drops what either side sends, on every connection, as a
    partition does, until restore(); a side that closes still closes the other (the kernel
    of a real partition would not tell, but PostgreSQL ending a session it gave up on is
    what the tests watch for). drop_reply_after(marker) forwards the client's data up to and
    including the first message holding marker, then drops that connection without passing
    on the server's answer: a reply lost in the network."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self._target = (target_host, target_port)
        self._server: asyncio.Server | None = None
        # The two ends of each connection through it, and the tasks that carry them.
        self._links: set[tuple[asyncio.StreamWriter, asyncio.StreamWriter]] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._open = True
        self.blackholed = False
        # (marker, whether to forward the message holding it) while armed.
        self.reply_drop: tuple[bytes, bool] | None = None
        self.replies_dropped = 0
        self.port = 0
        self.connections = 0

    def blackhole(self) -> None:
        self.blackholed = True

    def drop_reply_after(self, marker: bytes, *, forward: bool = True) -> None:
        """The next message holding marker is forwarded (or, with forward=False, dropped
        too), and its connection then dropped with nothing more passed back."""
        self.reply_drop = (marker, forward)

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
        for client, upstream in self._links:
            client.transport.abort()
            upstream.transport.abort()

    def restore(self) -> None:
        self._open = True
        self.blackholed = False

    async def close(self) -> None:
        self.cut()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        await asyncio.gather(*self._tasks, return_exceptions=True)

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
        link = (writer, upstream_writer)
        self._links.add(link)
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        pumps = [
            asyncio.create_task(self._pump(reader, upstream_writer, writer, upstream=True)),
            asyncio.create_task(self._pump(upstream_reader, writer, upstream_writer)),
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
            writer.transport.abort()
            upstream_writer.transport.abort()

    async def _pump(
        self,
        source: asyncio.StreamReader,
        sink: asyncio.StreamWriter,
        back: asyncio.StreamWriter,
        *,
        upstream: bool = False,
    ) -> None:
        with contextlib.suppress(ConnectionError):
            while data := await source.read(65536):
                if self.blackholed:
                    continue
                drop = self.reply_drop
                if upstream and drop is not None and drop[0] in data:
                    self.reply_drop = None
                    self.replies_dropped += 1
                    if drop[1]:
                        sink.write(data)
                        await sink.drain()
                    # The client hears nothing more: its side goes first, then, once the
                    # server has surely read the message, the server's.
                    back.transport.abort()
                    await asyncio.sleep(0.2)
                    sink.transport.abort()
                    return
                sink.write(data)
                await sink.drain()
