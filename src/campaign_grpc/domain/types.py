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
class Event:
    """One committed change in the event log."""

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


@dataclass(slots=True, frozen=True)
class ListFilter:
    customer_id: str
    status: Status = Status.UNSPECIFIED
    type: CampaignType = CampaignType.UNSPECIFIED
    show_deleted: bool = False


@dataclass(slots=True, frozen=True)
class Page:
    campaigns: list[Campaign]
    next_page_token: str


@dataclass(slots=True, frozen=True)
class Snapshot:
    """The campaigns a watch starts from and the log revision they reflect."""

    campaigns: list[Campaign]
    revision: int
