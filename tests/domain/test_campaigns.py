"""The campaign domain against a real SQLite file: CRUD, references, lifecycle, events, lists."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from campaign_grpc.domain.campaigns import Campaigns
from campaign_grpc.domain.errors import (
    Aborted,
    AlreadyExists,
    CampaignError,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
)
from campaign_grpc.domain.types import (
    Action,
    Campaign,
    CampaignType,
    EndHandle,
    Event,
    ListFilter,
    Reason,
    Status,
)
from campaign_grpc.storage.connect import open_database
from campaign_grpc.storage.read_lanes import Readers
from campaign_grpc.storage.store import Store
from campaign_grpc.storage.writer import Writer
from conftest import FakeClock
from factories import new_id, runnable_draft

UPDATABLE = [
    "name",
    "detail",
    "type",
    "service_level",
    "end_handle",
    "actions",
    "outplan_id",
    "outdial_id",
    "queue_id",
    "next_campaign_id",
]


async def create(campaigns: Campaigns, customer: str, **changes: Any) -> Campaign:
    return await campaigns.create(runnable_draft(customer, **changes), "")


async def events(campaigns: Campaigns, customer: str, campaign_id: str = "") -> list[Event]:
    return await campaigns.events_after(0, customer, campaign_id, 1000)


def copy_sqlite(source: str, target: str) -> None:
    with (
        contextlib.closing(sqlite3.connect(source)) as src,
        contextlib.closing(sqlite3.connect(target)) as dst,
    ):
        src.backup(dst)


def transitions(evs: list[Event]) -> list[tuple[Status, Status, Reason]]:
    return [(e.previous_status, e.status, e.reason) for e in evs]


async def run(campaigns: Campaigns, c: Campaign) -> Campaign:
    return await campaigns.set_status(c.customer_id, c.id, Status.RUN, False)


async def stop(campaigns: Campaigns, c: Campaign, *, force: bool = False) -> Campaign:
    return await campaigns.set_status(c.customer_id, c.id, Status.STOP, force)


async def drained(campaigns: Campaigns, c: Campaign, stop_revision: int = 0) -> Campaign:
    """The dialer's confirmation of the stop it saw (by default the campaign's current one)."""
    if not stop_revision:
        stop_revision = (await campaigns.get(c.customer_id, c.id)).stop_revision
    return await campaigns.confirm_drained(c.customer_id, c.id, stop_revision)


async def list_all(campaigns: Campaigns, f: ListFilter, page_size: int = 1000) -> list[str]:
    ids: list[str] = []
    token = ""
    while True:
        page = await campaigns.list_page(f, page_size, token)
        ids += [c.id for c in page.campaigns]
        if not page.next_page_token:
            return ids
        token = page.next_page_token


def precondition_types(exc: FailedPrecondition) -> list[str]:
    return [v.type for v in exc.violations]


# -- create -------------------------------------------------------------------------------


async def test_create_makes_an_id_and_the_defaults(
    campaigns: Campaigns, customer: str, clock: FakeClock
) -> None:
    draft = runnable_draft(customer, end_handle=EndHandle.UNSPECIFIED)
    c = await campaigns.create(draft, "")
    assert c.id
    assert c.customer_id == customer
    assert c.status == Status.STOP
    assert c.end_handle == EndHandle.STOP
    assert c.tm_create == clock.now
    assert c.tm_update is None
    assert c.tm_delete is None
    assert c.etag
    assert await campaigns.get(customer, c.id) == c


async def test_create_keeps_every_given_field(campaigns: Campaigns, customer: str) -> None:
    target = await create(campaigns, customer)
    first, second = new_id(), new_id()
    draft = runnable_draft(
        customer,
        type=CampaignType.FLOW,
        name="autumn",
        detail="a longer text",
        service_level=80,
        end_handle=EndHandle.CONTINUE,
        actions=[
            Action(first, second, "answer", {}),
            Action(second, "", "talk", {"text": "hi", "n": 2, "nested": {"a": [1, True, None]}}),
        ],
        queue_id=new_id(),
        next_campaign_id=target.id,
    )
    c = await campaigns.create(draft, "")
    stored = await campaigns.get(customer, c.id)
    for name in UPDATABLE:
        assert getattr(stored, name) == getattr(draft, name), name


async def test_create_gives_actions_without_id_an_id(campaigns: Campaigns, customer: str) -> None:
    c = await create(campaigns, customer)
    ids = [a.id for a in c.actions]
    assert all(ids)
    assert len(set(ids)) == len(ids)
    assert [a.id for a in (await campaigns.get(customer, c.id)).actions] == ids


async def test_create_ignores_output_only_fields(
    campaigns: Campaigns, customer: str, clock: FakeClock
) -> None:
    draft = dataclasses.replace(
        runnable_draft(customer),
        status=Status.RUN,
        tm_create=5,
        tm_update=6,
        tm_delete=7,
        version=99,
        stop_deadline=8,
    )
    c = await campaigns.create(draft, "")
    stored = await campaigns.get(customer, c.id)
    assert stored.status == Status.STOP
    assert stored.tm_create == clock.now
    assert stored.tm_update is None
    assert stored.tm_delete is None
    assert stored.stop_deadline is None


async def test_create_with_a_caller_chosen_id(campaigns: Campaigns, customer: str) -> None:
    chosen = new_id()
    c = await create(campaigns, customer, id=chosen)
    assert c.id == chosen
    assert (await campaigns.get(customer, chosen)).id == chosen


async def test_create_with_a_taken_id_is_already_exists(
    campaigns: Campaigns, customer: str
) -> None:
    first = await create(campaigns, customer, name="first")
    with pytest.raises(AlreadyExists) as info:
        await create(campaigns, customer, id=first.id, name="second")
    assert info.value.reason == "CAMPAIGN_ALREADY_EXISTS"
    assert (await campaigns.get(customer, first.id)).name == "first"
    assert len(await events(campaigns, customer)) == 1


async def test_an_id_is_unique_across_customers_and_the_refusal_names_no_one(
    campaigns: Campaigns, customer: str
) -> None:
    theirs = await create(campaigns, new_id(), name="theirs")
    with pytest.raises(AlreadyExists) as info:
        await create(campaigns, customer, id=theirs.id, name="mine")
    assert theirs.customer_id not in str(info.value)
    assert theirs.customer_id not in info.value.metadata.values()
    # The same answer as for an id the caller holds itself.
    mine = await create(campaigns, customer)
    with pytest.raises(AlreadyExists) as own:
        await create(campaigns, customer, id=mine.id)
    assert (own.value.reason, own.value.message.replace(mine.id, "X")) == (
        info.value.reason,
        info.value.message.replace(theirs.id, "X"),
    )
    with pytest.raises(NotFound):
        await campaigns.get(customer, theirs.id)
    assert (await campaigns.get(theirs.customer_id, theirs.id)).name == "theirs"


async def test_create_with_a_deleted_campaigns_id_is_already_exists(
    campaigns: Campaigns, customer: str
) -> None:
    first = await create(campaigns, customer)
    await campaigns.delete(customer, first.id, "")
    with pytest.raises(AlreadyExists):
        await create(campaigns, customer, id=first.id)


async def test_create_is_validated_before_anything_is_stored(
    campaigns: Campaigns, customer: str
) -> None:
    with pytest.raises(InvalidArgument) as info:
        await create(campaigns, customer, name="n" * 300, service_level=-1)
    assert [v.field for v in info.value.violations] == [
        "campaign.name",
        "campaign.service_level",
    ]
    assert (await campaigns.list_page(ListFilter(customer), 0, "")).campaigns == []
    assert await events(campaigns, customer) == []


async def test_a_retried_create_returns_the_first_campaign(
    campaigns: Campaigns, customer: str
) -> None:
    request_id = new_id()
    first = await campaigns.create(runnable_draft(customer, name="first"), request_id)
    again = await campaigns.create(runnable_draft(customer, name="first"), request_id)
    assert again == first
    page = await campaigns.list_page(ListFilter(customer), 0, "")
    assert [c.id for c in page.campaigns] == [first.id]
    assert len(await events(campaigns, customer)) == 1


async def test_a_retried_create_with_another_body_still_returns_the_first(
    campaigns: Campaigns, customer: str
) -> None:
    request_id = new_id()
    first = await campaigns.create(runnable_draft(customer, name="first"), request_id)
    again = await campaigns.create(runnable_draft(customer, name="second"), request_id)
    assert again.id == first.id
    assert again.name == "first"
    assert len((await campaigns.list_page(ListFilter(customer), 0, "")).campaigns) == 1


async def test_concurrent_retries_of_one_create_make_one_campaign(
    campaigns: Campaigns, customer: str
) -> None:
    request_id = new_id()
    draft = runnable_draft(customer)
    results = await asyncio.gather(*(campaigns.create(draft, request_id) for _ in range(10)))
    assert len({c.id for c in results}) == 1
    assert len((await campaigns.list_page(ListFilter(customer), 0, "")).campaigns) == 1


async def test_request_ids_are_per_customer(campaigns: Campaigns, customer: str) -> None:
    request_id = new_id()
    mine = await campaigns.create(runnable_draft(customer), request_id)
    theirs = await campaigns.create(runnable_draft(new_id()), request_id)
    assert theirs.id != mine.id
    assert theirs.customer_id != customer


async def test_different_request_ids_make_different_campaigns(
    campaigns: Campaigns, customer: str
) -> None:
    a = await campaigns.create(runnable_draft(customer), new_id())
    b = await campaigns.create(runnable_draft(customer), new_id())
    assert a.id != b.id


# -- tenant isolation ---------------------------------------------------------------------


async def test_another_customers_campaign_is_not_found_everywhere(
    campaigns: Campaigns, customer: str
) -> None:
    c = await create(campaigns, customer)
    other = new_id()
    with pytest.raises(NotFound) as info:
        await campaigns.get(other, c.id)
    missing = new_id()
    with pytest.raises(NotFound) as missing_info:
        await campaigns.get(other, missing)
    # The answer for someone else's campaign reads exactly like the one for no campaign.
    assert info.value.reason == missing_info.value.reason == "CAMPAIGN_NOT_FOUND"
    assert info.value.message.replace(c.id, missing) == missing_info.value.message

    with pytest.raises(NotFound):
        await campaigns.update(
            dataclasses.replace(c, customer_id=other, name="stolen"), ["name"], ""
        )
    with pytest.raises(NotFound):
        await campaigns.update(dataclasses.replace(c, customer_id=other), ["name"], c.etag)
    with pytest.raises(NotFound):
        await campaigns.delete(other, c.id, "")
    with pytest.raises(NotFound):
        await campaigns.undelete(other, c.id)
    with pytest.raises(NotFound):
        await campaigns.set_status(other, c.id, Status.RUN, False)
    with pytest.raises(NotFound):
        await campaigns.set_status(other, c.id, Status.STOP, True)
    assert (await campaigns.list_page(ListFilter(other, show_deleted=True), 0, "")).campaigns == []
    assert await events(campaigns, other) == []

    after = await campaigns.get(customer, c.id)
    assert after == c


@pytest.mark.parametrize("op", ["get", "update", "delete", "undelete", "run", "stop"])
async def test_a_campaign_that_does_not_exist_is_not_found(
    campaigns: Campaigns, customer: str, op: str
) -> None:
    missing = new_id()
    calls = {
        "get": lambda: campaigns.get(customer, missing),
        "update": lambda: campaigns.update(runnable_draft(customer, id=missing), ["name"], ""),
        "delete": lambda: campaigns.delete(customer, missing, ""),
        "undelete": lambda: campaigns.undelete(customer, missing),
        "run": lambda: campaigns.set_status(customer, missing, Status.RUN, False),
        "stop": lambda: campaigns.set_status(customer, missing, Status.STOP, False),
    }
    with pytest.raises(NotFound) as info:
        await calls[op]()
    assert info.value.metadata == {"id": missing}


# -- references ---------------------------------------------------------------------------


async def test_next_campaign_must_exist(campaigns: Campaigns, customer: str) -> None:
    with pytest.raises(FailedPrecondition) as info:
        await create(campaigns, customer, next_campaign_id=new_id())
    assert precondition_types(info.value) == ["NEXT_CAMPAIGN_INVALID"]
    assert info.value.violations[0].subject == "next_campaign_id"
    assert await events(campaigns, customer) == []


async def test_next_campaign_of_another_customer_reads_as_missing(
    campaigns: Campaigns, customer: str
) -> None:
    theirs = await create(campaigns, new_id())
    with pytest.raises(FailedPrecondition) as info:
        await create(campaigns, customer, next_campaign_id=theirs.id)
    assert precondition_types(info.value) == ["NEXT_CAMPAIGN_INVALID"]
    assert "does not exist" in info.value.violations[0].description


async def test_next_campaign_must_not_be_deleted(campaigns: Campaigns, customer: str) -> None:
    gone = await create(campaigns, customer)
    await campaigns.delete(customer, gone.id, "")
    with pytest.raises(FailedPrecondition) as info:
        await create(campaigns, customer, next_campaign_id=gone.id)
    assert precondition_types(info.value) == ["NEXT_CAMPAIGN_INVALID"]


async def test_next_campaign_must_not_be_the_campaign_itself(
    campaigns: Campaigns, customer: str
) -> None:
    chosen = new_id()
    with pytest.raises(FailedPrecondition):
        await create(campaigns, customer, id=chosen, next_campaign_id=chosen)
    c = await create(campaigns, customer)
    with pytest.raises(FailedPrecondition) as info:
        await campaigns.update(dataclasses.replace(c, next_campaign_id=c.id), ["next_campaign_id"])
    assert precondition_types(info.value) == ["NEXT_CAMPAIGN_INVALID"]
    assert (await campaigns.get(customer, c.id)).next_campaign_id == ""


async def test_a_valid_next_campaign_is_accepted(campaigns: Campaigns, customer: str) -> None:
    after = await create(campaigns, customer)
    c = await create(campaigns, customer, next_campaign_id=after.id)
    assert (await campaigns.get(customer, c.id)).next_campaign_id == after.id


async def test_an_outdial_belongs_to_one_live_campaign(campaigns: Campaigns, customer: str) -> None:
    holder = await create(campaigns, customer)
    with pytest.raises(FailedPrecondition) as info:
        await create(campaigns, customer, outdial_id=holder.outdial_id)
    assert info.value.reason == "OUTDIAL_IN_USE"
    assert precondition_types(info.value) == ["OUTDIAL_IN_USE"]
    assert info.value.violations[0].subject == "outdial_id"
    assert holder.id in info.value.violations[0].description

    other = await create(campaigns, customer)
    with pytest.raises(FailedPrecondition) as info:
        await campaigns.update(
            dataclasses.replace(other, outdial_id=holder.outdial_id), ["outdial_id"]
        )
    assert info.value.reason == "OUTDIAL_IN_USE"
    assert (await campaigns.get(customer, other.id)).outdial_id == other.outdial_id


async def test_outdial_of_another_customer_is_neither_blocked_nor_leaked(
    campaigns: Campaigns, customer: str
) -> None:
    theirs = await create(campaigns, new_id())
    mine = await create(campaigns, customer, outdial_id=theirs.outdial_id)
    assert mine.outdial_id == theirs.outdial_id


async def test_a_campaign_keeps_its_own_outdial_on_update(
    campaigns: Campaigns, customer: str
) -> None:
    c = await create(campaigns, customer)
    updated = await campaigns.update(
        dataclasses.replace(c, name="renamed"), ["name", "outdial_id"], c.etag
    )
    assert updated.outdial_id == c.outdial_id
    assert updated.name == "renamed"


async def test_a_deleted_campaign_frees_its_outdial(campaigns: Campaigns, customer: str) -> None:
    old = await create(campaigns, customer)
    await campaigns.delete(customer, old.id, "")
    new = await create(campaigns, customer, outdial_id=old.outdial_id)
    assert new.outdial_id == old.outdial_id


async def test_several_campaigns_may_have_no_outdial(campaigns: Campaigns, customer: str) -> None:
    await create(campaigns, customer, outdial_id="")
    await create(campaigns, customer, outdial_id="")


async def test_every_broken_reference_is_listed(campaigns: Campaigns, customer: str) -> None:
    holder = await create(campaigns, customer)
    with pytest.raises(FailedPrecondition) as info:
        await create(campaigns, customer, outdial_id=holder.outdial_id, next_campaign_id=new_id())
    assert sorted(precondition_types(info.value)) == ["NEXT_CAMPAIGN_INVALID", "OUTDIAL_IN_USE"]


async def test_concurrent_creates_with_one_outdial_have_one_winner(
    campaigns: Campaigns, customer: str
) -> None:
    outdial = new_id()
    results = await asyncio.gather(
        *(create(campaigns, customer, outdial_id=outdial) for _ in range(20)),
        return_exceptions=True,
    )
    winners = [r for r in results if isinstance(r, Campaign)]
    losers = [r for r in results if not isinstance(r, Campaign)]
    assert len(winners) == 1
    assert len(losers) == 19
    assert all(isinstance(e, FailedPrecondition) and e.reason == "OUTDIAL_IN_USE" for e in losers)
    live = (await campaigns.list_page(ListFilter(customer), 0, "")).campaigns
    assert [c.id for c in live] == [winners[0].id]
    assert len(await events(campaigns, customer)) == 1


# -- update -------------------------------------------------------------------------------


async def test_update_changes_only_the_named_fields(
    campaigns: Campaigns, customer: str, clock: FakeClock
) -> None:
    c = await create(campaigns, customer, name="before", detail="kept", service_level=10)
    clock.advance(5)
    draft = dataclasses.replace(
        c,
        name="after",
        detail="ignored",
        service_level=90,
        outplan_id="",
        actions=[],
        type=CampaignType.FLOW,
    )
    updated = await campaigns.update(draft, ["name", "service_level"], "")
    assert updated.name == "after"
    assert updated.service_level == 90
    stored = await campaigns.get(customer, c.id)
    assert stored == updated
    assert stored.detail == "kept"
    assert stored.outplan_id == c.outplan_id
    assert stored.actions == c.actions
    assert stored.type == CampaignType.CALL


@pytest.mark.parametrize("field", UPDATABLE)
async def test_every_updatable_field_can_be_changed(
    campaigns: Campaigns, customer: str, clock: FakeClock, field: str
) -> None:
    target = await create(campaigns, customer)
    c = await create(campaigns, customer, queue_id="")
    values: dict[str, Any] = {
        "name": "renamed",
        "detail": "more",
        "type": CampaignType.FLOW,
        "service_level": 55,
        "end_handle": EndHandle.CONTINUE,
        "actions": [Action(new_id(), "", "hangup", {"reason": "normal"})],
        "outplan_id": new_id(),
        "outdial_id": new_id(),
        "queue_id": new_id(),
        "next_campaign_id": target.id,
    }
    clock.advance(1)
    updated = await campaigns.update(dataclasses.replace(c, **{field: values[field]}), [field])
    stored = await campaigns.get(customer, c.id)
    assert getattr(stored, field) == values[field]
    assert stored.etag == updated.etag != c.etag
    assert stored.tm_update == clock.now
    assert stored.tm_create == c.tm_create


async def test_every_change_gives_a_new_etag_and_tm_update(
    campaigns: Campaigns, customer: str, clock: FakeClock
) -> None:
    c = await create(campaigns, customer)
    etags = {c.etag}
    current = c
    for i in range(3):
        clock.advance(1)
        current = await campaigns.update(
            dataclasses.replace(current, name=f"v{i}"), ["name"], current.etag
        )
        assert current.tm_update == clock.now
        etags.add(current.etag)
    clock.advance(1)
    current = await run(campaigns, current)
    assert current.tm_update == clock.now
    etags.add(current.etag)
    clock.advance(1)
    current = await stop(campaigns, current, force=True)
    etags.add(current.etag)
    clock.advance(1)
    current = await campaigns.delete(customer, c.id, current.etag)
    assert current.tm_update == clock.now
    etags.add(current.etag)
    current = await campaigns.undelete(customer, c.id)
    etags.add(current.etag)
    assert len(etags) == 8
    assert (await campaigns.get(customer, c.id)).etag == current.etag


async def test_update_with_a_stale_etag_is_aborted_and_changes_nothing(
    campaigns: Campaigns, customer: str
) -> None:
    c = await create(campaigns, customer, name="v0")
    v1 = await campaigns.update(dataclasses.replace(c, name="v1"), ["name"], c.etag)
    with pytest.raises(Aborted) as info:
        await campaigns.update(
            dataclasses.replace(c, name="v2", detail="lost"), ["name", "detail"], c.etag
        )
    assert info.value.reason == "ETAG_MISMATCH"
    stored = await campaigns.get(customer, c.id)
    assert stored == v1
    assert stored.name == "v1"
    assert stored.detail == c.detail


async def test_an_etag_names_what_a_version_holds_not_only_its_number(
    campaigns: Campaigns, customer: str, sqlite_url: str, clock: FakeClock, tmp_path: Path
) -> None:
    """A database restored from an older backup gives version numbers out again, to other
    contents: an etag read before the restore must match none of them."""
    live, backup = sqlite_url.removeprefix("sqlite:///"), str(tmp_path / "backup.db")
    c = await create(campaigns, customer, name="v1")
    copy_sqlite(live, backup)
    clock.advance(1)
    read = await campaigns.update(dataclasses.replace(c, name="read"), ["name"], c.etag)
    copy_sqlite(backup, live)  # the restore: version 1 again
    clock.advance(1)
    again = await campaigns.update(dataclasses.replace(c, name="again"), ["name"], "")
    assert again.version == read.version
    with pytest.raises(Aborted):
        await campaigns.update(dataclasses.replace(c, name="lost"), ["name"], read.etag)
    assert (await campaigns.get(customer, c.id)).name == "again"


async def test_update_with_the_current_etag_succeeds(campaigns: Campaigns, customer: str) -> None:
    c = await create(campaigns, customer)
    updated = await campaigns.update(dataclasses.replace(c, name="x"), ["name"], c.etag)
    assert updated.name == "x"


async def test_concurrent_updates_with_one_etag_have_one_winner(
    campaigns: Campaigns, customer: str
) -> None:
    c = await create(campaigns, customer)
    results = await asyncio.gather(
        *(
            campaigns.update(dataclasses.replace(c, name=f"w{i}"), ["name"], c.etag)
            for i in range(10)
        ),
        return_exceptions=True,
    )
    winners = [r for r in results if isinstance(r, Campaign)]
    assert len(winners) == 1
    assert all(isinstance(r, Aborted) for r in results if not isinstance(r, Campaign))
    assert (await campaigns.get(customer, c.id)).name == winners[0].name


async def test_update_that_changes_nothing_keeps_the_etag(
    campaigns: Campaigns, customer: str
) -> None:
    c = await create(campaigns, customer, name="same")
    same = await campaigns.update(dataclasses.replace(c), ["name", "detail"], c.etag)
    assert same.etag == c.etag
    assert same.tm_update is None


async def test_an_update_writes_one_updated_event_with_its_state(
    campaigns: Campaigns, customer: str
) -> None:
    c = await run(campaigns, await create(campaigns, customer))
    updated = await campaigns.update(dataclasses.replace(c, name="x"), ["name"])
    evs = await events(campaigns, customer)
    assert transitions(evs) == [
        (Status.UNSPECIFIED, Status.STOP, Reason.CREATED),
        (Status.STOP, Status.RUN, Reason.REQUESTED),
        (Status.RUN, Status.RUN, Reason.UPDATED),
    ]
    assert (evs[-1].revision, evs[-1].version) == (updated.revision, updated.version)
    assert evs[-1].body_revision == updated.body_revision == updated.revision


async def test_update_validates_before_touching_storage(
    campaigns: Campaigns, customer: str
) -> None:
    c = await create(campaigns, customer)
    with pytest.raises(InvalidArgument) as info:
        await campaigns.update(dataclasses.replace(c, name="n" * 256), ["name", "status"], "")
    assert [v.field for v in info.value.violations] == ["update_mask", "campaign.name"]
    assert await campaigns.get(customer, c.id) == c


async def test_update_cannot_set_end_handle_unspecified(
    campaigns: Campaigns, customer: str
) -> None:
    c = await create(campaigns, customer, end_handle=EndHandle.CONTINUE)
    updated = await campaigns.update(
        dataclasses.replace(c, end_handle=EndHandle.UNSPECIFIED), ["end_handle"]
    )
    assert updated.end_handle == EndHandle.STOP


async def test_a_running_campaign_may_be_updated(campaigns: Campaigns, customer: str) -> None:
    c = await run(campaigns, await create(campaigns, customer))
    updated = await campaigns.update(
        dataclasses.replace(c, name="live", actions=[], queue_id=new_id()),
        ["name", "actions", "queue_id"],
    )
    assert updated.status == Status.RUN
    assert updated.actions == []


@pytest.mark.parametrize(
    ("changes", "paths", "unmet"),
    [
        ({"outplan_id": ""}, ["outplan_id"], ["OUTPLAN_MISSING"]),
        ({"outdial_id": ""}, ["outdial_id"], ["OUTDIAL_MISSING"]),
        ({"actions": []}, ["actions"], ["NOTHING_TO_RUN"]),
        (
            {"outplan_id": "", "outdial_id": "", "actions": []},
            ["outplan_id", "outdial_id", "actions"],
            ["OUTPLAN_MISSING", "OUTDIAL_MISSING", "NOTHING_TO_RUN"],
        ),
    ],
)
async def test_a_running_campaign_cannot_be_updated_into_one_that_could_not_run(
    campaigns: Campaigns,
    customer: str,
    changes: dict[str, Any],
    paths: list[str],
    unmet: list[str],
) -> None:
    c = await run(campaigns, await create(campaigns, customer, queue_id=""))
    with pytest.raises(FailedPrecondition) as info:
        await campaigns.update(dataclasses.replace(c, **changes), paths, c.etag)
    assert precondition_types(info.value) == unmet
    assert await campaigns.get(customer, c.id) == c


async def test_a_campaign_named_as_next_by_a_live_one_cannot_be_deleted(
    campaigns: Campaigns, customer: str
) -> None:
    following = await create(campaigns, customer)
    first = await create(campaigns, customer, next_campaign_id=following.id)
    second = await create(campaigns, customer, next_campaign_id=following.id)
    with pytest.raises(FailedPrecondition) as info:
        await campaigns.delete(customer, following.id, "")
    assert info.value.reason == "CAMPAIGN_REFERENCED"
    assert [v.subject for v in info.value.violations] == [first.id, second.id]
    assert not (await campaigns.get(customer, following.id)).deleted
    # Once nothing live names it, it goes.
    await campaigns.update(dataclasses.replace(first, next_campaign_id=""), ["next_campaign_id"])
    await campaigns.delete(customer, second.id, "")
    assert (await campaigns.delete(customer, following.id, "")).deleted


async def test_a_running_campaign_with_a_broken_condition_may_still_be_edited(
    campaigns: Campaigns, customer: str, sqlite_url: str
) -> None:
    following = await create(campaigns, customer)
    c = await run(campaigns, await create(campaigns, customer, next_campaign_id=following.id))
    # A database from before deletes were refused may hold such a campaign.
    db = open_database(sqlite_url)
    db.execute_sql("UPDATE campaign SET tm_delete = 1 WHERE id = ?", (following.id,))
    db.close()
    renamed = await campaigns.update(dataclasses.replace(c, name="renamed"), ["name"])
    assert renamed.name == "renamed"
    # It still may not lose anything else it needs to run.
    with pytest.raises(FailedPrecondition) as info:
        await campaigns.update(dataclasses.replace(renamed, outplan_id=""), ["outplan_id"])
    assert precondition_types(info.value) == ["OUTPLAN_MISSING"]
    repaired = await campaigns.update(
        dataclasses.replace(renamed, next_campaign_id=""), ["next_campaign_id"]
    )
    assert repaired.next_campaign_id == ""


async def test_a_stopped_campaign_may_be_updated_into_one_that_could_not_run(
    campaigns: Campaigns, customer: str
) -> None:
    c = await create(campaigns, customer, queue_id="")
    updated = await campaigns.update(
        dataclasses.replace(c, outplan_id="", actions=[]), ["outplan_id", "actions"]
    )
    assert updated.outplan_id == ""
    assert updated.actions == []


async def test_a_deleted_campaign_cannot_be_updated(campaigns: Campaigns, customer: str) -> None:
    c = await create(campaigns, customer)
    deleted = await campaigns.delete(customer, c.id, "")
    with pytest.raises(FailedPrecondition) as info:
        await campaigns.update(dataclasses.replace(deleted, name="zombie"), ["name"])
    assert info.value.reason == "CAMPAIGN_DELETED"
    assert await campaigns.get(customer, c.id) == deleted


# -- delete and undelete ------------------------------------------------------------------


async def test_delete_is_soft(campaigns: Campaigns, customer: str, clock: FakeClock) -> None:
    c = await create(campaigns, customer)
    clock.advance(3)
    deleted = await campaigns.delete(customer, c.id, c.etag)
    assert deleted.tm_delete == clock.now
    assert deleted.status == Status.STOP
    assert await campaigns.get(customer, c.id) == deleted
    assert await list_all(campaigns, ListFilter(customer)) == []
    assert await list_all(campaigns, ListFilter(customer, show_deleted=True)) == [c.id]


async def test_delete_again_returns_it_unchanged(
    campaigns: Campaigns, customer: str, clock: FakeClock
) -> None:
    c = await create(campaigns, customer)
    deleted = await campaigns.delete(customer, c.id, "")
    clock.advance(10)
    again = await campaigns.delete(customer, c.id, "")
    assert again == deleted
    again = await campaigns.delete(customer, c.id, deleted.etag)
    assert again == deleted
    assert len(await events(campaigns, customer)) == 2


@pytest.mark.parametrize("force", [False, True])
async def test_only_a_stopped_campaign_can_be_deleted(
    campaigns: Campaigns, customer: str, force: bool
) -> None:
    c = await run(campaigns, await create(campaigns, customer))
    with pytest.raises(FailedPrecondition) as info:
        await campaigns.delete(customer, c.id, "")
    assert info.value.reason == "CAMPAIGN_NOT_STOPPED"
    stopping = await stop(campaigns, c)
    assert stopping.status == Status.STOPPING
    with pytest.raises(FailedPrecondition):
        await campaigns.delete(customer, c.id, "")
    assert (await campaigns.get(customer, c.id)).tm_delete is None
    stopped = await stop(campaigns, c, force=True) if force else await drained(campaigns, c)
    assert (await campaigns.delete(customer, c.id, stopped.etag)).deleted


async def test_delete_with_a_stale_etag_is_aborted(campaigns: Campaigns, customer: str) -> None:
    c = await create(campaigns, customer)
    await campaigns.update(dataclasses.replace(c, name="newer"), ["name"])
    with pytest.raises(Aborted):
        await campaigns.delete(customer, c.id, c.etag)
    assert not (await campaigns.get(customer, c.id)).deleted


async def test_undelete_restores_it_as_stopped(
    campaigns: Campaigns, customer: str, clock: FakeClock
) -> None:
    c = await create(campaigns, customer)
    await campaigns.delete(customer, c.id, "")
    clock.advance(2)
    restored = await campaigns.undelete(customer, c.id)
    assert restored.tm_delete is None
    assert restored.status == Status.STOP
    assert restored.tm_update == clock.now
    assert await campaigns.get(customer, c.id) == restored
    assert await list_all(campaigns, ListFilter(customer)) == [c.id]
    # It is a campaign like any other again.
    assert (await run(campaigns, restored)).status == Status.RUN


async def test_undelete_of_a_live_campaign_returns_it_unchanged(
    campaigns: Campaigns, customer: str
) -> None:
    c = await create(campaigns, customer)
    assert await campaigns.undelete(customer, c.id) == c
    assert len(await events(campaigns, customer)) == 1


async def test_undelete_is_refused_when_the_outdial_belongs_to_another(
    campaigns: Campaigns, customer: str
) -> None:
    old = await create(campaigns, customer)
    deleted = await campaigns.delete(customer, old.id, "")
    new = await create(campaigns, customer, outdial_id=old.outdial_id)
    with pytest.raises(FailedPrecondition) as info:
        await campaigns.undelete(customer, old.id)
    assert info.value.reason == "OUTDIAL_IN_USE"
    assert new.id in info.value.violations[0].description
    assert await campaigns.get(customer, old.id) == deleted
    # Once the other one lets go, the undelete goes through.
    await campaigns.delete(customer, new.id, "")
    assert not (await campaigns.undelete(customer, old.id)).deleted


# -- the status lifecycle -----------------------------------------------------------------


async def test_run_checks_every_condition_at_once(campaigns: Campaigns, customer: str) -> None:
    c = await campaigns.create(Campaign(id="", customer_id=customer, type=CampaignType.CALL), "")
    with pytest.raises(FailedPrecondition) as info:
        await run(campaigns, c)
    assert info.value.reason == "RUN_CONDITIONS_UNMET"
    assert precondition_types(info.value) == [
        "OUTPLAN_MISSING",
        "OUTDIAL_MISSING",
        "NOTHING_TO_RUN",
    ]
    assert (await campaigns.get(customer, c.id)).status == Status.STOP
    assert len(await events(campaigns, customer)) == 1


async def test_run_with_a_queue_and_no_actions(campaigns: Campaigns, customer: str) -> None:
    c = await create(campaigns, customer, actions=[], queue_id=new_id())
    assert (await run(campaigns, c)).status == Status.RUN


async def test_run_rechecks_the_next_campaign(campaigns: Campaigns, customer: str) -> None:
    after = await create(campaigns, customer)
    c = await create(campaigns, customer, next_campaign_id=after.id)
    # Deleted while the campaign naming it was deleted too, which is then restored.
    await campaigns.delete(customer, c.id, "")
    await campaigns.delete(customer, after.id, "")
    await campaigns.undelete(customer, c.id)
    with pytest.raises(FailedPrecondition) as info:
        await run(campaigns, c)
    assert precondition_types(info.value) == ["NEXT_CAMPAIGN_INVALID"]
    await campaigns.undelete(customer, after.id)
    assert (await run(campaigns, c)).status == Status.RUN


async def test_a_deleted_campaign_cannot_run(campaigns: Campaigns, customer: str) -> None:
    c = await create(campaigns, customer)
    await campaigns.delete(customer, c.id, "")
    with pytest.raises(FailedPrecondition) as info:
        await run(campaigns, c)
    # As UpdateCampaign says of a deleted campaign.
    assert info.value.reason == "CAMPAIGN_DELETED"
    assert precondition_types(info.value) == ["CAMPAIGN_DELETED"]
    assert (await campaigns.get(customer, c.id)).status == Status.STOP


async def test_stop_on_a_deleted_campaign_is_a_no_op(campaigns: Campaigns, customer: str) -> None:
    c = await create(campaigns, customer)
    deleted = await campaigns.delete(customer, c.id, "")
    assert await stop(campaigns, c) == deleted


@pytest.mark.parametrize("status", [Status.UNSPECIFIED, Status.STOPPING, 7])
async def test_only_run_and_stop_may_be_requested(
    campaigns: Campaigns, customer: str, status: int
) -> None:
    c = await create(campaigns, customer)
    with pytest.raises(InvalidArgument) as info:
        await campaigns.set_status(customer, c.id, status, False)
    assert [v.field for v in info.value.violations] == ["status"]


async def test_run_stop_confirm_writes_one_event_per_transition(
    campaigns: Campaigns, customer: str, clock: FakeClock
) -> None:
    c = await create(campaigns, customer)
    clock.advance(1)
    running = await run(campaigns, c)
    assert running.status == Status.RUN
    assert running.tm_update == clock.now
    clock.advance(1)
    stopping = await stop(campaigns, c)
    assert stopping.status == Status.STOPPING
    assert stopping.stop_deadline == clock.now + 60_000_000
    assert stopping.stop_revision == stopping.revision
    clock.advance(1)
    # A second STOP only asks again: it changes nothing.
    assert await stop(campaigns, c) == stopping
    stopped = await drained(campaigns, c, stopping.stop_revision)
    assert stopped.status == Status.STOP
    assert stopped.stop_deadline is None
    assert stopped.stop_revision == stopping.stop_revision
    assert await campaigns.get(customer, c.id) == stopped

    evs = await events(campaigns, customer)
    assert transitions(evs) == [
        (Status.UNSPECIFIED, Status.STOP, Reason.CREATED),
        (Status.STOP, Status.RUN, Reason.REQUESTED),
        (Status.RUN, Status.STOPPING, Reason.REQUESTED),
        (Status.STOPPING, Status.STOP, Reason.DRAINED),
    ]
    assert all(e.campaign_id == c.id and e.customer_id == customer for e in evs)
    assert all(not e.deleted for e in evs)
    revisions = [e.revision for e in evs]
    assert revisions == sorted(revisions)
    assert len(set(revisions)) == 4
    assert stopped.revision == revisions[-1]
    assert [e.tm_event for e in evs] == [c.tm_create + i * 1_000_000 for i in range(4)]


async def test_a_late_confirmation_of_an_earlier_stop_completes_nothing(
    campaigns: Campaigns, customer: str
) -> None:
    c = await run(campaigns, await create(campaigns, customer))
    first = await stop(campaigns, c)
    await run(campaigns, c)
    second = await stop(campaigns, c)
    assert second.stop_revision > first.stop_revision
    # The dialer's confirmation of the first stop arrives now: the second still drains.
    with pytest.raises(FailedPrecondition) as info:
        await drained(campaigns, c, first.stop_revision)
    assert info.value.reason == "STOP_REVISION_MISMATCH"
    assert info.value.metadata["stop_revision"] == str(second.stop_revision)
    assert await campaigns.get(customer, c.id) == second
    done = await drained(campaigns, c, second.stop_revision)
    assert done.status == Status.STOP
    # Repeated (a retry after a lost reply), it changes nothing; the older one never does.
    assert await drained(campaigns, c, second.stop_revision) == done
    with pytest.raises(FailedPrecondition):
        await drained(campaigns, c, first.stop_revision)


async def test_a_confirmation_after_the_grace_expired_changes_nothing(
    campaigns: Campaigns, customer: str, clock: FakeClock
) -> None:
    c = await run(campaigns, await create(campaigns, customer))
    stopping = await stop(campaigns, c)
    clock.advance(61)
    assert await campaigns.expire_stops() == 1
    expired = await campaigns.get(customer, c.id)
    assert await drained(campaigns, c, stopping.stop_revision) == expired


async def test_confirming_a_campaign_that_is_not_stopping_is_refused(
    campaigns: Campaigns, customer: str
) -> None:
    idle = await create(campaigns, customer)
    running = await run(campaigns, await create(campaigns, customer))
    forced = await stop(
        campaigns, await run(campaigns, await create(campaigns, customer)), force=True
    )
    for c in (idle, running, forced):
        with pytest.raises(FailedPrecondition) as info:
            await campaigns.confirm_drained(customer, c.id, max(c.revision, 1))
        assert info.value.reason == "CAMPAIGN_NOT_STOPPING"
        assert await campaigns.get(customer, c.id) == c
    with pytest.raises(InvalidArgument) as invalid:
        await campaigns.confirm_drained(customer, running.id, 0)
    assert [v.field for v in invalid.value.violations] == ["stop_revision"]
    with pytest.raises(NotFound):
        await campaigns.confirm_drained(new_id(), running.id, running.revision)


async def test_a_status_change_with_a_stale_etag_is_aborted(
    campaigns: Campaigns, customer: str
) -> None:
    c = await create(campaigns, customer)
    running = await campaigns.set_status(customer, c.id, Status.RUN, False, c.etag)
    with pytest.raises(Aborted) as info:
        await campaigns.set_status(customer, c.id, Status.STOP, False, c.etag)
    assert info.value.metadata["etag"] == running.etag
    assert await campaigns.get(customer, c.id) == running
    stopping = await campaigns.set_status(customer, c.id, Status.STOP, False, running.etag)
    assert stopping.status == Status.STOPPING


async def test_forced_stop_skips_stopping(campaigns: Campaigns, customer: str) -> None:
    c = await run(campaigns, await create(campaigns, customer))
    stopped = await stop(campaigns, c, force=True)
    assert stopped.status == Status.STOP
    assert stopped.stop_deadline is None
    assert transitions(await events(campaigns, customer))[-1] == (
        Status.RUN,
        Status.STOP,
        Reason.REQUESTED,
    )


async def test_run_from_stopping_resumes(campaigns: Campaigns, customer: str) -> None:
    c = await run(campaigns, await create(campaigns, customer))
    await stop(campaigns, c)
    resumed = await run(campaigns, c)
    assert resumed.status == Status.RUN
    assert resumed.stop_deadline is None
    assert transitions(await events(campaigns, customer))[-1] == (
        Status.STOPPING,
        Status.RUN,
        Reason.REQUESTED,
    )
    # The old deadline no longer applies.
    assert await campaigns.next_stop_deadline() is None


async def test_no_op_requests_change_nothing_and_write_no_event(
    campaigns: Campaigns, customer: str, clock: FakeClock
) -> None:
    c = await create(campaigns, customer)
    clock.advance(1)
    assert await stop(campaigns, c) == c
    assert await stop(campaigns, c, force=True) == c
    running = await run(campaigns, c)
    clock.advance(1)
    assert await run(campaigns, c) == running
    assert len(await events(campaigns, customer)) == 2


async def test_stopping_expires_after_the_grace_and_not_before(
    campaigns: Campaigns, customer: str, clock: FakeClock
) -> None:
    c = await run(campaigns, await create(campaigns, customer))
    stopping = await stop(campaigns, c)
    assert await campaigns.next_stop_deadline() == stopping.stop_deadline

    clock.advance(59)
    assert await campaigns.expire_stops() == 0
    assert (await campaigns.get(customer, c.id)).status == Status.STOPPING

    clock.advance(2)
    assert await campaigns.expire_stops() == 1
    expired = await campaigns.get(customer, c.id)
    assert expired.status == Status.STOP
    assert expired.stop_deadline is None
    assert expired.tm_update == clock.now
    assert await campaigns.next_stop_deadline() is None
    assert await campaigns.expire_stops() == 0

    assert transitions(await events(campaigns, customer))[-2:] == [
        (Status.RUN, Status.STOPPING, Reason.REQUESTED),
        (Status.STOPPING, Status.STOP, Reason.GRACE_EXPIRED),
    ]


async def test_a_confirmed_stop_does_not_expire_again(
    campaigns: Campaigns, customer: str, clock: FakeClock
) -> None:
    c = await run(campaigns, await create(campaigns, customer))
    await stop(campaigns, c)
    await drained(campaigns, c)
    clock.advance(61)
    assert await campaigns.expire_stops() == 0
    assert len(await events(campaigns, customer)) == 4


async def test_expiry_completes_only_overdue_campaigns(
    campaigns: Campaigns, customer: str, clock: FakeClock
) -> None:
    early = await run(campaigns, await create(campaigns, customer))
    late = await run(campaigns, await create(campaigns, customer))
    await stop(campaigns, early)
    clock.advance(30)
    await stop(campaigns, late)
    clock.advance(31)
    assert await campaigns.expire_stops() == 1
    assert (await campaigns.get(customer, early.id)).status == Status.STOP
    assert (await campaigns.get(customer, late.id)).status == Status.STOPPING
    clock.advance(30)
    assert await campaigns.expire_stops() == 1
    assert (await campaigns.get(customer, late.id)).status == Status.STOP


async def test_a_stopping_deadline_survives_a_new_domain_on_the_same_file(
    campaigns: Campaigns, customer: str, clock: FakeClock, sqlite_url: str
) -> None:
    c = await run(campaigns, await create(campaigns, customer))
    stopping = await stop(campaigns, c)
    db = open_database(sqlite_url)
    store = Store(db)
    store.migrate()
    writer, readers = Writer(db, journal=store), Readers(db, 1)
    try:
        restarted = Campaigns(store, writer, readers, stop_grace_s=60, clock=clock)
        assert await restarted.next_stop_deadline() == stopping.stop_deadline
        clock.advance(61)
        assert await restarted.expire_stops() == 1
    finally:
        writer.close()
        readers.close()
        db.close()
    assert (await campaigns.get(customer, c.id)).status == Status.STOP


async def test_delete_and_undelete_write_events(campaigns: Campaigns, customer: str) -> None:
    c = await create(campaigns, customer)
    await campaigns.delete(customer, c.id, "")
    await campaigns.undelete(customer, c.id)
    evs = await events(campaigns, customer)
    assert [(e.reason, e.status, e.previous_status, e.deleted) for e in evs] == [
        (Reason.CREATED, Status.STOP, Status.UNSPECIFIED, False),
        (Reason.DELETED, Status.STOP, Status.STOP, True),
        (Reason.UNDELETED, Status.STOP, Status.STOP, False),
    ]


async def test_refused_requests_write_no_event(campaigns: Campaigns, customer: str) -> None:
    holder = await create(campaigns, customer)
    c = await run(campaigns, await create(campaigns, customer))
    before = await events(campaigns, customer)
    for attempt in (
        create(campaigns, customer, outdial_id=holder.outdial_id),
        campaigns.delete(customer, c.id, ""),
        campaigns.update(dataclasses.replace(c, outplan_id=""), ["outplan_id"]),
        campaigns.set_status(customer, new_id(), Status.RUN, False),
    ):
        with pytest.raises(CampaignError):
            await attempt
    assert await events(campaigns, customer) == before


async def test_events_can_be_read_per_campaign_and_after_a_revision(
    campaigns: Campaigns, customer: str
) -> None:
    a = await create(campaigns, customer)
    b = await create(campaigns, customer)
    await run(campaigns, a)
    await run(campaigns, b)
    only_a = await events(campaigns, customer, a.id)
    assert [e.campaign_id for e in only_a] == [a.id, a.id]
    all_events = await events(campaigns, customer)
    later = await campaigns.events_after(all_events[1].revision, customer, "", 100)
    assert later == all_events[2:]
    assert await campaigns.head_revision() == all_events[-1].revision


# -- concurrency ----------------------------------------------------------------------------


async def test_concurrent_runs_have_one_winner(campaigns: Campaigns, customer: str) -> None:
    c = await create(campaigns, customer)
    results = await asyncio.gather(*(run(campaigns, c) for _ in range(20)))
    assert all(r.status == Status.RUN for r in results)
    assert len({r.etag for r in results}) == 1
    assert transitions(await events(campaigns, customer)) == [
        (Status.UNSPECIFIED, Status.STOP, Reason.CREATED),
        (Status.STOP, Status.RUN, Reason.REQUESTED),
    ]


async def test_concurrent_stops_move_through_stopping_once(
    campaigns: Campaigns, customer: str
) -> None:
    c = await run(campaigns, await create(campaigns, customer))
    results = await asyncio.gather(*(stop(campaigns, c) for _ in range(20)))
    # The first moves to STOPPING; the rest find it stopping and change nothing: a double
    # click never skips the drain.
    assert {(r.status, r.etag) for r in results} == {(Status.STOPPING, results[0].etag)}
    assert (await campaigns.get(customer, c.id)).status == Status.STOPPING
    assert transitions(await events(campaigns, customer))[1:] == [
        (Status.STOP, Status.RUN, Reason.REQUESTED),
        (Status.RUN, Status.STOPPING, Reason.REQUESTED),
    ]


async def test_concurrent_run_and_delete_never_both_win(
    campaigns: Campaigns, customer: str
) -> None:
    for _ in range(5):
        c = await create(campaigns, customer, outdial_id=new_id())
        ran, deleted = await asyncio.gather(
            run(campaigns, c), campaigns.delete(customer, c.id, ""), return_exceptions=True
        )
        final = await campaigns.get(customer, c.id)
        assert not (final.status == Status.RUN and final.deleted)
        assert isinstance(ran, FailedPrecondition) or isinstance(deleted, FailedPrecondition)


async def test_concurrent_creates_with_one_id_have_one_winner(
    campaigns: Campaigns, customer: str
) -> None:
    chosen = new_id()
    results = await asyncio.gather(
        *(create(campaigns, customer, id=chosen) for _ in range(10)), return_exceptions=True
    )
    assert sum(isinstance(r, Campaign) for r in results) == 1
    assert sum(isinstance(r, AlreadyExists) for r in results) == 9


# -- listing --------------------------------------------------------------------------------


async def test_list_is_newest_first(campaigns: Campaigns, customer: str, clock: FakeClock) -> None:
    ids = []
    for _ in range(5):
        clock.advance(1)
        ids.append((await create(campaigns, customer)).id)
    page = await campaigns.list_page(ListFilter(customer), 0, "")
    assert [c.id for c in page.campaigns] == ids[::-1]
    assert page.next_page_token == ""


async def test_list_shows_only_the_customers_campaigns(campaigns: Campaigns, customer: str) -> None:
    mine = await create(campaigns, customer)
    await create(campaigns, new_id())
    assert await list_all(campaigns, ListFilter(customer)) == [mine.id]


async def test_page_walk_with_shared_timestamps_never_skips_or_repeats(
    campaigns: Campaigns, customer: str
) -> None:
    # The clock never moves: every campaign has the same tm_create.
    ids = [(await create(campaigns, customer, outdial_id="")).id for _ in range(23)]
    for size in (1, 2, 5, 22, 23, 24):
        assert await list_all(campaigns, ListFilter(customer), size) == ids[::-1], size


async def test_last_page_has_no_token(campaigns: Campaigns, customer: str) -> None:
    for _ in range(4):
        await create(campaigns, customer)
    first = await campaigns.list_page(ListFilter(customer), 2, "")
    assert len(first.campaigns) == 2
    assert first.next_page_token
    second = await campaigns.list_page(ListFilter(customer), 2, first.next_page_token)
    assert len(second.campaigns) == 2
    assert second.next_page_token == ""


async def test_campaigns_created_while_paging_are_not_repeated_nor_skip_others(
    campaigns: Campaigns, customer: str
) -> None:
    before = [(await create(campaigns, customer)).id for _ in range(10)]
    seen: list[str] = []
    token = ""
    while True:
        page = await campaigns.list_page(ListFilter(customer), 3, token)
        seen += [c.id for c in page.campaigns]
        await create(campaigns, customer)  # a newer campaign appears between pages
        if not page.next_page_token:
            break
        token = page.next_page_token
    assert seen == before[::-1]


async def test_campaigns_deleted_while_paging_do_not_shift_the_pages(
    campaigns: Campaigns, customer: str
) -> None:
    ids = [(await create(campaigns, customer)).id for _ in range(6)][::-1]
    first = await campaigns.list_page(ListFilter(customer), 3, "")
    assert [c.id for c in first.campaigns] == ids[:3]
    await campaigns.delete(customer, ids[0], "")
    await campaigns.delete(customer, ids[4], "")
    rest = await campaigns.list_page(ListFilter(customer), 3, first.next_page_token)
    assert [c.id for c in rest.campaigns] == [ids[3], ids[5]]


async def test_list_filters_by_status_and_type(campaigns: Campaigns, customer: str) -> None:
    call_stopped = await create(campaigns, customer, type=CampaignType.CALL)
    call_running = await run(campaigns, await create(campaigns, customer, type=CampaignType.CALL))
    flow_running = await run(campaigns, await create(campaigns, customer, type=CampaignType.FLOW))
    flow_stopping = await stop(
        campaigns, await run(campaigns, await create(campaigns, customer, type=CampaignType.FLOW))
    )

    async def ids(**f: Any) -> set[str]:
        return set(await list_all(campaigns, ListFilter(customer, **f), 2))

    assert await ids(status=Status.RUN) == {call_running.id, flow_running.id}
    assert await ids(status=Status.STOP) == {call_stopped.id}
    assert await ids(status=Status.STOPPING) == {flow_stopping.id}
    assert await ids(type=CampaignType.FLOW) == {flow_running.id, flow_stopping.id}
    assert await ids(type=CampaignType.CALL, status=Status.RUN) == {call_running.id}
    assert await ids() == {call_stopped.id, call_running.id, flow_running.id, flow_stopping.id}


async def test_list_hides_deleted_unless_asked(campaigns: Campaigns, customer: str) -> None:
    live = await create(campaigns, customer)
    gone = await create(campaigns, customer)
    await campaigns.delete(customer, gone.id, "")
    assert await list_all(campaigns, ListFilter(customer)) == [live.id]
    assert await list_all(campaigns, ListFilter(customer, show_deleted=True)) == [gone.id, live.id]
    stopped_with_deleted = ListFilter(customer, status=Status.STOP, show_deleted=True)
    assert await list_all(campaigns, stopped_with_deleted) == [gone.id, live.id]


async def test_page_size_zero_means_50_and_large_sizes_are_clamped(
    campaigns: Campaigns, customer: str
) -> None:
    for _ in range(51):
        await create(campaigns, customer, outdial_id="")
    default = await campaigns.list_page(ListFilter(customer), 0, "")
    assert len(default.campaigns) == 50
    assert default.next_page_token
    big = await campaigns.list_page(ListFilter(customer), 1_000_000, "")
    assert len(big.campaigns) == 51
    assert big.next_page_token == ""


async def test_page_size_above_1000_becomes_1000(
    campaigns: Campaigns, customer: str, sqlite_url: str
) -> None:
    # 1001 campaigns through the domain take seconds; rows written in one transaction
    # on the same file are as good for a listing.
    db = open_database(sqlite_url)
    try:
        store = Store(db)
        with db.atomic():
            for _ in range(1001):
                store.insert(runnable_draft(customer, id=new_id(), outdial_id=""), "")
    finally:
        db.close()
    page = await campaigns.list_page(ListFilter(customer), 5000, "")
    assert len(page.campaigns) == 1000
    assert page.next_page_token
    rest = await campaigns.list_page(ListFilter(customer), 5000, page.next_page_token)
    assert len(rest.campaigns) == 1
    assert {c.id for c in page.campaigns}.isdisjoint({rest.campaigns[0].id})


async def test_negative_page_size_is_invalid(campaigns: Campaigns, customer: str) -> None:
    with pytest.raises(InvalidArgument) as info:
        await campaigns.list_page(ListFilter(customer), -1, "")
    assert [v.field for v in info.value.violations] == ["page_size"]


async def test_a_token_used_with_other_filters_is_invalid(
    campaigns: Campaigns, customer: str
) -> None:
    for _ in range(3):
        await create(campaigns, customer)
    page = await campaigns.list_page(ListFilter(customer), 1, "")
    for other in (
        ListFilter(customer, status=Status.STOP),
        ListFilter(customer, show_deleted=True),
        ListFilter(customer, type=CampaignType.CALL),
        ListFilter(new_id()),
    ):
        with pytest.raises(InvalidArgument) as info:
            await campaigns.list_page(other, 1, page.next_page_token)
        assert info.value.reason == "INVALID_PAGE_TOKEN"
    with pytest.raises(InvalidArgument) as info:
        await campaigns.list_page(ListFilter(customer), 1, "garbage")
    assert info.value.reason == "INVALID_PAGE_TOKEN"
    # The page size may change between pages.
    rest = await campaigns.list_page(ListFilter(customer), 10, page.next_page_token)
    assert len(rest.campaigns) == 2
