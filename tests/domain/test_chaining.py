"""End of the outdial list: end_handle and next-campaign chaining, applied by the domain."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from campaign_grpc.domain.campaigns import Campaigns
from campaign_grpc.domain.errors import FailedPrecondition, InvalidArgument
from campaign_grpc.domain.types import (
    Campaign,
    EndHandle,
    Event,
    NextCampaignResult,
    Reason,
    Status,
)
from campaign_grpc.ops.compaction import Compactor
from campaign_grpc.storage.connect import open_database
from conftest import FakeClock
from factories import runnable_draft

RUN, STOP, STOPPING = Status.RUN, Status.STOP, Status.STOPPING


async def create(campaigns: Campaigns, customer: str, **changes: Any) -> Campaign:
    return await campaigns.create(runnable_draft(customer, **changes), "")


async def set_status(
    campaigns: Campaigns, c: Campaign, status: Status, *, force: bool = False
) -> Campaign:
    return await campaigns.set_status(c.customer_id, c.id, status, force)


async def exhausted(campaigns: Campaigns, c: Campaign) -> Campaign:
    return await campaigns.report_outdial_exhausted(c.customer_id, c.id)


async def drained(campaigns: Campaigns, c: Campaign) -> Campaign:
    """The dialer confirms the drain of the stop it saw: the campaign's current one."""
    current = await campaigns.get(c.customer_id, c.id)
    return await campaigns.confirm_drained(c.customer_id, c.id, current.stop_revision)


async def get(campaigns: Campaigns, c: Campaign) -> Campaign:
    return await campaigns.get(c.customer_id, c.id)


async def log(campaigns: Campaigns, customer: str, after: int = 0) -> list[Event]:
    return await campaigns.events_after(after, customer, "", 1000)


def steps(events: list[Event]) -> list[tuple[str, Status, Status, Reason]]:
    return [(e.campaign_id, e.previous_status, e.status, e.reason) for e in events]


async def running_chain(campaigns: Campaigns, customer: str) -> tuple[Campaign, Campaign]:
    """A running campaign that stops at the end of its list, and a stopped next campaign."""
    following = await create(campaigns, customer)
    first = await create(campaigns, customer, next_campaign_id=following.id)
    return await set_status(campaigns, first, RUN), following


# -- the report ---------------------------------------------------------------------------


async def test_continue_keeps_running_and_records_the_report_once(
    campaigns: Campaigns, customer: str
) -> None:
    c = await set_status(
        campaigns, await create(campaigns, customer, end_handle=EndHandle.CONTINUE), RUN
    )
    mark = c.revision
    reported = await exhausted(campaigns, c)
    assert reported.status == RUN
    assert reported.etag != c.etag  # every recorded change is a new version
    again = await exhausted(campaigns, reported)
    assert again == reported
    assert steps(await log(campaigns, customer, mark)) == [
        (c.id, RUN, RUN, Reason.OUTDIAL_EXHAUSTED)
    ]


async def test_a_repeated_report_records_nothing_after_the_first_was_compacted(
    campaigns: Campaigns, customer: str, clock: FakeClock
) -> None:
    c = await set_status(
        campaigns, await create(campaigns, customer, end_handle=EndHandle.CONTINUE), RUN
    )
    reported = await exhausted(campaigns, c)
    compactor = Compactor(campaigns._store, campaigns._writer, clock, retention_s=1, interval_s=60)
    clock.advance(10)
    assert await compactor.compact() == 3
    assert await exhausted(campaigns, reported) == reported
    assert await log(campaigns, customer, reported.revision) == []


async def test_continue_records_a_new_report_after_something_else_happened(
    campaigns: Campaigns, customer: str
) -> None:
    c = await set_status(
        campaigns, await create(campaigns, customer, end_handle=EndHandle.CONTINUE), RUN
    )
    await exhausted(campaigns, c)
    await set_status(campaigns, c, STOP, force=True)
    c = await set_status(campaigns, c, RUN)
    await exhausted(campaigns, c)
    reasons = [e.reason for e in await log(campaigns, customer)]
    assert reasons.count(Reason.OUTDIAL_EXHAUSTED) == 2


