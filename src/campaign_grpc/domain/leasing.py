"""Dialer sessions and campaign leases: each operation one transaction (see leases.py for
the rules). Knows nothing of gRPC."""

from __future__ import annotations

from dataclasses import dataclass

from . import leases, validation
from .campaigns import Clock
from .errors import FailedPrecondition, PreconditionViolation
from .leases import Grant, LeaseRow, SessionRow
from .ports import LeaseStore, Transactions
from .types import ANONYMOUS, SERVICE, Origin, Reason

# How many campaigns without a holder one pass grants at most: the rest wait for the next.
GRANTS_PER_PASS = 500


def session_ended(holder: str, reason: str, why: str) -> FailedPrecondition:
    return FailedPrecondition(
        why,
        [PreconditionViolation(reason, holder, why)],
        reason=reason,
        metadata={"holder": holder},
    )


def lease_not_held(campaign_id: str, live_token: int) -> FailedPrecondition:
    why = (
        "the fencing token is not the campaign's live lease: this dialer lost it (expired, "
        "moved or released); stop dialing the campaign"
    )
    return FailedPrecondition(
        why,
        [PreconditionViolation("LEASE_NOT_HELD", campaign_id, why)],
        reason="LEASE_NOT_HELD",
        metadata={"id": campaign_id, "fencing_token": str(live_token)},
    )


@dataclass(frozen=True, slots=True)
class Joined:
    session: SessionRow
    held: list[LeaseRow]
    # When it joined, by the clock the session's expiry is counted with.
    at: int


