"""Request validation: pure functions that list every bad field at once."""

from __future__ import annotations

import enum
import math
import re
from collections.abc import Callable, Sequence

from .errors import FieldViolation, InvalidArgument
from .json_text import compact_json
from .types import (
    UPDATABLE_FIELD_ORDER,
    UPDATABLE_FIELDS,
    Action,
    Campaign,
    CampaignType,
    EndHandle,
    Status,
)

MAX_NAME = 255
MAX_DETAIL = 4096
MAX_ACTIONS = 1000
MAX_OPTION_BYTES = 64 * 1024
MAX_PAGE_SIZE = 1000
DEFAULT_PAGE_SIZE = 50
# The details of an error travel in the response trailers, which clients cap (8 KiB by
# default, and a larger status is lost): report this many violations and count the rest.
MAX_REPORTED_VIOLATIONS = 20
# Bytes of a quoted value: one character may take ten (repr spells "\U000e0001" in full).
MAX_SHOWN_VALUE = 40

ACTION_TYPES = frozenset(
    {
        "amd",
        "answer",
        "ai_summary",
        "ai_talk",
        "ai_task",
        "beep",
        "block",
        "branch",
        "call",
        "case_create",
        "condition_call_digits",
        "condition_call_status",
        "condition_datetime",
        "condition_variable",
        "confbridge_join",
        "conference_join",
        "connect",
        "conversation_send",
        "digits_receive",
        "digits_send",
        "echo",
        "email_send",
        "empty",
        "external_media_start",
        "external_media_stop",
        "fetch",
        "fetch_flow",
        "goto",
        "hangup",
        "message_send",
        "mute",
        "play",
        "queue_join",
        "recording_start",
        "recording_stop",
        "sleep",
        "stop",
        "stream_echo",
        "talk",
        "transcribe_start",
        "transcribe_stop",
        "transcribe_recording",
        "variable_set",
        "webhook_send",
    }
)

_NOT_UUID = "must be a canonical lowercase UUID"
_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
# A timeline token as the server makes them (see storage.timelines).
_TIMELINE = re.compile(r"[0-9a-f]{16}")


def is_uuid(value: str) -> bool:
    return _UUID.fullmatch(value) is not None


def check_uuid(path: str, value: str, *, required: bool) -> list[FieldViolation]:
    if not value:
        return [FieldViolation(path, "is required")] if required else []
    if not is_uuid(value):
        return [FieldViolation(path, _NOT_UUID)]
    return []


def _quoted_size(value: str) -> int:
    return len(repr(value).encode()) - 2


def shown(value: str) -> str:
    """A caller's value quoted in a description, cut short so that the error stays small."""
    if _quoted_size(value) <= MAX_SHOWN_VALUE:
        return repr(value)
    cut = value[:MAX_SHOWN_VALUE]
    while _quoted_size(cut) > MAX_SHOWN_VALUE:
        cut = cut[:-1]
    return repr(cut) + "..."


def raise_if(violations: Sequence[FieldViolation]) -> None:
    if violations:
        omitted = max(0, len(violations) - MAX_REPORTED_VIOLATIONS)
        raise InvalidArgument(violations[:MAX_REPORTED_VIOLATIONS], omitted=omitted)


_ENUM_VALUES: dict[type[enum.IntEnum], frozenset[int]] = {
    e: frozenset(int(m) for m in e) for e in (CampaignType, EndHandle, Status)
}


def _check_enum(
    path: str, value: int, members: type[enum.IntEnum], *, required: bool
) -> list[FieldViolation]:
    if value == 0 and required:
        return [FieldViolation(path, "is required")]
    if value != 0 and value not in _ENUM_VALUES[members]:
        return [FieldViolation(path, f"unknown value {int(value)}")]
    return []


def _all_finite(value: object) -> bool:
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, dict):
        return all(_all_finite(v) for v in value.values())
    if isinstance(value, list):
        return all(_all_finite(v) for v in value)
    return True


def option_size(option: object) -> int:
    return len(compact_json(option).encode())


