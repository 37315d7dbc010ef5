"""A dialer's HoldLeases stream driven by hand over the generated stub: what a test needs to
act as a dialer that keeps alive, stops keeping alive, lets go or leaves."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import grpc

from campaign_grpc_client.v1 import campaign_pb2 as pb
from campaign_grpc_client.v1 import campaign_pb2_grpc

R = pb.HoldLeasesResponse


@dataclass
class Holder:
    stub: campaign_pb2_grpc.CampaignServiceStub
    holder: str
    capacity: int = 100
    customer_id: str = ""
    metadata: tuple[tuple[str, str], ...] = ()
    keeping_alive: bool = True
    # Lets go at once when asked (nothing to drain).
    releasing: bool = True
    # campaign id -> fencing token, as the stream says now.
    held: dict[str, int] = field(default_factory=dict)
    asked_to_release: set[str] = field(default_factory=set)
    messages: list[pb.HoldLeasesResponse] = field(default_factory=list)
    ended: grpc.aio.AioRpcError | None = None
    done: bool = False
    joined: pb.HoldLeasesResponse | None = None

    def __post_init__(self) -> None:
        self._outbox: asyncio.Queue[pb.HoldLeasesRequest | None] = asyncio.Queue()
        self._tasks: list[asyncio.Task[None]] = []
        self._call: grpc.aio.StreamStreamCall | None = None  # type: ignore[type-arg]
        self.changed = asyncio.Event()

    async def _requests(self) -> AsyncIterator[pb.HoldLeasesRequest]:
        yield pb.HoldLeasesRequest(
            join=pb.HoldLeasesRequest.Join(
                holder=self.holder, customer_id=self.customer_id, capacity=self.capacity
            )
        )
        while (request := await self._outbox.get()) is not None:
            yield request

    async def start(self) -> None:
        self._call = self.stub.HoldLeases(self._requests(), metadata=self.metadata or None)
        first = await self._call.read()
        assert first is not grpc.aio.EOF
        assert first.kind == R.KIND_JOINED, first
        self.joined = first
        self._tasks.append(asyncio.create_task(self._read()))
        self._tasks.append(asyncio.create_task(self._keep_alive()))

    async def _read(self) -> None:
        assert self._call is not None
        try:
            while (m := await self._call.read()) is not grpc.aio.EOF:
                assert isinstance(m, pb.HoldLeasesResponse)
                self.messages.append(m)
                if m.kind == R.KIND_GRANTED:
                    self.held[m.lease.campaign_id] = m.lease.fencing_token
                elif m.kind == R.KIND_RELEASE_REQUESTED:
                    self.asked_to_release.add(m.lease.campaign_id)
                    if self.releasing:
                        self.release(m.lease.campaign_id)
                elif m.kind == R.KIND_LOST:
                    self.held.pop(m.lease.campaign_id, None)
                    self.asked_to_release.discard(m.lease.campaign_id)
                self.changed.set()
        except grpc.aio.AioRpcError as err:
            self.ended = err
            self.held.clear()
        self.done = True
        self.changed.set()

    async def _keep_alive(self) -> None:
        assert self.joined is not None
        interval = self.joined.keep_alive_interval.ToTimedelta().total_seconds()
        while True:
            await asyncio.sleep(interval)
            if self.keeping_alive:
                self._outbox.put_nowait(
                    pb.HoldLeasesRequest(keep_alive=pb.HoldLeasesRequest.KeepAlive())
                )

    def release(self, campaign_id: str, token: int | None = None) -> None:
        """Lets go of the lease held (or sends token, as a dialer that lost track would)."""
        token = self.held[campaign_id] if token is None else token
        self._outbox.put_nowait(
            pb.HoldLeasesRequest(
                release=pb.HoldLeasesRequest.Release(campaign_id=campaign_id, fencing_token=token)
            )
        )

    async def leave(self) -> None:
        """Half-closes: the dialer is done."""
        self._outbox.put_nowait(None)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(10):
                while not self.done:
                    self.changed.clear()
                    await self.changed.wait()
        await self.stop()

    async def stop(self) -> None:
        """Cuts the stream without a word, as a process that dies."""
        if self._call is not None:
            self._call.cancel()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
