"""The rows the store reads, as named records, and how they become the domain's objects.

A record's fields are the columns its statements select, in that order: a statement is built
from `Record._fields`, and its rows read back with `Record._make(row)`.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any, NamedTuple

from ..domain.json_text import compact_json
from ..domain.types import (
    Action,
    Campaign,
    CampaignState,
    CampaignType,
    EndHandle,
    Event,
    NextCampaignResult,
    Reason,
    Status,
)
from .schema import BODY_COLUMNS
from .versions import Key


class CampaignRow(NamedTuple):
    """Every campaign read: the campaign's columns, then its seq (the list order)."""

    customer_id: str
    id: str
    type: int
    name: str
    detail: str
    status: int
    service_level: int
    end_handle: int
    actions: str
    outplan_id: str
    outdial_id: str
    queue_id: str
    next_campaign_id: str
    tm_create: int
    tm_update: int | None
    tm_delete: int | None
    version: int
    revision: int
    stop_deadline: int | None
    finishing: Any
    stop_revision: int
    body_revision: int
    last_reason: int
    seq: int


class ListedKey(NamedTuple):
    """What a list page reads first: enough to find each campaign in the caches. On
    PostgreSQL also the stored size of its actions (see Listing._list_query)."""

    customer_id: str
    id: str
    version: int
    tm_create: int
    tm_update: int | None
    seq: int
    stored_size: int | None = None


class StateRow(NamedTuple):
    """What the status view of a snapshot reads of a campaign."""

    customer_id: str
    id: str
    status: int
    tm_delete: int | None
    revision: int
    stop_revision: int
    tm_create: int
    tm_update: int | None


class EventRow(NamedTuple):
    revision: int
    customer_id: str
    campaign_id: str
    status: int
    previous_status: int
    deleted: Any
    reason: int
    tm_event: int
    next_campaign_id: str
    chained_from: str
    detail: str
    version: int
    tm_update: int | None
    tm_delete: int | None
    stop_revision: int
    body_revision: int
    next_campaign_result: int
    unmet_run_conditions: str
    principal: str
    traceparent: str
    lease_holder: str
    fencing_token: int


class BodyRow(NamedTuple):
    """A campaign's body: what an update may change (schema.BODY_COLUMNS)."""

    type: int
    name: str
    detail: str
    service_level: int
    end_handle: int
    actions: str
    outplan_id: str
    outdial_id: str
    queue_id: str
    next_campaign_id: str


assert BodyRow._fields == BODY_COLUMNS

# The columns of every campaign read, and what save() writes: everything but the key,
# tm_create, seq and request_id.
CAMPAIGN_COLUMNS: tuple[str, ...] = CampaignRow._fields
MUTABLE_COLUMNS = (
    *CAMPAIGN_COLUMNS[2:13],
    *CAMPAIGN_COLUMNS[14:23],
    "actions_wire",
    "actions_wire_body",
)
# What a lifecycle change (status, deletion) writes: the rest of the campaign stays as it is.
STATE_COLUMNS = (
    "status",
    "stop_deadline",
    "finishing",
    "tm_update",
    "tm_delete",
    "version",
    "revision",
    "stop_revision",
    "last_reason",
)
EVENT_COLUMNS: tuple[str, ...] = EventRow._fields
STATE_VIEW_COLUMNS: tuple[str, ...] = StateRow._fields
LISTED_KEY_COLUMNS: tuple[str, ...] = ListedKey._fields[:-1]

_TYPES = {int(t): t for t in CampaignType}
_STATUSES = {int(s): s for s in Status}
_END_HANDLES = {int(e): e for e in EndHandle}
_REASONS = {int(r): r for r in Reason}
_RESULTS = {int(r): r for r in NextCampaignResult}

# What a decoded campaign costs in memory, estimated from its actions' JSON text: a few times
# the text (as tracemalloc shows, more for options that are lists of small numbers than for
# options of a few strings, the README's sizing), plus the rest of the campaign.
_DECODED_BASE = 512
_DECODED_PER_JSON_BYTE = 4


def actions_to_json(actions: Iterable[Action]) -> str:
    return compact_json(
        [{"id": a.id, "next_id": a.next_id, "type": a.type, "option": a.option} for a in actions]
    )


def actions_from_json(text: str) -> list[Action]:
    return [Action(a["id"], a["next_id"], a["type"], a["option"]) for a in json.loads(text)]


