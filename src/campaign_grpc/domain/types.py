"""The domain's own vocabulary: plain values that know nothing of gRPC or storage."""

from __future__ import annotations

import enum
import hashlib
from dataclasses import dataclass, field
from typing import Any

# The numbers match campaign.v1 so that conversion is a cast, not a table.


class CampaignType(enum.IntEnum):
    UNSPECIFIED = 0
    CALL = 1
    FLOW = 2


class Status(enum.IntEnum):
    UNSPECIFIED = 0
    STOP = 1
    STOPPING = 2
    RUN = 3


class EndHandle(enum.IntEnum):
    UNSPECIFIED = 0
    STOP = 1
    CONTINUE = 2


class Reason(enum.IntEnum):
    """Why an event was written; the numbers match WatchStatusResponse.Reason."""

    UNSPECIFIED = 0
    CREATED = 1
    REQUESTED = 2
    GRACE_EXPIRED = 3
    DELETED = 4
    UNDELETED = 5
    FINISHED = 6
    CHAINED = 7
    OUTDIAL_EXHAUSTED = 8
    DRAINED = 9
    UPDATED = 10
    LEASE_GRANTED = 11
    LEASE_RELEASE_REQUESTED = 12
    LEASE_RELEASED = 13
    LEASE_EXPIRED = 14
    LEASE_REVOKED = 15


# The changes of a campaign's lease, not of the campaign: sent to a watch that asks for them.
LEASE_REASONS = frozenset(
    {
        Reason.LEASE_GRANTED,
        Reason.LEASE_RELEASE_REQUESTED,
        Reason.LEASE_RELEASED,
        Reason.LEASE_EXPIRED,
        Reason.LEASE_REVOKED,
    }
)


class NextCampaignResult(enum.IntEnum):
    """What became of the next campaign when a finished one completed; numbers as in
    WatchStatusResponse.NextCampaignResult."""

    UNSPECIFIED = 0
    STARTED = 1
    ALREADY_RUNNING = 2
    NOT_FOUND = 3
    RUN_CONDITIONS_UNMET = 4


@dataclass(slots=True)
class Action:
    id: str
    next_id: str
    type: str
    option: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class Campaign:
    id: str
    customer_id: str
    type: CampaignType
    name: str = ""
    detail: str = ""
    status: Status = Status.STOP
    service_level: int = 0
    end_handle: EndHandle = EndHandle.STOP
    actions: list[Action] = field(default_factory=list)
    outplan_id: str = ""
    outdial_id: str = ""
    queue_id: str = ""
    next_campaign_id: str = ""
    # Timestamps are integer microseconds since the Unix epoch, UTC.
    tm_create: int = 0
    tm_update: int | None = None
    tm_delete: int | None = None
    version: int = 1
    # The revision of the last event about this campaign.
    revision: int = 0
    # When a STOPPING campaign becomes STOP by itself.
    stop_deadline: int | None = None
    # STOPPING because its outdial list ran out: completing the stop starts the next one.
    finishing: bool = False
    # The revision of the change that began the current (or last completed) stop; 0 while
    # running or never stopped through STOPPING. ConfirmDrained must name it.
    stop_revision: int = 0
    # The revision of the change that set the fields UpdateCampaign changes (the "body"):
    # an event refers to the body it was written with, so the full view can show it.
    body_revision: int = 0
    # Why the last event about this campaign was written.
    last_reason: Reason = Reason.UNSPECIFIED

    @property
    def deleted(self) -> bool:
        return self.tm_delete is not None

    @property
    def etag(self) -> str:
        # Opaque on purpose: clients compare it, they never compute with it. It names one
        # content: a version and the microsecond it was written at. A database restored from
        # an older backup, or made anew, may give the same version number to other contents,
        # but not at the same microsecond, so an etag read before never matches them.
        written = self.tm_create if self.tm_update is None else self.tm_update
        key = f"{self.customer_id}/{self.id}/{self.version}/{written}".encode()
        return hashlib.blake2b(key, digest_size=8).hexdigest()


# The fields UpdateCampaign may change; everything else is fixed or output only.
UPDATABLE_FIELD_ORDER = (
    "type",
    "name",
    "detail",
    "service_level",
    "end_handle",
    "actions",
    "outplan_id",
    "outdial_id",
    "queue_id",
    "next_campaign_id",
)
UPDATABLE_FIELDS = frozenset(UPDATABLE_FIELD_ORDER)


