"""The ordered end of the calls when the server stops: health first, then the watches, then
whatever calls are still open once the grace runs out."""

from __future__ import annotations

import asyncio
import contextlib

import grpc
from grpc_health.v1 import health

from ..api.interceptors import Call, UnaryCallsInFlight
from ..watch.hub import Hub
from ..watch.lease_keeper import LeaseKeeper
from .registration import WATCH_METHOD

# Seconds a stop leaves health watches to send NOT_SERVING before it cancels the calls.
HEALTH_FLUSH_S = 0.25


class WatchStreamsOpen:
    """Counts open WatchStatus streams, so that shutdown cancels none that is still on its
    way to send the UNAVAILABLE the hub ended it with."""

    def __init__(self) -> None:
        self.count = 0
        self._none = asyncio.Event()
        self._none.set()

    def started(self, call: Call) -> None:
        if call.method == WATCH_METHOD:
            self.count += 1
            self._none.clear()

    def finished(self, call: Call, code: str, seconds: float) -> None:
        if call.method == WATCH_METHOD:
            self.count -= 1
            if self.count == 0:
                self._none.set()

    async def wait_none(self) -> None:
        await self._none.wait()


async def end_calls(
    server: grpc.aio.Server,
    servicer: health.aio.HealthServicer,
    *,
    hub: Hub,
    lease_keeper: LeaseKeeper,
    in_flight: UnaryCallsInFlight,
    watch_streams: WatchStreamsOpen,
    grace: float,
) -> float:
    """Health NOT_SERVING, no new calls, in-flight calls finish, watchers end; returns the
    loop's time the grace ends at."""
    await servicer.enter_graceful_shutdown()
    loop = asyncio.get_running_loop()
    grace_ends = loop.time() + grace
    stopping = asyncio.create_task(server.stop(grace))
    # Streams never finish by themselves: end them now so clients reconnect elsewhere.
    await hub.close()
    await lease_keeper.close()
    # Once the unary calls are done and the watches have sent their UNAVAILABLE, nothing
    # is left worth waiting for (an idle health watch would otherwise hold the whole
    # grace): a shorter grace stops at once, and cancels the calls still open.
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(grace):
            await in_flight.wait_idle()
            await watch_streams.wait_none()
    # Health watches hear NOT_SERVING from tasks of their own: on a busy machine those
    # had not sent it yet when the calls were cancelled, and a load balancer watching
    # learned nothing. A moment, within the grace, lets them.
    await asyncio.sleep(max(0.0, min(HEALTH_FLUSH_S, grace_ends - loop.time())))
    await server.stop(0)
    await stopping
    return grace_ends