def check_actions(path: str, actions: Sequence[Action]) -> list[FieldViolation]:
    out: list[FieldViolation] = []
    if len(actions) > MAX_ACTIONS:
        return [FieldViolation(path, f"at most {MAX_ACTIONS} actions, got {len(actions)}")]
    seen: set[str] = set()
    for i, action in enumerate(actions):
        # Paths are spelled only for the violations found: most actions have none.
        if action.id:
            if not is_uuid(action.id):
                out.append(FieldViolation(f"{path}[{i}].id", _NOT_UUID))
            if action.id in seen:
                out.append(FieldViolation(f"{path}[{i}].id", "duplicates an earlier action's id"))
            seen.add(action.id)
        if action.next_id and not is_uuid(action.next_id):
            out.append(FieldViolation(f"{path}[{i}].next_id", _NOT_UUID))
        if action.type not in ACTION_TYPES:
            out.append(
                FieldViolation(f"{path}[{i}].type", f"unknown action type {shown(action.type)}")
            )
        if not action.option:
            continue
        size = option_size(action.option)
        if not _all_finite(action.option):
            out.append(
                FieldViolation(f"{path}[{i}].option", "numbers must be finite (JSON has no NaN)")
            )
        elif size > MAX_OPTION_BYTES:
            out.append(
                FieldViolation(
                    f"{path}[{i}].option", f"at most {MAX_OPTION_BYTES} bytes, got {size}"
                )
            )
    for i, action in enumerate(actions):
        if action.next_id and is_uuid(action.next_id) and action.next_id not in seen:
            out.append(FieldViolation(f"{path}[{i}].next_id", "names no action of this campaign"))
    return out


def _check_no_nul(path: str, value: str) -> list[FieldViolation]:
    # PostgreSQL's text cannot hold NUL: stored as is, it would fail the whole group commit.
    if "\x00" in value:
        return [FieldViolation(path, "must not contain NUL characters")]
    return []


def _check_text(path: str, value: str, limit: int) -> list[FieldViolation]:
    if len(value) > limit:
        return [FieldViolation(path, f"at most {limit} characters")]
    return _check_no_nul(path, value)


def _check_service_level(path: str, value: int) -> list[FieldViolation]:
    if not 0 <= value <= 100:
        return [FieldViolation(path, "must be between 0 and 100")]
    return []


# Each updatable field's check, by name: looked up once per field of every create or update.
_FIELD_CHECKS: dict[str, Callable[[str, Campaign], list[FieldViolation]]] = {
    "type": lambda path, c: _check_enum(path, c.type, CampaignType, required=True),
    "name": lambda path, c: _check_text(path, c.name, MAX_NAME),
    "detail": lambda path, c: _check_text(path, c.detail, MAX_DETAIL),
    "service_level": lambda path, c: _check_service_level(path, c.service_level),
    "end_handle": lambda path, c: _check_enum(path, c.end_handle, EndHandle, required=False),
    "actions": lambda path, c: check_actions(path, c.actions),
    "outplan_id": lambda path, c: check_uuid(path, c.outplan_id, required=False),
    "outdial_id": lambda path, c: check_uuid(path, c.outdial_id, required=False),
    "queue_id": lambda path, c: check_uuid(path, c.queue_id, required=False),
    "next_campaign_id": lambda path, c: check_uuid(path, c.next_campaign_id, required=False),
}
_FIELD_PATHS = {name: f"campaign.{name}" for name in _FIELD_CHECKS}
assert set(_FIELD_CHECKS) == UPDATABLE_FIELDS


def _check_field(name: str, campaign: Campaign) -> list[FieldViolation]:
    return _FIELD_CHECKS[name](_FIELD_PATHS[name], campaign)


def validate_create(campaign: Campaign, request_id: str) -> None:
    out = check_uuid("campaign.customer_id", campaign.customer_id, required=True)
    out += check_uuid("campaign.id", campaign.id, required=False)
    out += check_uuid("request_id", request_id, required=False)
    for name in UPDATABLE_FIELD_ORDER:
        out += _check_field(name, campaign)
    raise_if(out)


