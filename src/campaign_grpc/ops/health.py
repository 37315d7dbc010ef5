"""The health statuses of the server, driven by probes of its database."""

from __future__ import annotations

import asyncio
import collections
import logging
import statistics
import time
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Any

from grpc_health.v1 import health, health_pb2

from ..domain.campaigns import Campaigns
from ..domain.errors import CampaignError
from ..settings import Settings
from ..storage.store import Store
from ..storage.writer import Writer
from .registration import SERVICE_NAME

log = logging.getLogger(__name__)

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
# Health intervals a failed write holds the service NOT_SERVING (see watch_database).
WRITE_FAILURE_HOLD = 5
HEALTH_WATCH_METHOD = f"/{health.SERVICE_NAME}/Watch"


async def set_health(servicer: health.aio.HealthServicer, status: int) -> None:
    """The status of the server ("") and of the campaign service alike."""
    for name in ("", SERVICE_NAME):
        await servicer.set(name, status)


async def watch_database(
    servicer: health.aio.HealthServicer,
    settings: Settings,
    campaigns: Campaigns,
    store: Store,
    writer: Writer,
) -> None:
    """Health tells a load balancer what the server can do: "" whether it can serve at
    all (the database answers reads), the service's name whether it can serve every
    call of it, writes included. A write that commits is the only proof that writes
    work: a foreign lock, a full disk or no free connection all let reads through."""
    interval = settings.health_interval
    # A write may wait for a lock that long before it fails by itself.
    write_within = interval + settings.database_lock_timeout
    hold = WRITE_FAILURE_HOLD * interval
    serving = {"": True, SERVICE_NAME: True}
    slowness = _Slowness(settings.database_slow_threshold)
    while True:
        await asyncio.sleep(interval)
        # A slow path answers late, not never: "" (whether the server can serve at all)
        # waits as long as a write may; slowness tells on the service's name alone.
        reads = await _probe(_read(campaigns, slowness), write_within)
        writes = (
            reads if reads.failed else await _probe(_write(campaigns, store, writer), write_within)
        )
        if not writes.failed and slowness.slow:
            writes = _Probe(True, slowness.reason)
        # The probe writes a few bytes: a disk with room for them and not for a campaign
        # passes it. A write of the service that failed on the database's side holds
        # the service NOT_SERVING for a while all the same, as a circuit breaker does,
        # then the probe is believed again (and the next failure holds it once more).
        failure = writer.last_failure
        held = failure is not None and time.monotonic() - failure.at < hold
        if failure is not None and held and not writes.failed:
            writes = _Probe(True, failure.reason)
        now_serving = {"": not reads.failed, SERVICE_NAME: not writes.failed}
        if now_serving == serving:
            continue
        if reads.failed:
            log.warning("the database does not answer (%s): NOT_SERVING", reads.reason)
        elif writes.failed and writes.reason.startswith("DATABASE_SLOW"):
            log.warning(
                "the database answers this server slowly (%s): %s NOT_SERVING, calls are "
                "still served",
                writes.reason,
                SERVICE_NAME,
            )
        elif writes.failed:
            log.warning(
                "the database takes no writes (%s): %s NOT_SERVING, reads go on",
                writes.reason,
                SERVICE_NAME,
            )
        else:
            log.warning("the database answers reads and writes again: SERVING")
        for name, ok in now_serving.items():
            if ok != serving[name]:
                await servicer.set(name, SERVING if ok else NOT_SERVING)
        serving = now_serving


async def _read(campaigns: Campaigns, slowness: _Slowness) -> None:
    slowness.add(await campaigns.probe_read())


async def _write(campaigns: Campaigns, store: Store, writer: Writer) -> None:
    now = campaigns.now()
    await writer.run(lambda: store.probe_write(now))


@dataclass(frozen=True, slots=True)
class _Probe:
    failed: bool
    reason: str = ""


class _Slowness:
    """Whether the database's answers come slowly to this server: the median of its last
    read probes' times against the threshold (0: never slow). One late answer (a pause of
    the database, a busy moment here) is not a slow path."""

    SAMPLES = 5

    def __init__(self, threshold: float) -> None:
        self._threshold = threshold
        self._times: collections.deque[float] = collections.deque(maxlen=self.SAMPLES)

    def add(self, seconds: float) -> None:
        self._times.append(seconds)

    @property
    def median(self) -> float:
        return statistics.median(self._times) if self._times else 0.0

    @property
    def slow(self) -> bool:
        full = len(self._times) == self.SAMPLES
        return full and self._threshold > 0 and self.median > self._threshold

    @property
    def reason(self) -> str:
        return f"DATABASE_SLOW: reads take {self.median * 1000:.0f} ms"


async def _probe(check: Awaitable[Any], within: float) -> _Probe:
    """Whether check completed within its time, and why not."""
    try:
        async with asyncio.timeout(within):
            await check
    except TimeoutError:
        return _Probe(True, f"no answer within {within:g} s")
    except CampaignError as exc:
        return _Probe(True, exc.reason)
    except Exception as exc:
        return _Probe(True, type(exc).__name__)
    return _Probe(False)
