"""The balancer's passes on this replica, and what each dialer connected here is told.

Every replica runs passes (leasing.Leasing.balance) on a short tick, and at once when the
log shows a campaign that may need a dialer, so that the sessions of dialers connected to
any replica are balanced from one table; the compare-and-set of the writes lets one pass
win when two replicas decide at once. After each pass the keeper tells each stream
connected here how its holder's leases changed: what the table says, not what a pass did,
so that a grant made by another replica reaches its dialer the same way.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
from collections import defaultdict
from dataclasses import dataclass

from ..domain.errors import CampaignError, Unavailable
from ..domain.leases import LeaseRow, SessionRow
from ..domain.leasing import Joined, Leasing, session_ended
from ..domain.types import LEASE_REASONS, Event, Reason, Status

log = logging.getLogger(__name__)


class NoticeKind(enum.IntEnum):
    """The numbers match HoldLeasesResponse.Kind."""

    JOINED = 1
    GRANTED = 2
    RELEASE_REQUESTED = 3
    LOST = 4
    KEPT_ALIVE = 5


@dataclass(frozen=True, slots=True)
class Notice:
    kind: NoticeKind
    lease: LeaseRow | None = None
    reason: Reason = Reason.UNSPECIFIED
    expire_at: int = 0


def _shutting_down() -> CampaignError:
    return Unavailable(
        "the server is shutting down: join again, with the same holder, within the lease's "
        "time to live to keep the leases",
        reason="SHUTTING_DOWN",
    )


class HeldStream:
    """One HoldLeases call: what its dialer has been told it holds, and what to tell it."""

    def __init__(self, session: SessionRow, opened_at: float) -> None:
        self.holder = session.holder
        self.incarnation = session.incarnation
        self.opened_at = opened_at
        self._told: dict[str, LeaseRow] = {}
        self._outbox: asyncio.Queue[Notice] = asyncio.Queue()
        self._ending: CampaignError | None = None

    def push(self, notice: Notice) -> None:
        if self._ending is None:
            self._outbox.put_nowait(notice)

    def end(self, error: CampaignError) -> None:
        if self._ending is None:
            self._ending = error
            # Wakes a next() that waits; what was queued before still goes out first.
            self._outbox.put_nowait(Notice(NoticeKind.LOST))

    async def next(self) -> Notice:
        notice = await self._outbox.get()
        if notice.lease is None and notice.kind is NoticeKind.LOST:
            assert self._ending is not None
            raise self._ending
        return notice

    def tell(self, mine: list[LeaseRow], session: SessionRow | None, now: int) -> None:
        """Brings the dialer's view up to the table's: grants, requests to let go, losses."""
        live = session is not None and session.live(now)
        current = {lease.campaign_id: lease for lease in mine} if live else {}
        for campaign_id, told in list(self._told.items()):
            now_held = current.get(campaign_id)
            if now_held is not None and now_held.token == told.token:
                continue
            if not live:
                reason = Reason.LEASE_EXPIRED
            elif told.release_by is not None and told.release_by <= now:
                reason = Reason.LEASE_REVOKED
            else:
                reason = Reason.LEASE_RELEASED
            self.push(Notice(NoticeKind.LOST, told, reason))
            del self._told[campaign_id]
        for campaign_id, lease in current.items():
            before = self._told.get(campaign_id)
            if before is None:
                self.push(Notice(NoticeKind.GRANTED, lease))
            if lease.release_by is not None and (before is None or before.release_by is None):
                self.push(Notice(NoticeKind.RELEASE_REQUESTED, lease))
            self._told[campaign_id] = lease
        if session is None or not live:
            self.end(
                session_ended(
                    self.holder,
                    "LEASE_SESSION_EXPIRED",
                    "the session sent no keep-alive for its time to live, and its leases may "
                    "be held by other dialers now: stop dialing them, and join again",
                )
            )
        elif session.incarnation != self.incarnation:
            self.end(
                session_ended(
                    self.holder,
                    "LEASE_SESSION_TAKEN_OVER",
                    "another stream joined with this holder identity and holds its leases now",
                )
            )


class LeaseKeeper:
    def __init__(self, leasing: Leasing, *, tick_s: float | None = None) -> None:
        self._leasing = leasing
        # Well within the lease's time to live: a holder that died is replaced within a
        # tick of its expiry.
        self.tick_s = tick_s if tick_s is not None else min(0.5, leasing.ttl_s / 10)
        self._streams: dict[str, HeldStream] = {}
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closed = False

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="lease-keeper")

    async def close(self) -> None:
        self._closed = True
        for stream in list(self._streams.values()):
            stream.end(_shutting_down())
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def wake(self) -> None:
        self._wake.set()

    def on_event(self, event: Event) -> None:
        """The hub's news: a campaign that may need a dialer, or a lease that moved."""
        moved = event.reason in LEASE_REASONS or event.status != event.previous_status
        if moved and event.status in (Status.RUN, Status.STOPPING, Status.STOP):
            self._wake.set()

    def open(self, joined: Joined) -> HeldStream:
        loop = asyncio.get_running_loop()
        stream = HeldStream(joined.session, loop.time())
        if self._closed:
            stream.end(_shutting_down())
            return stream
        earlier = self._streams.get(stream.holder)
        if earlier is not None:
            earlier.end(
                session_ended(
                    stream.holder,
                    "LEASE_SESSION_TAKEN_OVER",
                    "another stream joined with this holder identity and holds its leases now",
                )
            )
        self._streams[stream.holder] = stream
        stream.tell(joined.held, joined.session, joined.at)
        self._wake.set()
        return stream

    def close_stream(self, stream: HeldStream) -> None:
        if self._streams.get(stream.holder) is stream:
            del self._streams[stream.holder]
        self._wake.set()

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.tick_s):
                    await self._wake.wait()
            self._wake.clear()
            started = loop.time()
            try:
                sessions, held, now = await self._leasing.balance()
            except CampaignError as exc:
                # The database is away: the next tick tries again; the dialers' sessions
                # expire by the database's clock only, which is not counting meanwhile.
                log.warning("lease pass failed: %s", exc.message)
                continue
            except Exception:
                log.exception("lease pass failed")
                continue
            self._tell(sessions, held, now, started)

    def _tell(
        self, sessions: list[SessionRow], held: list[LeaseRow], now: int, read_at: float
    ) -> None:
        by_holder = {s.holder: s for s in sessions}
        mine: dict[str, list[LeaseRow]] = defaultdict(list)
        for lease in held:
            mine[lease.holder].append(lease)
        for stream in list(self._streams.values()):
            if stream.opened_at >= read_at:
                continue  # joined after this read: it would not find itself
            stream.tell(mine.get(stream.holder, []), by_holder.get(stream.holder), now)