@dataclass(slots=True, frozen=True)
class Origin:
    """Who makes a change, and the trace context of the request that does (W3C traceparent,
    empty when the server does not trace)."""

    principal: str = "anonymous"
    traceparent: str = ""


ANONYMOUS = Origin()
# What the service does by itself: a stop grace that runs out, a chained start.
SERVICE = Origin("service")


@dataclass(slots=True, frozen=True)
class Event:
    """One committed change in the event log, with the campaign's state after it."""

    revision: int
    customer_id: str
    campaign_id: str
    status: Status
    previous_status: Status
    deleted: bool
    reason: Reason
    tm_event: int
    # On the completion of a finished campaign: the next campaign the chain tried to start.
    next_campaign_id: str = ""
    # On a chained start: the finished campaign that started this one.
    chained_from: str = ""
    detail: str = ""
    # The campaign's state after the change, for the full view (see Campaign).
    version: int = 0
    tm_update: int | None = None
    tm_delete: int | None = None
    stop_revision: int = 0
    body_revision: int = 0
    next_campaign_result: NextCampaignResult = NextCampaignResult.UNSPECIFIED
    unmet_run_conditions: tuple[str, ...] = ()
    principal: str = ""
    traceparent: str = ""
    # With a LEASE_REASONS reason: the lease's holder and fencing token.
    lease_holder: str = ""
    fencing_token: int = 0
    # The whole campaign as of this revision, when it is at hand: attached by the writer to
    # the events it logs, or read back with them for the full view. Never stored as such.
    campaign: Campaign | None = field(default=None, compare=False, repr=False)


def stamp_change(
    c: Campaign,
    revision: int,
    previous_status: Status,
    reason: Reason,
    now: int,
    *,
    next_campaign_id: str = "",
    chained_from: str = "",
    detail: str = "",
    next_campaign_result: NextCampaignResult = NextCampaignResult.UNSPECIFIED,
    unmet_run_conditions: tuple[str, ...] = (),
    begins_stop: bool = False,
    new_body: bool = False,
    origin: Origin = ANONYMOUS,
) -> Event:
    """The event that logs c's change at revision, c carried with it. c takes the revision
    and the reason, and with begins_stop its stop_revision, with new_body its body_revision,
    becomes this revision: a stop or a body is known by the revision of the change that made
    it."""
    c.revision = revision
    c.last_reason = reason
    if begins_stop:
        c.stop_revision = revision
    if new_body:
        c.body_revision = revision
    return Event(
        revision=revision,
        customer_id=c.customer_id,
        campaign_id=c.id,
        status=c.status,
        previous_status=previous_status,
        deleted=c.deleted,
        reason=reason,
        tm_event=now,
        next_campaign_id=next_campaign_id,
        chained_from=chained_from,
        detail=detail,
        version=c.version,
        tm_update=c.tm_update,
        tm_delete=c.tm_delete,
        stop_revision=c.stop_revision,
        body_revision=c.body_revision,
        next_campaign_result=next_campaign_result,
        unmet_run_conditions=unmet_run_conditions,
        principal=origin.principal,
        traceparent=origin.traceparent,
        campaign=c,
    )


@dataclass(slots=True, frozen=True)
class ListFilter:
    customer_id: str
    status: Status = Status.UNSPECIFIED
    type: CampaignType = CampaignType.UNSPECIFIED
    show_deleted: bool = False


@dataclass(slots=True, frozen=True)
class EncodedCampaign:
    """A listed campaign as the bytes of its message, which the wire's cache held already: a
    page of them was found without decoding a row (a campaign of 1,000 actions costs the
    interpreter far more to decode than its bytes to copy, and as much again to encode)."""

    customer_id: str
    id: str
    data: bytes


@dataclass(slots=True, frozen=True)
class Page:
    campaigns: list[Campaign | EncodedCampaign]
    next_page_token: str


@dataclass(slots=True, frozen=True)
class EventFilter:
    """A listing of events: a customer's, or one campaign's of it."""

    customer_id: str
    campaign_id: str = ""


@dataclass(slots=True, frozen=True)
class EventPage:
    events: list[Event]
    next_page_token: str


@dataclass(slots=True, frozen=True)
class CampaignState:
    """What the status view of a watch snapshot sends of a campaign: no actions, no body."""

    customer_id: str
    id: str
    status: Status
    deleted: bool
    revision: int
    stop_revision: int
    # When the campaign last changed (its creation, if never since).
    tm_event: int