async def test_stop_handle_moves_to_stopping_as_finished(
    campaigns: Campaigns, customer: str, clock: FakeClock
) -> None:
    c, _ = await running_chain(campaigns, customer)
    mark = c.revision
    finishing = await exhausted(campaigns, c)
    assert finishing.status == STOPPING
    assert finishing.stop_deadline == clock.now + 60_000_000
    assert steps(await log(campaigns, customer, mark)) == [(c.id, RUN, STOPPING, Reason.FINISHED)]


async def test_repeating_the_report_while_finishing_changes_nothing(
    campaigns: Campaigns, customer: str
) -> None:
    c, _ = await running_chain(campaigns, customer)
    finishing = await exhausted(campaigns, c)
    assert await exhausted(campaigns, finishing) == finishing
    assert [e.reason for e in await log(campaigns, customer)].count(Reason.FINISHED) == 1


@pytest.mark.parametrize("how", ["stopped", "stopping on request", "deleted"])
async def test_only_a_running_campaign_accepts_the_report(
    campaigns: Campaigns, customer: str, how: str
) -> None:
    c = await create(campaigns, customer)
    if how == "stopping on request":
        c = await set_status(campaigns, await set_status(campaigns, c, RUN), STOP)
        assert c.status == STOPPING
    elif how == "deleted":
        c = await campaigns.delete(customer, c.id, "")
    with pytest.raises(FailedPrecondition) as info:
        await exhausted(campaigns, c)
    assert info.value.reason == "CAMPAIGN_NOT_RUNNING"
    assert await get(campaigns, c) == c


async def test_the_report_is_validated(campaigns: Campaigns, customer: str) -> None:
    with pytest.raises(InvalidArgument):
        await campaigns.report_outdial_exhausted(customer, "not-a-uuid")


# -- completing a finished campaign ---------------------------------------------------------


async def test_the_dialers_confirmation_starts_the_next_campaign(
    campaigns: Campaigns, customer: str
) -> None:
    c, following = await running_chain(campaigns, customer)
    mark = c.revision
    finishing = await exhausted(campaigns, c)
    assert finishing.stop_revision == finishing.revision
    done = await campaigns.confirm_drained(customer, c.id, finishing.stop_revision)
    assert done.status == STOP
    assert not done.finishing
    started = await get(campaigns, following)
    assert started.status == RUN
    events = await log(campaigns, customer, mark)
    assert steps(events) == [
        (c.id, RUN, STOPPING, Reason.FINISHED),
        (c.id, STOPPING, STOP, Reason.DRAINED),
        (following.id, STOP, RUN, Reason.CHAINED),
    ]
    assert events[1].next_campaign_id == following.id
    assert events[1].next_campaign_result == NextCampaignResult.STARTED
    assert "started" in events[1].detail
    assert events[2].chained_from == c.id
    # The dialer's retry of a confirmation whose reply it lost starts nothing more.
    again = await campaigns.confirm_drained(customer, c.id, finishing.stop_revision)
    assert again == await get(campaigns, c)
    assert len(await log(campaigns, customer, mark)) == 3


async def test_the_grace_timer_completes_a_finished_campaign_and_starts_the_next(
    campaigns: Campaigns, customer: str, clock: FakeClock
) -> None:
    c, following = await running_chain(campaigns, customer)
    await exhausted(campaigns, c)
    clock.advance(59)
    assert await campaigns.expire_stops() == 0
    clock.advance(2)
    assert await campaigns.expire_stops() == 1
    assert (await get(campaigns, c)).status == STOP
    assert (await get(campaigns, following)).status == RUN
    last = (await log(campaigns, customer))[-2:]
    assert steps(last) == [
        (c.id, STOPPING, STOP, Reason.GRACE_EXPIRED),
        (following.id, STOP, RUN, Reason.CHAINED),
    ]


