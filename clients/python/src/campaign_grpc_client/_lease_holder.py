"""A dialer's HoldLeases session: join, keep alive, follow what it holds, reconnect.

The leases it reports are those it may act on now: each lease granted and not lost, and
only until ttl after the last keep-alive the server answered was sent (the server counts
ttl from when that keep-alive reached it, later), less one keep-alive interval: the drain
that follows a lost lease must end before the server can grant it to another dialer. A
connection that is cut leaves the session to the server for ttl: the holder joins again
with the same identity and keeps its leases if it is back in time.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import grpc

from ._channel import Metadata
from ._retry import Retry
from .exceptions import CampaignServiceError, from_grpc_error
from .v1 import campaign_pb2 as pb

log = logging.getLogger("campaign_grpc_client")

R = pb.HoldLeasesResponse


@dataclass(frozen=True, slots=True)
class Held:
    customer_id: str
    fencing_token: int
    # The server asked to let go: drain, then release().
    release_requested: bool = False


class LeaseHolder:
    def __init__(
        self,
        stub: Any,
        *,
        holder: str,
        customer_id: str,
        capacity: int,
        metadata: Metadata | None,
        retry: Retry,
        on_change: Callable[[str], None],
    ) -> None:
        self._stub = stub
        self.holder = holder
        self._customer_id = customer_id
        self._capacity = capacity
        self._metadata = metadata
        self._retry = retry
        self._on_change = on_change
        self._held: dict[str, Held] = {}
        self._valid_until = 0.0
        self._holds_for = 0.0
        self._sent: collections.deque[float] = collections.deque()
        self._outbox: asyncio.Queue[pb.HoldLeasesRequest | None] | None = None
        self._leaving = False
        self._watching = False
        self.joined = asyncio.Event()

    @property
    def valid_until(self) -> float:
        """time.monotonic() by which the dialer stops dialing what it holds, unless the server
        answers another keep-alive first."""
        return self._valid_until

    def held(self) -> dict[str, Held]:
        """What this dialer may act on now."""
        if time.monotonic() >= self._valid_until:
            return {}
        return dict(self._held)

    def lease(self, campaign_id: str) -> Held | None:
        return self.held().get(campaign_id)

    def release(self, campaign_id: str) -> None:
        """Lets go of a lease (after its campaign is drained)."""
        lease = self._held.pop(campaign_id, None)
        if lease is None or self._outbox is None:
            return
        release = pb.HoldLeasesRequest.Release(
            campaign_id=campaign_id, fencing_token=lease.fencing_token
        )
        self._outbox.put_nowait(pb.HoldLeasesRequest(release=release))

    def forget(self, campaign_id: str) -> None:
        """The server refused this lease's token: it is held no more."""
        self._held.pop(campaign_id, None)

    async def leave(self) -> None:
        """Ends the session: the server gives what it still holds to other dialers."""
        self._leaving = True
        if self._outbox is not None:
            self._outbox.put_nowait(None)

    async def run(self) -> None:
        """Holds the session until leave(), joining again after any failure."""
        delays = None
        while not self._leaving:
            try:
                await self._session()
                if self._leaving:
                    return
            except CampaignServiceError as error:
                if error.reason == "LEASE_SESSION_TAKEN_OVER":
                    # Two processes with one identity would take the session from each
                    # other for ever: this one lets go and stops.
                    log.error("leases: another process joined as %s; stopping", self.holder)
                    self._lose_all()
                    self._leaving = True
                    return
                log.info("leases: %s; joining again", error)
                if error.reason == "LEASE_SESSION_EXPIRED":
                    self._lose_all()
            delays = delays or self._retry.delays()
            await asyncio.sleep(next(delays))
            if self._held and time.monotonic() >= self._valid_until:
                self._lose_all()

    def _lose_all(self) -> None:
        lost, self._held = list(self._held), {}
        for campaign_id in lost:
            self._on_change(campaign_id)

    async def _requests(
        self, outbox: asyncio.Queue[pb.HoldLeasesRequest | None]
    ) -> AsyncIterator[pb.HoldLeasesRequest]:
        join = pb.HoldLeasesRequest.Join(
            holder=self.holder, customer_id=self._customer_id, capacity=self._capacity
        )
        self._sent.append(time.monotonic())
        yield pb.HoldLeasesRequest(join=join)
        while (request := await outbox.get()) is not None:
            if request.HasField("keep_alive"):
                self._sent.append(time.monotonic())
            yield request

    async def _session(self) -> None:
        outbox: asyncio.Queue[pb.HoldLeasesRequest | None] = asyncio.Queue()
        self._outbox = outbox
        self._sent.clear()
        call = self._stub.HoldLeases(self._requests(outbox), metadata=self._metadata)
        keeping: asyncio.Task[None] | None = None
        try:
            while True:
                message = await call.read()
                if message is grpc.aio.EOF:
                    return
                if message.kind == R.KIND_JOINED:
                    interval = message.keep_alive_interval.ToTimedelta().total_seconds()
                    self._holds_for = message.ttl.ToTimedelta().total_seconds() - interval
                    self._acknowledged()
                    self.joined.set()
                    keeping = asyncio.create_task(self._keep_alive(outbox, interval))
                    if not self._watching:
                        self._watching = True
                        self._expire_soon()
                elif message.kind == R.KIND_KEPT_ALIVE:
                    self._acknowledged()
                else:
                    self._apply(message)
        except grpc.RpcError as exc:
            raise from_grpc_error(exc) from None
        finally:
            call.cancel()
            if keeping is not None:
                keeping.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await keeping
            self._outbox = None

    def _acknowledged(self) -> None:
        if self._sent:
            self._valid_until = self._sent.popleft() + self._holds_for

    def _expire_soon(self) -> None:
        """Tells the dialer when the leases lapse by its own count, should nothing come."""
        loop = asyncio.get_running_loop()

        def check() -> None:
            if self._held and time.monotonic() >= self._valid_until:
                for campaign_id in self._held:
                    self._on_change(campaign_id)
            if not self._leaving:
                loop.call_later(max(0.05, self._holds_for / 10), check)

        loop.call_later(max(0.05, self._holds_for / 10), check)

    async def _keep_alive(
        self, outbox: asyncio.Queue[pb.HoldLeasesRequest | None], interval: float
    ) -> None:
        while True:
            await asyncio.sleep(interval)
            outbox.put_nowait(pb.HoldLeasesRequest(keep_alive=pb.HoldLeasesRequest.KeepAlive()))

    def _apply(self, m: pb.HoldLeasesResponse) -> None:
        campaign_id = m.lease.campaign_id
        if m.kind == R.KIND_GRANTED:
            self._held[campaign_id] = Held(m.lease.customer_id, m.lease.fencing_token)
        elif m.kind == R.KIND_RELEASE_REQUESTED:
            held = self._held.get(campaign_id)
            if held is not None and held.fencing_token == m.lease.fencing_token:
                self._held[campaign_id] = Held(held.customer_id, held.fencing_token, True)
        elif m.kind == R.KIND_LOST:
            held = self._held.get(campaign_id)
            if held is not None and held.fencing_token == m.lease.fencing_token:
                del self._held[campaign_id]
        else:
            return
        self._on_change(campaign_id)