def validate_update(campaign: Campaign, paths: Sequence[str]) -> None:
    out = check_uuid("campaign.customer_id", campaign.customer_id, required=True)
    out += check_uuid("campaign.id", campaign.id, required=True)
    if not paths:
        out.append(FieldViolation("update_mask", "is required: name the fields to change"))
    for path in paths:
        if path not in UPDATABLE_FIELDS:
            out.append(FieldViolation("update_mask", f"{shown(path)} is not an updatable field"))
    for name in UPDATABLE_FIELD_ORDER:
        if name in paths:
            out += _check_field(name, campaign)
    raise_if(out)


def validate_key(customer_id: str, campaign_id: str) -> None:
    raise_if(
        check_uuid("customer_id", customer_id, required=True)
        + check_uuid("id", campaign_id, required=True)
    )


def validate_status_request(customer_id: str, campaign_id: str, status: int) -> None:
    out = check_uuid("customer_id", customer_id, required=True)
    out += check_uuid("id", campaign_id, required=True)
    if status not in (Status.RUN, Status.STOP):
        out.append(FieldViolation("status", "must be STATUS_RUN or STATUS_STOP"))
    raise_if(out)


def validate_confirm(customer_id: str, campaign_id: str, stop_revision: int) -> None:
    out = check_uuid("customer_id", customer_id, required=True)
    out += check_uuid("id", campaign_id, required=True)
    if stop_revision <= 0:
        out.append(
            FieldViolation(
                "stop_revision",
                "is required: the campaign's stop_revision, as seen on the stream or in "
                "GetCampaign",
            )
        )
    raise_if(out)


def validate_list_events(customer_id: str, campaign_id: str, page_size: int) -> int:
    """Checks a listing of events and returns the effective page size."""
    out = check_uuid("customer_id", customer_id, required=True)
    out += check_uuid("campaign_id", campaign_id, required=False)
    if page_size < 0:
        out.append(FieldViolation("page_size", "must not be negative"))
    raise_if(out)
    if page_size == 0:
        return DEFAULT_PAGE_SIZE
    return min(page_size, MAX_PAGE_SIZE)


def validate_list(customer_id: str, page_size: int, status: int, type_: int) -> int:
    """Checks a list request and returns the effective page size."""
    out = check_uuid("customer_id", customer_id, required=True)
    if page_size < 0:
        out.append(FieldViolation("page_size", "must not be negative"))
    out += _check_enum("status", status, Status, required=False)
    out += _check_enum("type", type_, CampaignType, required=False)
    raise_if(out)
    if page_size == 0:
        return DEFAULT_PAGE_SIZE
    return min(page_size, MAX_PAGE_SIZE)


# WatchStatusRequest.view: unspecified (the status view), status, full.
WATCH_VIEWS = frozenset({0, 1, 2})


def validate_view(view: int) -> None:
    if view not in WATCH_VIEWS:
        raise_if([FieldViolation("view", f"unknown value {int(view)}")])


def validate_watch(
    customer_id: str, campaign_id: str, after_revision: int, view: int = 0, timeline: str = ""
) -> None:
    out = check_uuid("customer_id", customer_id, required=False)
    out += check_uuid("campaign_id", campaign_id, required=False)
    if campaign_id and not customer_id:
        out.append(FieldViolation("customer_id", "is required with campaign_id"))
    if after_revision < 0:
        out.append(FieldViolation("after_revision", "must not be negative"))
    if view not in WATCH_VIEWS:
        out.append(FieldViolation("view", f"unknown value {int(view)}"))
    if timeline and not _TIMELINE.fullmatch(timeline):
        out.append(
            FieldViolation("timeline", "must be empty or the timeline of a message received")
        )
    raise_if(out)


MAX_HOLDER_LENGTH = 128


def validate_join(holder: str, customer_id: str, capacity: int) -> None:
    out = check_uuid("join.customer_id", customer_id, required=False)
    if not holder:
        out.append(FieldViolation("join.holder", "is required: who this dialer process is"))
    elif len(holder) > MAX_HOLDER_LENGTH or not holder.isprintable():
        out.append(
            FieldViolation(
                "join.holder", f"must be at most {MAX_HOLDER_LENGTH} printable characters"
            )
        )
    if capacity < 1:
        out.append(FieldViolation("join.capacity", "must be at least 1"))
    raise_if(out)


def validate_fencing_token(token: int) -> None:
    if token < 0:
        raise_if([FieldViolation("fencing_token", "must not be negative")])
