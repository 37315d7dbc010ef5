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
        tm_delete=NOW,
    )
    with pytest.raises(FailedPrecondition) as info:
        plan(c, Status.RUN, next_campaign=None)
    assert info.value.reason == "RUN_CONDITIONS_UNMET"
    assert violation_types(info.value) == [
        "CAMPAIGN_DELETED",
        "OUTPLAN_MISSING",
        "OUTDIAL_MISSING",
        "NOTHING_TO_RUN",
        "NEXT_CAMPAIGN_INVALID",
    ]
    assert [v.subject for v in info.value.violations] == [
        "campaign",
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


@pytest.mark.parametrize("force", [False, True])
def test_stop_on_a_stopping_campaign_confirms_it(customer: str, force: bool) -> None:
    t = plan(
        campaign(customer, status=Status.STOPPING, stop_deadline=NOW), Status.STOP, force=force
    )
    assert t is not None
    assert t.to == Status.STOP
    assert t.stop_deadline is None


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
