"""The run/stop lifecycle as pure rules: which transition a request asks for, and why not."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from campaign_grpc.domain import lifecycle
from campaign_grpc.domain.errors import FailedPrecondition
from campaign_grpc.domain.types import Action, Campaign, CampaignType, Reason, Status
from factories import new_id, runnable_draft

NOW = 1_800_000_000_000_000
GRACE_US = 60_000_000


def campaign(customer: str, **changes: Any) -> Campaign:
    """A stored campaign that meets every run condition."""
    return dataclasses.replace(runnable_draft(customer), id=new_id(), tm_create=NOW, **changes)


def plan(
    c: Campaign, requested: Status, *, force: bool = False, next_campaign: Campaign | None = None
) -> lifecycle.Transition | None:
    return lifecycle.plan_status_change(
        c, requested, force=force, next_campaign=next_campaign, now=NOW, stop_grace_us=GRACE_US
    )


def violation_types(exc: FailedPrecondition) -> list[str]:
    return [v.type for v in exc.violations]


# -- run conditions -----------------------------------------------------------------------


def test_a_complete_campaign_meets_every_run_condition(customer: str) -> None:
    assert lifecycle.run_violations(campaign(customer), None) == []


def test_a_queue_instead_of_actions_is_enough_to_run(customer: str) -> None:
    assert lifecycle.run_violations(campaign(customer, actions=[], queue_id=new_id()), None) == []


def test_every_unmet_run_condition_is_listed_at_once(customer: str) -> None:
    c = campaign(
        customer,
        outplan_id="",
        outdial_id="",
        actions=[],
        queue_id="",
        next_campaign_id=new_id(),
    )
    with pytest.raises(FailedPrecondition) as info:
        plan(c, Status.RUN, next_campaign=None)
    assert info.value.reason == "RUN_CONDITIONS_UNMET"
    assert violation_types(info.value) == [
        "OUTPLAN_MISSING",
        "OUTDIAL_MISSING",
        "NOTHING_TO_RUN",
        "NEXT_CAMPAIGN_INVALID",
    ]
    assert [v.subject for v in info.value.violations] == [
        "outplan_id",
        "outdial_id",
        "actions",
        "next_campaign_id",
    ]
    assert all(v.description for v in info.value.violations)


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"outplan_id": ""}, "OUTPLAN_MISSING"),
        ({"outdial_id": ""}, "OUTDIAL_MISSING"),
        ({"actions": []}, "NOTHING_TO_RUN"),
        ({"tm_delete": NOW}, "CAMPAIGN_DELETED"),
    ],
)
def test_each_run_condition_alone(customer: str, changes: dict[str, Any], expected: str) -> None:
    with pytest.raises(FailedPrecondition) as info:
        plan(campaign(customer, **changes), Status.RUN)
    assert violation_types(info.value) == [expected]


def test_next_campaign_must_exist(customer: str) -> None:
    c = campaign(customer, next_campaign_id=new_id())
    assert [v.type for v in lifecycle.run_violations(c, None)] == ["NEXT_CAMPAIGN_INVALID"]


def test_next_campaign_of_another_customer_reads_as_missing(customer: str) -> None:
    other = campaign(new_id())
    c = campaign(customer, next_campaign_id=other.id)
    violations = lifecycle.next_campaign_violations(c, other)
    assert [v.type for v in violations] == ["NEXT_CAMPAIGN_INVALID"]
    # Nothing tells the caller that the campaign exists for someone else.
    missing = lifecycle.next_campaign_violations(c, None)
    assert violations[0].description == missing[0].description


def test_next_campaign_must_not_be_deleted(customer: str) -> None:
    gone = campaign(customer, tm_delete=NOW)
    c = campaign(customer, next_campaign_id=gone.id)
    violations = lifecycle.next_campaign_violations(c, gone)
    assert [v.subject for v in violations] == ["next_campaign_id"]
    assert "deleted" in violations[0].description


def test_next_campaign_must_not_be_the_campaign_itself(customer: str) -> None:
    c = campaign(customer)
    c.next_campaign_id = c.id
    assert [v.type for v in lifecycle.next_campaign_violations(c, c)] == ["NEXT_CAMPAIGN_INVALID"]


def test_a_valid_next_campaign_is_no_violation(customer: str) -> None:
    after = campaign(customer)
    c = campaign(customer, next_campaign_id=after.id)
    assert lifecycle.next_campaign_violations(c, after) == []
    assert plan(c, Status.RUN, next_campaign=after) == lifecycle.Transition(
        Status.RUN, Reason.REQUESTED
    )


def test_outdial_held_by_another_campaign(customer: str) -> None:
    c = campaign(customer)
    holder = new_id()
    assert lifecycle.outdial_violations(c, None) == []
    (violation,) = lifecycle.outdial_violations(c, holder)
    assert violation.type == "OUTDIAL_IN_USE"
    assert violation.subject == "outdial_id"
    assert holder in violation.description


# -- transitions --------------------------------------------------------------------------


@pytest.mark.parametrize("start", [Status.STOP, Status.STOPPING])
def test_run_from_stop_or_stopping(customer: str, start: Status) -> None:
    assert plan(campaign(customer, status=start), Status.RUN) == lifecycle.Transition(
        Status.RUN, Reason.REQUESTED, None
    )


def test_run_when_running_is_a_no_op(customer: str) -> None:
    assert plan(campaign(customer, status=Status.RUN), Status.RUN) is None


def test_run_when_running_is_a_no_op_even_if_conditions_changed(customer: str) -> None:
    # Already running: nothing to check, nothing to write.
    assert plan(campaign(customer, status=Status.RUN, outplan_id=""), Status.RUN) is None


def test_run_conditions_are_checked_from_stopping(customer: str) -> None:
    with pytest.raises(FailedPrecondition):
        plan(campaign(customer, status=Status.STOPPING, outdial_id=""), Status.RUN)


def test_stop_on_a_running_campaign_drains_with_a_deadline(customer: str) -> None:
    t = plan(campaign(customer, status=Status.RUN), Status.STOP)
    assert t == lifecycle.Transition(Status.STOPPING, Reason.REQUESTED, NOW + GRACE_US)


def test_forced_stop_on_a_running_campaign_stops_at_once(customer: str) -> None:
    t = plan(campaign(customer, status=Status.RUN), Status.STOP, force=True)
    assert t == lifecycle.Transition(Status.STOP, Reason.REQUESTED, None)


def test_run_on_a_deleted_campaign_says_it_is_deleted(customer: str) -> None:
    with pytest.raises(FailedPrecondition) as info:
        plan(campaign(customer, tm_delete=NOW, outplan_id=""), Status.RUN)
    assert info.value.reason == "CAMPAIGN_DELETED"
    assert violation_types(info.value) == ["CAMPAIGN_DELETED"]


def test_stop_on_a_stopping_campaign_only_asks_again(customer: str) -> None:
    c = campaign(customer, status=Status.STOPPING, stop_deadline=NOW, stop_revision=7)
    assert plan(c, Status.STOP) is None


def test_forced_stop_on_a_stopping_campaign_completes_it_and_starts_nothing(
    customer: str,
) -> None:
    for finishing in (False, True):
        c = campaign(customer, status=Status.STOPPING, stop_deadline=NOW, finishing=finishing)
        t = plan(c, Status.STOP, force=True)
        assert t == lifecycle.Transition(Status.STOP, Reason.REQUESTED)
        assert not t.start_next


def test_a_persons_stop_on_a_finishing_campaign_calls_the_chain_off(customer: str) -> None:
    c = campaign(customer, status=Status.STOPPING, stop_deadline=NOW, finishing=True)
    t = plan(c, Status.STOP)
    assert t is not None
    assert (t.to, t.reason, t.stop_deadline, t.finishing) == (
        Status.STOPPING,
        Reason.REQUESTED,
        NOW,
        False,
    )
    assert t.detail == lifecycle.CHAIN_CALLED_OFF


# -- the dialer's confirmation ------------------------------------------------------------


def test_confirming_the_current_stop_completes_it(customer: str) -> None:
    c = campaign(customer, status=Status.STOPPING, stop_deadline=NOW, stop_revision=7)
    assert lifecycle.plan_drained(c, 7) == lifecycle.Transition(Status.STOP, Reason.DRAINED)


def test_confirming_a_finished_campaigns_stop_starts_the_next(customer: str) -> None:
    c = campaign(customer, status=Status.STOPPING, stop_revision=7, finishing=True)
    t = lifecycle.plan_drained(c, 7)
    assert t is not None
    assert t.start_next


def test_a_confirmation_of_another_stop_completes_nothing(customer: str) -> None:
    c = campaign(customer, status=Status.STOPPING, stop_deadline=NOW, stop_revision=9)
    with pytest.raises(FailedPrecondition) as info:
        lifecycle.plan_drained(c, 7)
    assert info.value.reason == "STOP_REVISION_MISMATCH"
    assert info.value.metadata == {"stop_revision": "9"}
    assert violation_types(info.value) == ["STOP_REVISION_MISMATCH"]


def test_a_repeated_confirmation_of_a_completed_stop_changes_nothing(customer: str) -> None:
    c = campaign(customer, status=Status.STOP, stop_revision=7)
    assert lifecycle.plan_drained(c, 7) is None
    with pytest.raises(FailedPrecondition) as info:
        lifecycle.plan_drained(c, 5)
    assert info.value.reason == "STOP_REVISION_MISMATCH"


@pytest.mark.parametrize("status", [Status.RUN, Status.STOP])
def test_confirming_what_is_not_stopping_is_refused(customer: str, status: Status) -> None:
    with pytest.raises(FailedPrecondition) as info:
        lifecycle.plan_drained(campaign(customer, status=status, stop_revision=0), 7)
    assert info.value.reason == "CAMPAIGN_NOT_STOPPING"
    assert [v.subject for v in info.value.violations] == ["status"]


@pytest.mark.parametrize("force", [False, True])
def test_stop_on_a_stopped_campaign_is_a_no_op(customer: str, force: bool) -> None:
    assert plan(campaign(customer, status=Status.STOP), Status.STOP, force=force) is None


def test_stop_of_an_incomplete_campaign_is_allowed(customer: str) -> None:
    # Stopping never depends on the run conditions.
    c = campaign(customer, status=Status.RUN, outplan_id="", outdial_id="", actions=[])
    assert plan(c, Status.STOP, force=True) == lifecycle.Transition(Status.STOP, Reason.REQUESTED)


def test_planning_does_not_change_the_campaign(customer: str) -> None:
    c = campaign(customer, status=Status.RUN, actions=[Action(new_id(), "", "talk", {})])
    before = dataclasses.replace(c)
    plan(c, Status.STOP)
    assert c == before


def test_require_runnable_accepts_a_complete_campaign(customer: str) -> None:
    lifecycle.require_runnable(campaign(customer, type=CampaignType.FLOW), None)
