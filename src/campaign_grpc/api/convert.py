"""Conversion between campaign.v1 messages and the domain's values."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, cast

from google.protobuf import duration_pb2, struct_pb2, timestamp_pb2

from campaign_grpc_client.v1 import campaign_pb2 as pb

from ..domain.types import (
    LEASE_REASONS,
    Action,
    Campaign,
    CampaignType,
    EndHandle,
    Event,
    ListFilter,
    Status,
)
from ..storage.versions import Key, VersionCache, version_key
from ..watch.items import Item, Kind


def _timestamp(us: int) -> timestamp_pb2.Timestamp:
    seconds, micros = divmod(us, 1_000_000)
    return timestamp_pb2.Timestamp(seconds=seconds, nanos=micros * 1000)


def _value_to_python(value: struct_pb2.Value) -> Any:
    # Not json_format: it raises on NaN and Infinity, which validation names instead.
    match value.WhichOneof("kind"):
        case "struct_value":
            return _option_to_dict(value.struct_value)
        case "list_value":
            return [_value_to_python(v) for v in value.list_value.values]
        case "number_value":
            return value.number_value
        case "string_value":
            return value.string_value
        case "bool_value":
            return value.bool_value
    return None


def _option_to_dict(option: struct_pb2.Struct) -> dict[str, Any]:
    return {key: _value_to_python(value) for key, value in option.fields.items()}


def _option_to_struct(option: dict[str, Any]) -> struct_pb2.Struct:
    s = struct_pb2.Struct()
    if option:
        s.update(option)
    return s


def campaign_from_proto(m: pb.Campaign) -> Campaign:
    # Enum numbers are kept as sent, unknown ones included, for validation to name them.
    return Campaign(
        id=m.id,
        customer_id=m.customer_id,
        type=cast(CampaignType, m.type),
        name=m.name,
        detail=m.detail,
        service_level=m.service_level,
        end_handle=cast(EndHandle, m.end_handle),
        actions=[
            Action(
                a.id, a.next_id, a.type, _option_to_dict(a.option) if a.HasField("option") else {}
            )
            for a in m.actions
        ],
        outplan_id=m.outplan_id,
        outdial_id=m.outdial_id,
        queue_id=m.queue_id,
        next_campaign_id=m.next_campaign_id,
    )


def list_filter_from_proto(m: pb.ListCampaignsRequest) -> ListFilter:
    return ListFilter(
        customer_id=m.customer_id,
        status=cast(Status, m.status),
        type=cast(CampaignType, m.type),
        show_deleted=m.show_deleted,
    )


def _set_time(target: timestamp_pb2.Timestamp, us: int) -> None:
    seconds, micros = divmod(us, 1_000_000)
    target.seconds = seconds
    target.nanos = micros * 1000


def fill_campaign(m: pb.Campaign, c: Campaign) -> None:
    """Writes c into the empty message m where it lies, a field of its response, say: no
    message of its own to build, then copy in."""
    m.id = c.id
    m.customer_id = c.customer_id
    m.type = cast(pb.Campaign.Type.ValueType, int(c.type))
    m.name = c.name
    m.detail = c.detail
    m.status = cast(pb.Campaign.Status.ValueType, int(c.status))
    m.service_level = c.service_level
    m.end_handle = cast(pb.Campaign.EndHandle.ValueType, int(c.end_handle))
    m.outplan_id = c.outplan_id
    m.outdial_id = c.outdial_id
    m.queue_id = c.queue_id
    m.next_campaign_id = c.next_campaign_id
    m.etag = c.etag
    m.stop_revision = c.stop_revision
    _set_time(m.tm_create, c.tm_create)
    if c.tm_update is not None:
        _set_time(m.tm_update, c.tm_update)
    if c.tm_delete is not None:
        _set_time(m.tm_delete, c.tm_delete)
    _fill_actions(m, c.actions)


def _fill_actions(m: pb.Campaign, actions: Sequence[Action]) -> None:
    add = m.actions.add
    for a in actions:
        action = add(id=a.id, next_id=a.next_id, type=a.type)
        action.option.SetInParent()
        if a.option:
            action.option.update(a.option)


def campaign_to_proto(c: Campaign) -> pb.Campaign:
    m = pb.Campaign()
    fill_campaign(m, c)
    return m


def _encoded(c: Campaign) -> tuple[bytes, int]:
    data = campaign_to_proto(c).SerializeToString()
    return data, len(data)


class CampaignWire:
    """Campaign messages, serialized once per version of a campaign and reused after, in a
    cache of budget_bytes. Any thread may use it."""

    def __init__(self, budget_bytes: int = 32 * 1024 * 1024) -> None:
        self.cache: VersionCache[bytes] = VersionCache(budget_bytes)

    def serialized(self, c: Campaign) -> bytes:
        return self.cache.get(version_key(c), lambda: _encoded(c))

    def size(self, c: Campaign) -> int:
        """The bytes of c's message (serializing it for later, if it was not)."""
        return len(self.serialized(c))

    def fill(self, target: pb.Campaign, c: Campaign) -> None:
        target.MergeFromString(self.serialized(c))

    def cached(self, key: Key) -> bytes | None:
        return self.cache.peek(key)

    def keep(self, key: Key, data: bytes) -> None:
        self.cache.put(key, data, len(data))

    def actions(self, actions: Sequence[Action]) -> bytes:
        """The actions as a Campaign message encodes them, tags included, to be stored."""
        m = pb.Campaign()
        _fill_actions(m, actions)
        return m.SerializeToString()

    def message(self, c: Campaign, actions: bytes) -> bytes:
        """The message of c, read without its actions, with the stored actions appended:
        protobuf parsers take a message's fields in any order, and the elements of a repeated
        field wherever they come (protobuf's encoding guide, on field order)."""
        return campaign_to_proto(c).SerializeToString() + actions


