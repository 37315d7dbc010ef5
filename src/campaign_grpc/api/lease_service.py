"""HoldLeases: a dialer's join, keep-alives and releases in, its leases' news out.

Parse each request, call the domain, convert: the session's rules are in domain/leasing.py,
what each stream is told in watch/lease_keeper.py.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any

import grpc

from campaign_grpc_client.v1 import campaign_pb2 as pb

from ..domain.errors import CampaignError, FieldViolation, InvalidArgument
from ..domain.leases import LeaseRow
from ..domain.leasing import Leasing
from ..domain.types import Reason
from ..watch.lease_keeper import HeldStream, LeaseKeeper, Notice, NoticeKind
from . import convert
from .callers import authorize_customer, origin_of

Context = grpc.aio.ServicerContext[Any, Any]
Response = pb.HoldLeasesResponse


def _first_not_join() -> InvalidArgument:
    return InvalidArgument(
        [FieldViolation("join", "the first message of a stream must be a join, and only it")]
    )


def _lease(lease: LeaseRow) -> pb.Lease:
    return pb.Lease(
        customer_id=lease.customer_id,
        campaign_id=lease.campaign_id,
        holder=lease.holder,
        fencing_token=lease.token,
    )


class LeaseService:
    def __init__(self, leasing: Leasing, keeper: LeaseKeeper) -> None:
        self._leasing = leasing
        self._keeper = keeper
        ttl = leasing.ttl_s
        self._ttl = convert.to_duration(ttl)
        # Three keep-alives per time to live: one lost in transit leaves two.
        self._keep_alive_interval = convert.to_duration(ttl / 3)

    def _notice(self, notice: Notice) -> Response:
        m = Response(kind=int(notice.kind))  # type: ignore[arg-type]
        if notice.lease is not None:
            m.lease.CopyFrom(_lease(notice.lease))
        if notice.reason is not Reason.UNSPECIFIED:
            m.reason = int(notice.reason)  # type: ignore[assignment]
        if notice.expire_at:
            convert.set_timestamp(m.expire_time, notice.expire_at)
        return m

    async def hold(
        self, requests: AsyncIterator[pb.HoldLeasesRequest], context: Context
    ) -> AsyncGenerator[Response, None]:
        first = await anext(requests, None)
        if first is None or first.WhichOneof("kind") != "join":
            raise _first_not_join()
        join = first.join
        authorize_customer(join.customer_id)
        origin = origin_of(context)
        joined = await self._leasing.join(
            join.holder, join.customer_id, join.capacity, origin=origin
        )
        joined_message = Response(
            kind=Response.KIND_JOINED,
            ttl=self._ttl,
            keep_alive_interval=self._keep_alive_interval,
        )
        convert.set_timestamp(joined_message.expire_time, joined.session.expire_at)
        yield joined_message
        stream = self._keeper.open(joined)
        reading = asyncio.get_running_loop().create_task(self._read(requests, stream, origin))
        try:
            while True:
                try:
                    notice = await stream.next()
                except _Left:
                    return
                yield self._notice(notice)
        finally:
            reading.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await reading
            self._keeper.close_stream(stream)

    async def _read(
        self, requests: AsyncIterator[pb.HoldLeasesRequest], stream: HeldStream, origin: Any
    ) -> None:
        """The dialer's messages after its join. Its half-close says it is done: the session
        ends at once. A stream cut without one leaves the session to its time to live, so
        that a dialer that reconnects keeps its leases."""
        leasing = self._leasing
        try:
            async for request in requests:
                kind = request.WhichOneof("kind")
                if kind == "keep_alive":
                    s = await leasing.keep_alive(stream.holder, stream.incarnation)
                    stream.push(Notice(NoticeKind.KEPT_ALIVE, expire_at=s.expire_at))
                elif kind == "release":
                    r = request.release
                    await leasing.release(
                        stream.holder,
                        stream.incarnation,
                        r.campaign_id,
                        r.fencing_token,
                        origin=origin,
                    )
                    self._keeper.wake()
                else:
                    raise _first_not_join()
            await leasing.leave(stream.holder, stream.incarnation, origin=origin)
            self._keeper.wake()
            stream.end(_left())
        except CampaignError as exc:
            stream.end(exc)


class _Left(CampaignError):
    """Not an error: the stream ends with OK once the dialer said it is done."""


def _left() -> CampaignError:
    return _Left("the dialer left")