class Leasing:
    def __init__(
        self,
        store: LeaseStore,
        writer: Transactions,
        readers: Transactions,
        *,
        clock: Clock,
        ttl_s: float = 10.0,
        release_grace_s: float = 60.0,
    ) -> None:
        self._store = store
        self._leases = store.leases
        self._writer = writer
        self._readers = readers
        self._clock = clock
        self.ttl_s = ttl_s
        self._ttl_us = int(ttl_s * 1_000_000)
        self._release_grace_us = int(release_grace_s * 1_000_000)

    # -- a dialer's session --------------------------------------------------------------

    async def join(
        self, holder: str, customer_id: str, capacity: int, *, origin: Origin = ANONYMOUS
    ) -> Joined:
        """Starts the holder's session, or takes over its live one with the leases it holds
        (a reconnect, a server restart). A session that expired meanwhile lost its leases:
        they end here, if no pass ended them yet."""
        validation.validate_join(holder, customer_id, capacity)
        return await self._writer.run(lambda: self._join(holder, customer_id, capacity, origin))

    def _join(self, holder: str, customer_id: str, capacity: int, origin: Origin) -> Joined:
        now = self._clock()
        read = self._leases.session(holder)
        held = [lease for lease in self._leases.held() if lease.holder == holder]
        if read is not None and not read.live(now):
            for lease in held:
                self._end(lease, Reason.LEASE_EXPIRED, now, SERVICE)
            held = []
        elif read is not None and read.customer_id != customer_id:
            # Another scope: what the session holds of other customers goes back.
            keep = []
            for lease in held:
                if customer_id and lease.customer_id != customer_id:
                    self._end(lease, Reason.LEASE_RELEASED, now, origin)
                else:
                    keep.append(lease)
            held = keep
        incarnation = 1 if read is None else read.incarnation + 1
        session = self._leases.put_session(
            SessionRow(holder, customer_id, capacity, now + self._ttl_us, incarnation), read
        )
        return Joined(session, held, now)

    async def keep_alive(self, holder: str, incarnation: int) -> SessionRow:
        return await self._writer.run(lambda: self._keep_alive(holder, incarnation))

    def _live_session(self, holder: str, incarnation: int, now: int) -> SessionRow:
        s = self._leases.session(holder)
        if s is None or not s.live(now):
            raise session_ended(
                holder,
                "LEASE_SESSION_EXPIRED",
                "the session sent no keep-alive for its time to live, and its leases may be "
                "held by other dialers now: stop dialing them, and join again",
            )
        if s.incarnation != incarnation:
            raise session_ended(
                holder,
                "LEASE_SESSION_TAKEN_OVER",
                "another stream joined with this holder identity and holds its leases now",
            )
        return s

    def _keep_alive(self, holder: str, incarnation: int) -> SessionRow:
        now = self._clock()
        s = self._live_session(holder, incarnation, now)
        return self._leases.put_session(
            SessionRow(s.holder, s.customer_id, s.capacity, now + self._ttl_us, incarnation), s
        )

    async def release(
        self,
        holder: str,
        incarnation: int,
        campaign_id: str,
        token: int,
        *,
        origin: Origin = ANONYMOUS,
    ) -> None:
        """The holder lets go of a lease; letting go of one it no longer holds changes
        nothing (a repeated release, a lease that expired meanwhile)."""
        await self._writer.run(
            lambda: self._release(holder, incarnation, campaign_id, token, origin)
        )

    def _release(
        self, holder: str, incarnation: int, campaign_id: str, token: int, origin: Origin
    ) -> None:
        now = self._clock()
        self._live_session(holder, incarnation, now)
        lease = self._leases.lease(campaign_id)
        if lease is not None and lease.holder == holder and lease.token == token:
            self._end(lease, Reason.LEASE_RELEASED, now, origin)

    async def leave(self, holder: str, incarnation: int, *, origin: Origin = ANONYMOUS) -> None:
        """The dialer is done (it drained what it held): the session ends now, and what it
        still holds goes to other dialers at once."""
        await self._writer.run(lambda: self._leave(holder, incarnation, origin))

    def _leave(self, holder: str, incarnation: int, origin: Origin) -> None:
        now = self._clock()
        s = self._leases.session(holder)
        if s is None or s.incarnation != incarnation:
            return
        for lease in self._leases.held():
            if lease.holder == holder:
                self._end(lease, Reason.LEASE_RELEASED, now, origin)
        self._leases.delete_session(s)

    # -- the balancer --------------------------------------------------------------------

    async def held(self) -> tuple[list[SessionRow], list[LeaseRow], int]:
        """The sessions and held leases as they stand, and the time they were read at."""

        def read() -> tuple[list[SessionRow], list[LeaseRow], int]:
            return self._leases.sessions(), self._leases.held(), self._clock()

        return await self._readers.run(read)

    async def balance(self) -> tuple[list[SessionRow], list[LeaseRow], int]:
        """One pass of the balancer (see leases.plan): written only when it changes
        something, which a read decides first. Returns the sessions and held leases after
        it, and the time they were read at."""
        sessions, held, now = await self.held()
        if not sessions:
            return sessions, held, now
        unheld = await self._readers.run(lambda: self._leases.unheld(GRANTS_PER_PASS))
        if not leases.plan(sessions, held, unheld, now):
            return sessions, held, now
        await self._writer.run(self._balance)
        return await self.held()

    def _balance(self) -> bool:
        now = self._clock()
        store = self._leases
        sessions = store.sessions()
        plan = leases.plan(sessions, store.held(), store.unheld(GRANTS_PER_PASS), now)
        for ending in plan.endings:
            self._end(ending.lease, ending.reason, now, SERVICE)
        for s in plan.expired_sessions:
            store.delete_session(s)
        for grant in plan.grants:
            self._grant(grant, now)
        for lease in plan.release_requests:
            self._ask_release(lease, now)
        return bool(plan)

    def _grant(self, grant: Grant, now: int) -> None:
        read = self._leases.lease(grant.campaign_id)
        c = self._store.load(grant.customer_id, grant.campaign_id)
        if c is None:
            return
        token = (read.token if read is not None else 0) + 1
        self._leases.put_lease(
            LeaseRow(grant.campaign_id, grant.customer_id, grant.holder, token, None), read
        )
        self._store.append_lease_event(c, Reason.LEASE_GRANTED, now, grant.holder, token, SERVICE)

    def _ask_release(self, lease: LeaseRow, now: int) -> None:
        c = self._store.load(lease.customer_id, lease.campaign_id)
        if c is None:
            return
        self._leases.put_lease(
            LeaseRow(
                lease.campaign_id,
                lease.customer_id,
                lease.holder,
                lease.token,
                now + self._release_grace_us,
            ),
            lease,
        )
        self._store.append_lease_event(
            c, Reason.LEASE_RELEASE_REQUESTED, now, lease.holder, lease.token, SERVICE
        )

    def _end(self, lease: LeaseRow, reason: Reason, now: int, origin: Origin) -> None:
        self._leases.put_lease(
            LeaseRow(lease.campaign_id, lease.customer_id, "", lease.token, None), lease
        )
        c = self._store.load(lease.customer_id, lease.campaign_id)
        if c is not None:
            self._store.append_lease_event(c, reason, now, lease.holder, lease.token, origin)

    # -- fencing -------------------------------------------------------------------------

    def check_fence(self, campaign_id: str, token: int, now: int, *, changes: bool) -> None:
        """Raises unless token is the campaign's live lease (writer thread, in the write's
        transaction): a session past its time to live holds nothing, even before a pass of
        the balancer ends it. A call that changes nothing may come from the last holder
        repeating one whose change ended its lease (a confirmation whose reply was lost):
        its token is still the last one granted."""
        lease, expire_at = self._leases.lease_and_expiry(campaign_id)
        live_token = 0
        if lease is not None and lease.holder and expire_at is not None and expire_at > now:
            overdue = lease.release_by is not None and lease.release_by <= now
            if not overdue:
                live_token = lease.token
        if live_token and token == live_token:
            return
        if not changes and lease is not None and not lease.holder and lease.token == token:
            return
        raise lease_not_held(campaign_id, live_token)