@dataclass(frozen=True, slots=True)
class EncodedPage:
    """A ListCampaignsResponse made of its campaigns' encoded messages (as CampaignWire
    keeps them) and the token: page_to_wire sends them as they are, where building the
    message would decode a page of up to a megabyte on the event loop only to encode it
    again."""

    campaigns: list[bytes]
    next_page_token: str


def _varint(n: int) -> bytes:
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _length_delimited_tag(field_number: int) -> bytes:
    return _varint(field_number << 3 | 2)


_CAMPAIGNS_TAG = _length_delimited_tag(pb.ListCampaignsResponse.CAMPAIGNS_FIELD_NUMBER)
_TOKEN_TAG = _length_delimited_tag(pb.ListCampaignsResponse.NEXT_PAGE_TOKEN_FIELD_NUMBER)


def page_to_wire(page: EncodedPage) -> bytes:
    """ListCampaigns' response serializer: the page's bytes, as protobuf encodes the message
    (a repeated message field is each element's bytes behind its tag and length)."""
    parts: list[bytes] = []
    for data in page.campaigns:
        parts += (_CAMPAIGNS_TAG, _varint(len(data)), data)
    if page.next_page_token:
        token = page.next_page_token.encode()
        parts += (_TOKEN_TAG, _varint(len(token)), token)
    return b"".join(parts)


def _status(value: Status) -> pb.Campaign.Status.ValueType:
    return cast(pb.Campaign.Status.ValueType, int(value))


_NEXT_RESULT = pb.WatchStatusResponse.NextCampaignResult


def fill_event(m: pb.WatchStatusResponse, e: Event, *, full: bool = False) -> None:
    """Writes e, a KIND_CHANGE, into the empty message m (with its campaign, with full)."""
    m.kind = pb.WatchStatusResponse.KIND_CHANGE
    m.customer_id = e.customer_id
    m.campaign_id = e.campaign_id
    m.status = _status(e.status)
    m.previous_status = _status(e.previous_status)
    m.deleted = e.deleted
    m.revision = e.revision
    _set_time(m.tm_event, e.tm_event)
    m.reason = cast(pb.WatchStatusResponse.Reason.ValueType, int(e.reason))
    m.next_campaign_id = e.next_campaign_id
    m.chained_from_campaign_id = e.chained_from
    m.detail = e.detail
    m.stop_revision = e.stop_revision
    m.next_campaign_result = cast(_NEXT_RESULT.ValueType, int(e.next_campaign_result))
    m.unmet_run_conditions.extend(e.unmet_run_conditions)
    m.principal = e.principal
    m.traceparent = e.traceparent
    if e.reason in LEASE_REASONS:
        m.lease.customer_id = e.customer_id
        m.lease.campaign_id = e.campaign_id
        m.lease.holder = e.lease_holder
        m.lease.fencing_token = e.fencing_token
    if full:
        assert e.campaign is not None, "a full-view change is read with its campaign"
        fill_campaign(m.campaign, e.campaign)


def event_to_proto(e: Event, *, full: bool = False) -> pb.WatchStatusResponse:
    m = pb.WatchStatusResponse()
    fill_event(m, e, full=full)
    return m


def encode_item(item: Item) -> bytes:
    return item_to_proto(item).SerializeToString()


def item_to_wire(item: Item) -> bytes:
    """WatchStatus's response serializer: the payload the hub encoded once for every stream
    that sends the item, or the item's own encoding (a snapshot, a replayed change)."""
    return item.payload if item.payload is not None else encode_item(item)


def _duration(seconds: float) -> duration_pb2.Duration:
    d = duration_pb2.Duration()
    d.FromNanoseconds(round(seconds * 1e9))
    return d


def item_to_proto(item: Item) -> pb.WatchStatusResponse:
    m = _item_to_proto(item)
    m.timeline = item.timeline
    return m


def _item_to_proto(item: Item) -> pb.WatchStatusResponse:
    if item.event is not None:
        return event_to_proto(item.event, full=item.full)
    if item.state is not None:
        s = item.state
        return pb.WatchStatusResponse(
            kind=pb.WatchStatusResponse.KIND_SNAPSHOT,
            customer_id=s.customer_id,
            campaign_id=s.id,
            status=_status(s.status),
            deleted=s.deleted,
            revision=item.revision,
            tm_event=_timestamp(s.tm_event),
            stop_revision=s.stop_revision,
        )
    if item.campaign is not None:
        c = item.campaign
        m = pb.WatchStatusResponse(
            kind=pb.WatchStatusResponse.KIND_SNAPSHOT,
            customer_id=c.customer_id,
            campaign_id=c.id,
            status=_status(c.status),
            deleted=c.deleted,
            revision=item.revision,
            tm_event=_timestamp(c.tm_update or c.tm_create),
            stop_revision=c.stop_revision,
        )
        fill_campaign(m.campaign, c)
        return m
    kind = (
        pb.WatchStatusResponse.KIND_SNAPSHOT_END
        if item.kind == Kind.SNAPSHOT_END
        else pb.WatchStatusResponse.KIND_HEARTBEAT
    )
    m = pb.WatchStatusResponse(kind=kind, revision=item.revision)
    if item.heartbeat_interval:
        m.heartbeat_interval.CopyFrom(_duration(item.heartbeat_interval))
    return m


# For the other services' messages.
to_duration = _duration


def set_timestamp(ts: timestamp_pb2.Timestamp, micros: int) -> None:
    _set_time(ts, micros)
