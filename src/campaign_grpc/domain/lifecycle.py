"""The run/stop lifecycle and the conditions a campaign must meet: pure rules, no I/O."""

from __future__ import annotations

from dataclasses import dataclass

from .errors import FailedPrecondition, PreconditionViolation
from .types import Campaign, EndHandle, Reason, Status


@dataclass(slots=True, frozen=True)
class Transition:
    to: Status
    reason: Reason
    stop_deadline: int | None = None
    # Stopping because the outdial list ran out: completing the stop starts the next one.
    finishing: bool = False
    # This transition completes a finished campaign: try to start its next campaign.
    start_next: bool = False


def next_campaign_violations(
    campaign: Campaign, next_campaign: Campaign | None
) -> list[PreconditionViolation]:
    """Why campaign.next_campaign_id is not a usable reference; next_campaign is its lookup."""
    ref = campaign.next_campaign_id
    if not ref:
        return []
    if ref == campaign.id:
        why = "must not name the campaign itself"
    elif next_campaign is None or next_campaign.customer_id != campaign.customer_id:
        why = f"campaign {ref} does not exist"
    elif next_campaign.deleted:
        why = f"campaign {ref} is deleted"
    else:
        return []
    return [PreconditionViolation("NEXT_CAMPAIGN_INVALID", "next_campaign_id", why)]


def outdial_violations(campaign: Campaign, holder_id: str | None) -> list[PreconditionViolation]:
    """holder_id is the live campaign other than this one that uses the outdial, if any."""
    if holder_id is None:
        return []
    return [
        PreconditionViolation(
            "OUTDIAL_IN_USE",
            "outdial_id",
            f"outdial {campaign.outdial_id} belongs to live campaign {holder_id}",
        )
    ]


def run_violations(
    campaign: Campaign, next_campaign: Campaign | None
) -> list[PreconditionViolation]:
    out: list[PreconditionViolation] = []
    if campaign.deleted:
        out.append(PreconditionViolation("CAMPAIGN_DELETED", "campaign", "the campaign is deleted"))
    if not campaign.outplan_id:
        out.append(PreconditionViolation("OUTPLAN_MISSING", "outplan_id", "an outplan is required"))
    if not campaign.outdial_id:
        out.append(PreconditionViolation("OUTDIAL_MISSING", "outdial_id", "an outdial is required"))
    if not campaign.actions and not campaign.queue_id:
        out.append(
            PreconditionViolation(
                "NOTHING_TO_RUN", "actions", "at least one action or a queue_id is required"
            )
        )
    out += next_campaign_violations(campaign, next_campaign)
    return out


def require_runnable(campaign: Campaign, next_campaign: Campaign | None) -> None:
    violations = run_violations(campaign, next_campaign)
    if violations:
        raise FailedPrecondition(
            "the campaign does not meet the run conditions",
            violations,
            reason="RUN_CONDITIONS_UNMET",
        )


def require_update_keeps_runnable(
    before: Campaign,
    after: Campaign,
    next_before: Campaign | None,
    next_after: Campaign | None,
) -> None:
    """A running campaign may change, but no change may add a reason it could not run.

    A condition that already failed (its next campaign was deleted meanwhile, say) does not
    block unrelated edits, such as the one that repairs it.
    """
    known = {v.type for v in run_violations(before, next_before)}
    added = [v for v in run_violations(after, next_after) if v.type not in known]
    if added:
        raise FailedPrecondition(
            "a running campaign cannot be changed into one that could not run",
            added,
            reason="RUN_CONDITIONS_UNMET",
        )


def plan_status_change(
    campaign: Campaign,
    requested: Status,
    *,
    force: bool,
    next_campaign: Campaign | None,
    now: int,
    stop_grace_us: int,
) -> Transition | None:
    """The transition a request asks for, or None when the campaign is already there."""
    if requested == Status.RUN:
        if campaign.status == Status.RUN:
            return None
        require_runnable(campaign, next_campaign)
        return Transition(Status.RUN, Reason.REQUESTED)
    if campaign.status == Status.STOP:
        return None
    if campaign.status == Status.RUN and not force:
        return Transition(Status.STOPPING, Reason.REQUESTED, now + stop_grace_us)
    # The dialer's confirming STOP completes a finished campaign and starts the next one;
    # force is a person's decision to stop, and never starts anything.
    return Transition(Status.STOP, Reason.REQUESTED, start_next=campaign.finishing and not force)


def plan_grace_expired(campaign: Campaign) -> Transition:
    return Transition(Status.STOP, Reason.GRACE_EXPIRED, start_next=campaign.finishing)


def plan_outdial_exhausted(
    campaign: Campaign, *, now: int, stop_grace_us: int
) -> Transition | None:
    """What the dialer's report that the outdial list is empty does; None when nothing."""
    if campaign.status == Status.STOPPING and campaign.finishing:
        return None
    if campaign.status != Status.RUN:
        raise FailedPrecondition(
            "only a running campaign can run out of targets",
            [
                PreconditionViolation(
                    "CAMPAIGN_NOT_RUNNING", "status", f"the campaign is {campaign.status.name}"
                )
            ],
            reason="CAMPAIGN_NOT_RUNNING",
        )
    if campaign.end_handle == EndHandle.CONTINUE:
        return Transition(Status.RUN, Reason.OUTDIAL_EXHAUSTED)
    return Transition(Status.STOPPING, Reason.FINISHED, now + stop_grace_us, finishing=True)