async def test_a_forced_stop_of_a_finishing_campaign_never_starts_the_next(
    campaigns: Campaigns, customer: str
) -> None:
    c, following = await running_chain(campaigns, customer)
    await exhausted(campaigns, c)
    await set_status(campaigns, c, STOP, force=True)
    assert (await get(campaigns, following)).status == STOP
    assert all(e.reason != Reason.CHAINED for e in await log(campaigns, customer))


async def test_a_persons_stop_on_a_finishing_campaign_calls_the_chain_off(
    campaigns: Campaigns, customer: str
) -> None:
    c, following = await running_chain(campaigns, customer)
    finishing = await exhausted(campaigns, c)
    asked = await set_status(campaigns, c, STOP)
    # Still draining, the same stop to confirm, but no longer finishing.
    assert (asked.status, asked.stop_revision, asked.finishing) == (
        STOPPING,
        finishing.stop_revision,
        False,
    )
    assert asked.stop_deadline == finishing.stop_deadline
    called_off = (await log(campaigns, customer, finishing.revision))[-1]
    assert (called_off.previous_status, called_off.status, called_off.reason) == (
        STOPPING,
        STOPPING,
        Reason.REQUESTED,
    )
    assert "will not be started" in called_off.detail
    # Asking again changes nothing more.
    assert await set_status(campaigns, c, STOP) == asked
    done = await drained(campaigns, c)
    assert done.status == STOP
    assert (await get(campaigns, following)).status == STOP
    assert all(e.reason != Reason.CHAINED for e in await log(campaigns, customer))


async def test_a_requested_stop_never_starts_the_next(
    campaigns: Campaigns, customer: str, clock: FakeClock
) -> None:
    c, following = await running_chain(campaigns, customer)
    await set_status(campaigns, c, STOP)
    await drained(campaigns, c)  # the dialer confirms the user's stop
    c2, following2 = await running_chain(campaigns, customer)
    await set_status(campaigns, c2, STOP)
    clock.advance(61)
    await campaigns.expire_stops()  # the user's stop completed by the grace timer
    for f in (following, following2):
        assert (await get(campaigns, f)).status == STOP
    assert all(e.reason != Reason.CHAINED for e in await log(campaigns, customer))


async def test_running_again_cancels_the_finish(campaigns: Campaigns, customer: str) -> None:
    c, following = await running_chain(campaigns, customer)
    await exhausted(campaigns, c)
    resumed = await set_status(campaigns, c, RUN)
    assert resumed.status == RUN
    assert not resumed.finishing
    assert resumed.stop_revision == 0
    await set_status(campaigns, c, STOP)
    await drained(campaigns, c)
    assert (await get(campaigns, following)).status == STOP


async def test_a_finished_campaign_without_a_next_campaign_just_stops(
    campaigns: Campaigns, customer: str
) -> None:
    c = await set_status(campaigns, await create(campaigns, customer), RUN)
    await exhausted(campaigns, c)
    done = await drained(campaigns, c)
    assert done.status == STOP
    last = (await log(campaigns, customer))[-1]
    assert (last.next_campaign_id, last.next_campaign_result) == ("", NextCampaignResult(0))


async def test_a_chain_of_three(campaigns: Campaigns, customer: str) -> None:
    third = await create(campaigns, customer)
    second = await create(campaigns, customer, next_campaign_id=third.id)
    first = await set_status(
        campaigns, await create(campaigns, customer, next_campaign_id=second.id), RUN
    )
    mark = first.revision
    for current in (first, second, third):
        current = await get(campaigns, current)
        assert current.status == RUN
        await exhausted(campaigns, current)
        await drained(campaigns, current)
    assert [(await get(campaigns, c)).status for c in (first, second, third)] == [STOP] * 3
    assert steps(await log(campaigns, customer, mark)) == [
        (first.id, RUN, STOPPING, Reason.FINISHED),
        (first.id, STOPPING, STOP, Reason.DRAINED),
        (second.id, STOP, RUN, Reason.CHAINED),
        (second.id, RUN, STOPPING, Reason.FINISHED),
        (second.id, STOPPING, STOP, Reason.DRAINED),
        (third.id, STOP, RUN, Reason.CHAINED),
        (third.id, RUN, STOPPING, Reason.FINISHED),
        (third.id, STOPPING, STOP, Reason.DRAINED),
    ]