def to_campaign(row: CampaignRow, actions: list[Action] | None = None) -> Campaign:
    return Campaign(
        customer_id=row.customer_id,
        id=row.id,
        type=_TYPES[row.type],
        name=row.name,
        detail=row.detail,
        status=_STATUSES[row.status],
        service_level=row.service_level,
        end_handle=_END_HANDLES[row.end_handle],
        actions=actions_from_json(row.actions) if actions is None else actions,
        outplan_id=row.outplan_id,
        outdial_id=row.outdial_id,
        queue_id=row.queue_id,
        next_campaign_id=row.next_campaign_id,
        tm_create=row.tm_create,
        tm_update=row.tm_update,
        tm_delete=row.tm_delete,
        version=row.version,
        revision=row.revision,
        stop_deadline=row.stop_deadline,
        finishing=bool(row.finishing),
        stop_revision=row.stop_revision,
        body_revision=row.body_revision,
        last_reason=_REASONS[row.last_reason],
    )


def row_key(row: CampaignRow | ListedKey) -> Key:
    """A campaign row's cache key: its customer, id, version and the time of that version."""
    return (
        row.customer_id,
        row.id,
        row.version,
        row.tm_create if row.tm_update is None else row.tm_update,
    )


def decoded_size(row: CampaignRow) -> int:
    return _DECODED_BASE + _DECODED_PER_JSON_BYTE * len(row.actions)


def to_state(row: StateRow) -> CampaignState:
    return CampaignState(
        customer_id=row.customer_id,
        id=row.id,
        status=_STATUSES[row.status],
        deleted=row.tm_delete is not None,
        revision=row.revision,
        stop_revision=row.stop_revision,
        tm_event=row.tm_update or row.tm_create,
    )


def to_event(row: EventRow, campaign: Campaign | None = None) -> Event:
    return Event(
        revision=row.revision,
        customer_id=row.customer_id,
        campaign_id=row.campaign_id,
        status=_STATUSES[row.status],
        previous_status=_STATUSES[row.previous_status],
        deleted=bool(row.deleted),
        reason=_REASONS[row.reason],
        tm_event=row.tm_event,
        next_campaign_id=row.next_campaign_id,
        chained_from=row.chained_from,
        detail=row.detail,
        version=row.version,
        tm_update=row.tm_update,
        tm_delete=row.tm_delete,
        stop_revision=row.stop_revision,
        body_revision=row.body_revision,
        next_campaign_result=_RESULTS[row.next_campaign_result],
        unmet_run_conditions=tuple(row.unmet_run_conditions.split(","))
        if row.unmet_run_conditions
        else (),
        principal=row.principal,
        traceparent=row.traceparent,
        lease_holder=row.lease_holder,
        fencing_token=row.fencing_token,
        campaign=campaign,
    )


# A full-view event row: the event's columns, then the campaign's tm_create, its
# body_revision and body, then the revision and body of the superseded body the event refers
# to, if any (see EventLog._event_select).
_EVENT_END = len(EventRow._fields)
_BODY_START = _EVENT_END + 2
_SUPERSEDED_START = _BODY_START + len(BodyRow._fields) + 1


def to_full_event(row: tuple[Any, ...]) -> Event:
    """An event with the campaign as of its revision: the campaign's current body when the
    event was written with it, else the superseded one it refers to."""
    e = EventRow._make(row[:_EVENT_END])
    tm_create, current_body_revision = row[_EVENT_END], row[_EVENT_END + 1]
    superseded_revision = row[_SUPERSEDED_START - 1]
    if e.body_revision == current_body_revision:
        body = BodyRow._make(row[_BODY_START : _SUPERSEDED_START - 1])
    elif superseded_revision is not None:
        body = BodyRow._make(row[_SUPERSEDED_START:])
    else:
        raise AssertionError(f"event {e.revision} refers to a body the store no longer holds")
    # The campaign as a row of it reads, with the state the event recorded.
    as_of = CampaignRow(
        customer_id=e.customer_id,
        id=e.campaign_id,
        type=body.type,
        name=body.name,
        detail=body.detail,
        status=e.status,
        service_level=body.service_level,
        end_handle=body.end_handle,
        actions=body.actions,
        outplan_id=body.outplan_id,
        outdial_id=body.outdial_id,
        queue_id=body.queue_id,
        next_campaign_id=body.next_campaign_id,
        tm_create=tm_create,
        tm_update=e.tm_update,
        tm_delete=e.tm_delete,
        version=e.version,
        revision=e.revision,
        stop_deadline=None,
        finishing=False,
        stop_revision=e.stop_revision,
        body_revision=e.body_revision,
        last_reason=e.reason,
        seq=0,
    )
    return to_event(e, to_campaign(as_of))
