"""The rules about references between campaigns: a next campaign that must exist and be
runnable, an outdial that only one live campaign may use, a campaign that its referrers keep
from deletion, and what finishing a campaign does to the next one in its chain."""

from __future__ import annotations

from dataclasses import dataclass

from . import lifecycle
from .errors import FailedPrecondition, PreconditionViolation
from .ports import CampaignWrites
from .types import Campaign, NextCampaignResult, Status


def reference_error(violations: list[PreconditionViolation]) -> FailedPrecondition:
    return FailedPrecondition(
        "; ".join(v.description for v in violations), violations, reason=violations[0].type
    )


# How many referring campaigns a refused delete names; the rest are counted.
MAX_REFERRERS_SHOWN = 20


def referenced(campaign_id: str, referrers: list[str]) -> FailedPrecondition:
    shown = referrers[:MAX_REFERRERS_SHOWN]
    more = len(referrers) - len(shown)
    return FailedPrecondition(
        f"live campaigns name campaign {campaign_id} as their next campaign"
        + (f" ({more} more not listed)" if more else "")
        + "; change their next_campaign_id or delete them first",
        [
            PreconditionViolation(
                "CAMPAIGN_REFERENCED", r, f"campaign {r} names it as its next_campaign_id"
            )
            for r in shown
        ],
        reason="CAMPAIGN_REFERENCED",
    )


@dataclass(slots=True, frozen=True)
class Chain:
    """What starting a finished campaign's next campaign comes to."""

    campaign: Campaign | None
    result: NextCampaignResult
    unmet: tuple[PreconditionViolation, ...] = ()

    @property
    def detail(self) -> str:
        why = {
            NextCampaignResult.STARTED: "started",
            NextCampaignResult.ALREADY_RUNNING: "not started: it is already running",
            NextCampaignResult.NOT_FOUND: "not started: it does not exist or is deleted",
            NextCampaignResult.RUN_CONDITIONS_UNMET: "not started: "
            + "; ".join(f"{v.subject}: {v.description}" for v in self.unmet),
        }
        return why[self.result]


def check_references(store: CampaignWrites, c: Campaign, fields: set[str]) -> Campaign | None:
    """Raises for a broken reference among fields; returns the next campaign if any."""
    next_campaign = store.get(c.customer_id, c.next_campaign_id) if c.next_campaign_id else None
    violations: list[PreconditionViolation] = []
    if "next_campaign_id" in fields:
        violations += lifecycle.next_campaign_violations(c, next_campaign)
    if "outdial_id" in fields and c.outdial_id and not c.deleted:
        holder = store.outdial_holder(c.customer_id, c.outdial_id, c.id)
        violations += lifecycle.outdial_violations(c, holder)
    if violations:
        raise reference_error(violations)
    return next_campaign


def chain_target(store: CampaignWrites, c: Campaign) -> Chain | None:
    """The next campaign of a finished one, and whether it can start."""
    if not c.next_campaign_id:
        return None
    nxt = store.load(c.customer_id, c.next_campaign_id)
    if nxt is None or nxt.deleted:
        return Chain(None, NextCampaignResult.NOT_FOUND)
    if nxt.status == Status.RUN:
        return Chain(nxt, NextCampaignResult.ALREADY_RUNNING)
    after = store.get(nxt.customer_id, nxt.next_campaign_id) if nxt.next_campaign_id else None
    unmet = lifecycle.run_violations(nxt, after)
    if unmet:
        return Chain(nxt, NextCampaignResult.RUN_CONDITIONS_UNMET, tuple(unmet))
    return Chain(nxt, NextCampaignResult.STARTED)