# -- a next campaign that cannot start --------------------------------------------------------


async def test_a_next_campaign_that_cannot_run_stays_stopped_and_the_event_says_why(
    campaigns: Campaigns, customer: str
) -> None:
    following = await create(campaigns, customer, outplan_id="", actions=[], queue_id="")
    c = await set_status(
        campaigns, await create(campaigns, customer, next_campaign_id=following.id), RUN
    )
    await exhausted(campaigns, c)
    mark = (await get(campaigns, c)).revision
    await drained(campaigns, c)
    assert await get(campaigns, following) == following
    (completion,) = await log(campaigns, customer, mark)
    assert completion.next_campaign_id == following.id
    assert completion.next_campaign_result == NextCampaignResult.RUN_CONDITIONS_UNMET
    assert completion.unmet_run_conditions == ("OUTPLAN_MISSING", "NOTHING_TO_RUN")
    assert "not started" in completion.detail
    assert "outplan_id" in completion.detail
    assert "actions" in completion.detail


async def test_a_deleted_next_campaign_is_not_started(
    campaigns: Campaigns, customer: str, sqlite_url: str
) -> None:
    c, following = await running_chain(campaigns, customer)
    # Deleted behind the service's back (a delete through it is refused while c names it).
    db = open_database(sqlite_url)
    db.execute_sql("UPDATE campaign SET tm_delete = 1 WHERE id = ?", (following.id,))
    db.close()
    await exhausted(campaigns, c)
    await drained(campaigns, c)
    assert (await get(campaigns, following)).status == STOP
    last = (await log(campaigns, customer))[-1]
    assert last.next_campaign_result == NextCampaignResult.NOT_FOUND
    assert "deleted" in last.detail


async def test_a_next_campaign_already_running_is_left_alone(
    campaigns: Campaigns, customer: str
) -> None:
    c, following = await running_chain(campaigns, customer)
    following = await set_status(campaigns, following, RUN)
    await exhausted(campaigns, c)
    await drained(campaigns, c)
    assert await get(campaigns, following) == following
    last = (await log(campaigns, customer))[-1]
    assert last.campaign_id == c.id
    assert last.next_campaign_result == NextCampaignResult.ALREADY_RUNNING
    assert "already running" in last.detail


# -- races ----------------------------------------------------------------------------------


@pytest.mark.parametrize("attempt", range(5))
async def test_a_chain_racing_a_users_stop_on_the_next_campaign(
    campaigns: Campaigns, customer: str, attempt: int
) -> None:
    c, following = await running_chain(campaigns, customer)
    await exhausted(campaigns, c)
    mark = (await get(campaigns, following)).revision
    await asyncio.gather(drained(campaigns, c), set_status(campaigns, following, STOP))
    final = await get(campaigns, following)
    seen = [
        (e.previous_status, e.status, e.reason)
        for e in await log(campaigns, customer, mark)
        if e.campaign_id == following.id
    ]
    # Either the user's STOP came first (a no-op on a stopped campaign) and the chain then
    # started it, or the chain came first and the user's STOP then began to stop it.
    assert (final.status, seen) in [
        (RUN, [(STOP, RUN, Reason.CHAINED)]),
        (STOPPING, [(STOP, RUN, Reason.CHAINED), (RUN, STOPPING, Reason.REQUESTED)]),
    ]
    assert final.revision == max(e.revision for e in await log(campaigns, customer))


async def test_racing_reports_finish_a_campaign_once(campaigns: Campaigns, customer: str) -> None:
    c, following = await running_chain(campaigns, customer)
    results = await asyncio.gather(*(exhausted(campaigns, c) for _ in range(10)))
    assert {r.status for r in results} == {STOPPING}
    assert [e.reason for e in await log(campaigns, customer)].count(Reason.FINISHED) == 1
    await asyncio.gather(*(drained(campaigns, c) for _ in range(10)))
    assert [e.reason for e in await log(campaigns, customer)].count(Reason.CHAINED) == 1
    assert (await get(campaigns, following)).status == RUN
