"""The balancer's rules (domain.leases.plan), without a database: who gets a campaign, when
a lease ends, and when a holder is asked to let one go."""

from __future__ import annotations

from campaign_grpc.domain.leases import LeaseRow, SessionRow, plan
from campaign_grpc.domain.types import Reason, Status

NOW = 1_000_000_000
CUSTOMER, OTHER = "c1", "c2"


def session(holder: str, capacity: int = 10, customer: str = "", live: bool = True) -> SessionRow:
    return SessionRow(holder, customer, capacity, NOW + (5 if live else -1), 1)


def lease(
    campaign: str,
    holder: str,
    *,
    token: int = 1,
    status: Status | None = Status.RUN,
    release_by: int | None = None,
    customer: str = CUSTOMER,
) -> LeaseRow:
    return LeaseRow(campaign, customer, holder, token, release_by, 1, status)


def unheld(*campaigns: str, customer: str = CUSTOMER) -> list[tuple[str, str]]:
    return [(customer, c) for c in campaigns]


def test_campaigns_go_to_the_session_with_the_smallest_share_of_its_capacity() -> None:
    p = plan([session("a", 2), session("b", 4)], [], unheld("x", "y", "z"), NOW)
    assert sorted((g.campaign_id, g.holder) for g in p.grants) == [
        ("x", "a"),
        ("y", "b"),
        ("z", "b"),
    ]


def test_no_session_gets_more_than_its_capacity() -> None:
    p = plan([session("a", 1)], [], unheld("x", "y"), NOW)
    assert [(g.campaign_id, g.holder) for g in p.grants] == [("x", "a")]


def test_a_session_holds_only_campaigns_of_its_customer() -> None:
    p = plan([session("mine", customer=OTHER)], [], unheld("x"), NOW)
    assert p.grants == []
    p = plan([session("mine", customer=OTHER)], [], unheld("x", customer=OTHER), NOW)
    assert [g.holder for g in p.grants] == ["mine"]


def test_an_expired_session_loses_its_leases_to_a_live_one_in_the_same_pass() -> None:
    p = plan([session("dead", live=False), session("alive")], [lease("x", "dead")], [], NOW)
    assert [s.holder for s in p.expired_sessions] == ["dead"]
    assert [(e.lease.campaign_id, e.reason) for e in p.endings] == [("x", Reason.LEASE_EXPIRED)]
    assert [(g.campaign_id, g.holder) for g in p.grants] == [("x", "alive")]


def test_a_lease_of_a_stopped_campaign_is_released_and_not_granted_again() -> None:
    p = plan([session("a")], [lease("x", "a", status=Status.STOP)], [], NOW)
    assert [(e.lease.campaign_id, e.reason) for e in p.endings] == [("x", Reason.LEASE_RELEASED)]
    assert p.grants == []


def test_a_stopping_campaign_keeps_its_holder_who_confirms_the_drain() -> None:
    assert not plan([session("a")], [lease("x", "a", status=Status.STOPPING)], [], NOW)


def test_a_holder_that_does_not_let_go_in_time_is_revoked() -> None:
    held = [lease("x", "a", release_by=NOW - 1), lease("y", "a")]
    p = plan([session("a"), session("b")], held, [], NOW)
    assert [(e.lease.campaign_id, e.reason) for e in p.endings] == [("x", Reason.LEASE_REVOKED)]
    assert [(g.campaign_id, g.holder) for g in p.grants] == [("x", "b")]


def test_a_joining_session_gets_campaigns_by_release_requests_not_by_grants() -> None:
    held = [lease(c, "a") for c in "wxyz"]
    p = plan([session("a"), session("b")], held, [], NOW)
    assert p.grants == []
    assert len(p.release_requests) == 2
    assert all(r.holder == "a" for r in p.release_requests)


def test_leases_asked_to_move_are_not_asked_for_again_in_the_next_pass() -> None:
    asked = [lease(c, "a", release_by=NOW + 60) for c in "wx"]
    settled = [lease(c, "a") for c in "yz"]
    assert not plan([session("a"), session("b")], [*asked, *settled], [], NOW)


def test_a_balanced_fleet_moves_nothing() -> None:
    held = [lease("w", "a"), lease("x", "a"), lease("y", "b")]
    assert not plan([session("a"), session("b")], held, [], NOW)


def test_no_session_no_grant() -> None:
    assert not plan([], [], unheld("x"), NOW)
