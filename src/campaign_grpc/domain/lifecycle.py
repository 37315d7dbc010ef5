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
    detail: str = ""


CHAIN_CALLED_OFF = "a stop was requested: the next campaign will not be started"


def _not_stopping(campaign: Campaign) -> FailedPrecondition:
    return FailedPrecondition(
        f"the campaign is {campaign.status.name}, not stopping: there is no drain to confirm",
        [
            PreconditionViolation(
                "CAMPAIGN_NOT_STOPPING", "status", f"the campaign is {campaign.status.name}"
            )
        ],
        reason="CAMPAIGN_NOT_STOPPING",
    )


def _other_stop(campaign: Campaign, stop_revision: int) -> FailedPrecondition:
    where = "is stopping" if campaign.status == Status.STOPPING else "stopped"
    return FailedPrecondition(
        f"the campaign {where} by the stop of revision {campaign.stop_revision}; the "
        f"confirmation names revision {stop_revision}, a stop that is over",
        [
            PreconditionViolation(
                "STOP_REVISION_MISMATCH",
                "stop_revision",
                f"the current stop began at revision {campaign.stop_revision}",
            )
        ],
        reason="STOP_REVISION_MISMATCH",
        metadata={"stop_revision": str(campaign.stop_revision)},
    )


def deleted_violation() -> PreconditionViolation:
    return PreconditionViolation("CAMPAIGN_DELETED", "campaign", "the campaign is deleted")


def require_not_deleted(campaign: Campaign, action: str) -> None:
    if campaign.deleted:
        raise FailedPrecondition(
            f"a deleted campaign cannot be {action}; undelete it first",
            [deleted_violation()],
            reason="CAMPAIGN_DELETED",
        )


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
        out.append(deleted_violation())
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
    """The transition a request asks for, or None when the campaign is already there.

    A STOP only ever asks: repeated, from a double click, a retry or a second operator, it
    changes nothing. The dialer's confirmation of the drain is a call of its own
    (plan_drained), so no request can be taken for the other.
    """
    if requested == Status.RUN:
        if campaign.status == Status.RUN:
            return None
        require_not_deleted(campaign, "run")
        require_runnable(campaign, next_campaign)
        return Transition(Status.RUN, Reason.REQUESTED)
    if campaign.status == Status.STOP:
        return None
    if force:
        # A person's decision to stop at once: it never starts the next campaign.
        return Transition(Status.STOP, Reason.REQUESTED)
    if campaign.status == Status.RUN:
        return Transition(Status.STOPPING, Reason.REQUESTED, now + stop_grace_us)
    if campaign.finishing:
        # A stop a person asks for never starts the next campaign: the drain goes on, the
        # chain is called off.
        return Transition(
            Status.STOPPING, Reason.REQUESTED, campaign.stop_deadline, detail=CHAIN_CALLED_OFF
        )
    return None


def plan_drained(campaign: Campaign, stop_revision: int) -> Transition | None:
    """The dialer's confirmation that the stop of stop_revision is drained; None when that
    stop has completed already (a retried confirmation)."""
    if campaign.status == Status.STOPPING:
        if campaign.stop_revision != stop_revision:
            raise _other_stop(campaign, stop_revision)
        return Transition(Status.STOP, Reason.DRAINED, start_next=campaign.finishing)
    if campaign.status == Status.STOP and campaign.stop_revision:
        if campaign.stop_revision == stop_revision:
            return None
        raise _other_stop(campaign, stop_revision)
    raise _not_stopping(campaign)


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
        if campaign.last_reason == Reason.OUTDIAL_EXHAUSTED:
            # News once: until something else happens to the campaign, a repeated report
            # records nothing (kept on the campaign, so it holds after the log is compacted).
            return None
        return Transition(Status.RUN, Reason.OUTDIAL_EXHAUSTED)
    return Transition(Status.STOPPING, Reason.FINISHED, now + stop_grace_us, finishing=True)
