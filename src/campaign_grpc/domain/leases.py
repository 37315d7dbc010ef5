"""Who dials which campaign: the rules of dialer sessions and campaign leases.

A campaign that needs a dialer (running or stopping) is held by at most one live session at
a time. A session lives while its dialer keeps it alive (etcd's lease: a time to live,
renewed by keep-alives, measured with the database's clock); its leases end with it. Each
grant raises the campaign's fencing token, which the holder's writes carry and the server
checks, so that a dialer that lost its lease (paused, cut off) and comes back changes
nothing (Kleppmann's fencing tokens).

plan() decides, from one read of the sessions and leases, what a pass of the balancer
changes: it is pure, and the transaction that applies it re-reads what it decides on.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from .types import Reason, Status

_STATUSES = {int(s): s for s in Status}


@dataclass(frozen=True, slots=True)
class SessionRow:
    holder: str
    # "" for every customer.
    customer_id: str
    capacity: int
    expire_at: int
    incarnation: int
    version: int = 0

    def values(self) -> tuple[Any, ...]:
        return dataclasses.astuple(self)

    def with_version(self, version: int) -> SessionRow:
        return dataclasses.replace(self, version=version)

    def live(self, now: int) -> bool:
        return self.expire_at > now

    def may_hold(self, customer_id: str) -> bool:
        return not self.customer_id or self.customer_id == customer_id


@dataclass(frozen=True, slots=True)
class LeaseRow:
    campaign_id: str
    customer_id: str
    # "" when nobody holds it.
    holder: str
    token: int
    # Set while the holder is asked to let go: by when it must.
    release_by: int | None
    version: int = 0
    # The campaign's status as read with the lease; None when the campaign is gone.
    status: Status | None = None

    @classmethod
    def from_row(cls, row: tuple[Any, ...]) -> LeaseRow:
        status = None if row[6] is None else _STATUSES[row[6]]
        return cls(row[0], row[1], row[2], row[3], row[4], row[5], status)

    def with_version(self, version: int) -> LeaseRow:
        return dataclasses.replace(self, version=version)


@dataclass(frozen=True, slots=True)
class Ending:
    """A held lease that ends: why, and whether its campaign still needs a dialer."""

    lease: LeaseRow
    reason: Reason


@dataclass(frozen=True, slots=True)
class Grant:
    customer_id: str
    campaign_id: str
    holder: str


@dataclass(slots=True)
class Plan:
    expired_sessions: list[SessionRow] = field(default_factory=list)
    endings: list[Ending] = field(default_factory=list)
    grants: list[Grant] = field(default_factory=list)
    release_requests: list[LeaseRow] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.expired_sessions or self.endings or self.grants or self.release_requests)


def _needs_dialer(status: Status | None) -> bool:
    return status in (Status.RUN, Status.STOPPING)


def ending_of(lease: LeaseRow, sessions: dict[str, SessionRow], now: int) -> Reason | None:
    """Why a held lease ends now, or None if it stands."""
    session = sessions.get(lease.holder)
    if session is None or not session.live(now):
        return Reason.LEASE_EXPIRED
    if not _needs_dialer(lease.status):
        return Reason.LEASE_RELEASED
    if lease.release_by is not None and lease.release_by <= now:
        return Reason.LEASE_REVOKED
    return None


def plan(
    sessions: Sequence[SessionRow],
    held: Sequence[LeaseRow],
    unheld: Sequence[tuple[str, str]],
    now: int,
) -> Plan:
    """What one pass changes: sessions past their time to live go with their leases;
    leases of campaigns that need no dialer any more, and those not let go in time, end;
    campaigns without a holder go to the live session with the smallest share of its
    capacity that may hold them; and where one session holds two more than another could
    take, it is asked to let one go (it drains first, then the next pass grants it)."""
    out = Plan()
    by_holder = {s.holder: s for s in sessions}
    live = {s.holder: s for s in sessions if s.live(now)}
    out.expired_sessions = [s for s in sessions if not s.live(now)]
    # held: what counts against a session's capacity; share: what balancing weighs, where
    # a lease asked to move counts already as gone (else the next pass would ask again).
    held_count = dict.fromkeys(live, 0)
    share_count = dict.fromkeys(live, 0)
    settled: dict[str, list[LeaseRow]] = {h: [] for h in live}
    free: list[tuple[str, str]] = []
    moving: list[LeaseRow] = []
    for lease in held:
        why = ending_of(lease, by_holder, now)
        if why is not None:
            out.endings.append(Ending(lease, why))
            if _needs_dialer(lease.status):
                free.append((lease.customer_id, lease.campaign_id))
            continue
        held_count[lease.holder] += 1
        if lease.release_by is None:
            share_count[lease.holder] += 1
            settled[lease.holder].append(lease)
        else:
            moving.append(lease)

    def share(s: SessionRow, extra: int = 0) -> float:
        return (share_count[s.holder] + extra) / s.capacity

    def may_take(s: SessionRow, customer_id: str) -> bool:
        return s.may_hold(customer_id) and held_count[s.holder] < s.capacity

    # A lease being moved counts for the session it will most likely go to, as it did when
    # the move was asked for.
    for lease in moving:
        takers = [s for s in live.values() if s.holder != lease.holder]
        takers = [s for s in takers if s.may_hold(lease.customer_id)]
        if takers:
            share_count[min(takers, key=lambda s: (share(s), s.holder)).holder] += 1

    for customer_id, campaign_id in [*free, *unheld]:
        candidates = [s for s in live.values() if may_take(s, customer_id)]
        if not candidates:
            continue
        target = min(candidates, key=lambda s: (share(s), s.holder))
        out.grants.append(Grant(customer_id, campaign_id, target.holder))
        held_count[target.holder] += 1
        share_count[target.holder] += 1

    # Moves, one lease at a time: from the session with the largest share, when another
    # would hold it at a smaller share than it is held at now.
    while True:
        move = None
        for source in sorted(live.values(), key=lambda s: (-share(s), s.holder)):
            for lease in settled[source.holder]:
                takers = [
                    s
                    for s in live.values()
                    if s.holder != source.holder and may_take(s, lease.customer_id)
                ]
                if takers:
                    to = min(takers, key=lambda s: (share(s), s.holder))
                    if share(to, 1) < share(source):
                        move = (lease, to)
                        break
            if move is not None:
                break
        if move is None:
            break
        lease, to = move
        out.release_requests.append(lease)
        settled[lease.holder].remove(lease)
        share_count[lease.holder] -= 1
        # Counted on the taker already, so that one pass does not send it more than its
        # share; the grant itself waits for the release.
        share_count[to.holder] += 1
    return out
