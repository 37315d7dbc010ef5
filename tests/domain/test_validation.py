"""Validation: pure checks that name every bad field of a request at once."""

from __future__ import annotations

import dataclasses
from typing import Any, cast

import pytest

from campaign_grpc.domain import validation
from campaign_grpc.domain.errors import InvalidArgument
from campaign_grpc.domain.types import Action, Campaign, CampaignType, EndHandle, Status
from factories import new_id, runnable_draft

# The 44 action types of the reference system, written out here on purpose: the test checks
# the module's list against the specification, not against itself.
SPEC_ACTION_TYPES = [
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
]

NON_CANONICAL_UUIDS = [
    "not-a-uuid",
    "123",
    "6F9619FF-8B86-D011-B42D-00C04FC964FF",  # upper case
    "6f9619ff8b86d011b42d00c04fc964ff",  # no hyphens
    "{6f9619ff-8b86-d011-b42d-00c04fc964ff}",  # braces
    "urn:uuid:6f9619ff-8b86-d011-b42d-00c04fc964ff",
    " 6f9619ff-8b86-d011-b42d-00c04fc964ff",
    "6f9619ff-8b86-d011-b42d-00c04fc964ff\n",
    "6f9619ff-8b86-d011-b42d-00c04fc964fg",
]


def fields_of(exc: InvalidArgument) -> list[str]:
    return [v.field for v in exc.violations]


def create_violations(draft: Campaign, request_id: str = "") -> list[str]:
    """The field paths validate_create names; [] when the draft is valid."""
    try:
        validation.validate_create(draft, request_id)
    except InvalidArgument as exc:
        return fields_of(exc)
    return []


def update_violations(draft: Campaign, paths: list[str]) -> list[str]:
    try:
        validation.validate_update(draft, paths)
    except InvalidArgument as exc:
        return fields_of(exc)
    return []


def draft(customer: str, **changes: Any) -> Campaign:
    return dataclasses.replace(runnable_draft(customer), **changes)


def actions_with(n: int) -> list[Action]:
    return [Action("", "", "answer", {}) for _ in range(n)]


# -- create -----------------------------------------------------------------------------


def test_a_runnable_draft_is_valid(customer: str) -> None:
    assert create_violations(draft(customer)) == []


def test_a_minimal_draft_needs_only_customer_and_type(customer: str) -> None:
    assert create_violations(Campaign(id="", customer_id=customer, type=CampaignType.FLOW)) == []


def test_customer_id_is_required(customer: str) -> None:
    assert create_violations(draft("")) == ["campaign.customer_id"]


@pytest.mark.parametrize("bad", NON_CANONICAL_UUIDS)
@pytest.mark.parametrize(
    "field", ["id", "customer_id", "outplan_id", "outdial_id", "queue_id", "next_campaign_id"]
)
def test_ids_must_be_canonical_uuids(customer: str, field: str, bad: str) -> None:
    assert create_violations(draft(customer, **{field: bad})) == [f"campaign.{field}"]


@pytest.mark.parametrize(
    "field", ["id", "outplan_id", "outdial_id", "queue_id", "next_campaign_id"]
)
def test_optional_ids_may_be_empty(customer: str, field: str) -> None:
    assert create_violations(draft(customer, **{field: ""})) == []


def test_a_caller_chosen_canonical_id_is_accepted(customer: str) -> None:
    assert create_violations(draft(customer, id=new_id())) == []


def test_request_id_must_be_a_canonical_uuid_or_empty(customer: str) -> None:
    assert create_violations(draft(customer), request_id=new_id()) == []
    assert create_violations(draft(customer), request_id="retry-1") == ["request_id"]


def test_name_is_at_most_255_characters(customer: str) -> None:
    assert create_violations(draft(customer, name="n" * 255)) == []
    # Characters, not bytes: 255 two-byte characters still fit.
    assert create_violations(draft(customer, name="é" * 255)) == []
    assert create_violations(draft(customer, name="n" * 256)) == ["campaign.name"]


def test_detail_is_at_most_4096_characters(customer: str) -> None:
    assert create_violations(draft(customer, detail="d" * 4096)) == []
    assert create_violations(draft(customer, detail="ü" * 4096)) == []
    assert create_violations(draft(customer, detail="d" * 4097)) == ["campaign.detail"]


def test_name_and_detail_hold_no_nul_characters(customer: str) -> None:
    # PostgreSQL's text type cannot store NUL; every other character is accepted.
    assert create_violations(draft(customer, name="a\x01\u200b\U0010ffff")) == []
    bad = draft(customer, name="a\x00b", detail="\x00")
    assert create_violations(bad) == ["campaign.name", "campaign.detail"]


@pytest.mark.parametrize("level", [0, 1, 50, 100])
def test_service_level_within_0_to_100_is_accepted(customer: str, level: int) -> None:
    assert create_violations(draft(customer, service_level=level)) == []


@pytest.mark.parametrize("level", [-1, 101, 1000, -(2**31)])
def test_service_level_outside_0_to_100_is_rejected(customer: str, level: int) -> None:
    assert create_violations(draft(customer, service_level=level)) == ["campaign.service_level"]


def test_type_is_required(customer: str) -> None:
    assert create_violations(draft(customer, type=CampaignType.UNSPECIFIED)) == ["campaign.type"]


@pytest.mark.parametrize("number", [3, 7, -1, 2**31 - 1])
def test_unknown_type_number_is_rejected(customer: str, number: int) -> None:
    exc_fields = create_violations(draft(customer, type=cast(CampaignType, number)))
    assert exc_fields == ["campaign.type"]


def test_unknown_type_number_is_named_in_the_description(customer: str) -> None:
    with pytest.raises(InvalidArgument) as info:
        validation.validate_create(draft(customer, type=cast(CampaignType, 7)), "")
    assert "7" in info.value.violations[0].description


@pytest.mark.parametrize("handle", [EndHandle.UNSPECIFIED, EndHandle.STOP, EndHandle.CONTINUE])
def test_known_end_handles_are_accepted(customer: str, handle: EndHandle) -> None:
    assert create_violations(draft(customer, end_handle=handle)) == []


@pytest.mark.parametrize("number", [3, 99, -2])
def test_unknown_end_handle_number_is_rejected(customer: str, number: int) -> None:
    got = create_violations(draft(customer, end_handle=cast(EndHandle, number)))
    assert got == ["campaign.end_handle"]


def test_the_spec_lists_44_action_types_and_the_module_knows_exactly_them() -> None:
    assert len(SPEC_ACTION_TYPES) == 44
    assert len(set(SPEC_ACTION_TYPES)) == 44
    assert set(SPEC_ACTION_TYPES) == set(validation.ACTION_TYPES)


@pytest.mark.parametrize("action_type", SPEC_ACTION_TYPES)
def test_every_known_action_type_is_accepted(customer: str, action_type: str) -> None:
    actions = [Action("", "", action_type, {})]
    assert create_violations(draft(customer, actions=actions)) == []


@pytest.mark.parametrize("action_type", ["", "dial", "Answer", "answer ", "ANSWER", "talk\n"])
def test_an_unknown_action_type_is_rejected(customer: str, action_type: str) -> None:
    actions = [Action("", "", "answer", {}), Action("", "", action_type, {})]
    assert create_violations(draft(customer, actions=actions)) == ["campaign.actions[1].type"]


def test_action_ids_must_be_canonical_uuids(customer: str) -> None:
    actions = [Action("a1", "", "answer", {}), Action("", "b2", "talk", {})]
    assert create_violations(draft(customer, actions=actions)) == [
        "campaign.actions[0].id",
        "campaign.actions[1].next_id",
    ]


def test_action_ids_are_unique_within_the_list(customer: str) -> None:
    same = new_id()
    actions = [
        Action(same, "", "answer", {}),
        Action(new_id(), "", "talk", {}),
        Action(same, "", "hangup", {}),
    ]
    assert create_violations(draft(customer, actions=actions)) == ["campaign.actions[2].id"]


def test_empty_action_ids_are_not_duplicates(customer: str) -> None:
    actions = [Action("", "", "answer", {}), Action("", "", "talk", {})]
    assert create_violations(draft(customer, actions=actions)) == []


def test_next_id_may_name_any_action_of_the_list(customer: str) -> None:
    first, second = new_id(), new_id()
    actions = [
        Action(first, second, "answer", {}),
        Action(second, first, "goto", {}),  # backwards too: loops are flows
    ]
    assert create_violations(draft(customer, actions=actions)) == []


def test_next_id_must_name_an_action_of_the_list(customer: str) -> None:
    actions = [Action(new_id(), new_id(), "answer", {}), Action(new_id(), "", "talk", {})]
    assert create_violations(draft(customer, actions=actions)) == ["campaign.actions[0].next_id"]


def test_next_id_naming_an_unnamed_action_is_rejected(customer: str) -> None:
    # An action without an id gets one from the server, so nothing can point at it yet.
    actions = [Action("", new_id(), "answer", {}), Action("", "", "talk", {})]
    assert create_violations(draft(customer, actions=actions)) == ["campaign.actions[0].next_id"]


def test_at_most_1000_actions(customer: str) -> None:
    assert create_violations(draft(customer, actions=actions_with(1000))) == []
    assert create_violations(draft(customer, actions=actions_with(1001))) == ["campaign.actions"]


def test_an_empty_action_list_is_valid(customer: str) -> None:
    assert create_violations(draft(customer, actions=[])) == []


def test_option_at_most_64_kib(customer: str) -> None:
    small = [Action("", "", "talk", {"text": "x" * (64 * 1024 - 100)})]
    assert create_violations(draft(customer, actions=small)) == []
    big = [Action("", "", "answer", {}), Action("", "", "talk", {"text": "x" * (64 * 1024 + 1)})]
    assert create_violations(draft(customer, actions=big)) == ["campaign.actions[1].option"]


def test_option_size_counts_nested_values(customer: str) -> None:
    nested = {"a": {"b": ["y" * 40_000, {"c": "z" * 40_000}]}}
    assert create_violations(draft(customer, actions=[Action("", "", "play", nested)])) == [
        "campaign.actions[0].option"
    ]


def test_every_violation_is_reported_at_once_with_its_path(customer: str) -> None:
    dup = new_id()
    bad = Campaign(
        id="nope",
        customer_id="ACME",
        type=CampaignType.UNSPECIFIED,
        name="n" * 256,
        detail="d" * 4097,
        service_level=101,
        end_handle=cast(EndHandle, 9),
        actions=[
            Action(dup, "", "answer", {}),
            Action(dup, new_id(), "talk", {}),
            Action("", "", "teleport", {"k": "v" * 70_000}),
        ],
        outplan_id="x",
        outdial_id="y",
        queue_id="z",
        next_campaign_id="w",
    )
    with pytest.raises(InvalidArgument) as info:
        validation.validate_create(bad, "r")
    assert sorted(fields_of(info.value)) == sorted(
        [
            "campaign.customer_id",
            "campaign.id",
            "request_id",
            "campaign.type",
            "campaign.name",
            "campaign.detail",
            "campaign.service_level",
            "campaign.end_handle",
            "campaign.actions[1].id",
            "campaign.actions[1].next_id",
            "campaign.actions[2].type",
            "campaign.actions[2].option",
            "campaign.outplan_id",
            "campaign.outdial_id",
            "campaign.queue_id",
            "campaign.next_campaign_id",
        ]
    )
    assert info.value.code == "INVALID_ARGUMENT"
    assert all(v.description for v in info.value.violations)


def test_output_only_fields_of_a_draft_are_not_validated(customer: str) -> None:
    # Output-only fields are ignored on create, so odd values there are no mistake.
    odd = dataclasses.replace(
        draft(customer), status=cast(Status, 42), tm_create=-5, tm_delete=7, version=-1
    )
    assert create_violations(odd) == []


# -- update -----------------------------------------------------------------------------


def test_update_needs_a_mask(customer: str) -> None:
    assert update_violations(draft(customer, id=new_id()), []) == ["update_mask"]


def test_update_needs_customer_and_campaign_ids(customer: str) -> None:
    assert update_violations(draft("", id=""), ["name"]) == ["campaign.customer_id", "campaign.id"]
    assert update_violations(draft(customer, id="7"), ["name"]) == ["campaign.id"]


@pytest.mark.parametrize(
    "path",
    [
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
    ],
)
def test_every_updatable_field_may_be_named(customer: str, path: str) -> None:
    assert update_violations(draft(customer, id=new_id()), [path]) == []


@pytest.mark.parametrize(
    "path",
    [
        "id",
        "customer_id",
        "status",
        "etag",
        "tm_create",
        "tm_update",
        "tm_delete",
        "campaign.name",
        "Name",
        "actions.type",
        "*",
        "",
        "nonsense",
    ],
)
def test_a_path_that_is_not_updatable_is_rejected(customer: str, path: str) -> None:
    with pytest.raises(InvalidArgument) as info:
        validation.validate_update(draft(customer, id=new_id()), ["name", path])
    assert fields_of(info.value) == ["update_mask"]
    assert repr(path) in info.value.violations[0].description


def test_the_message_names_a_field_once_the_details_each_violation(customer: str) -> None:
    with pytest.raises(InvalidArgument) as info:
        validation.validate_update(draft(customer, id=new_id()), ["status", "tm_create"])
    assert fields_of(info.value) == ["update_mask", "update_mask"]
    assert info.value.message == "invalid request: update_mask"


def test_update_checks_only_the_named_fields(customer: str) -> None:
    bad_name = draft(customer, id=new_id(), name="n" * 300, service_level=500)
    assert update_violations(bad_name, ["detail"]) == []
    assert update_violations(bad_name, ["name"]) == ["campaign.name"]
    assert update_violations(bad_name, ["name", "service_level"]) == [
        "campaign.name",
        "campaign.service_level",
    ]


def test_update_of_type_cannot_clear_it(customer: str) -> None:
    cleared = draft(customer, id=new_id(), type=CampaignType.UNSPECIFIED)
    assert update_violations(cleared, ["type"]) == ["campaign.type"]
    assert update_violations(cleared, ["name"]) == []


def test_update_validates_named_actions_with_their_paths(customer: str) -> None:
    actions = [Action("", "", "answer", {}), Action("", "", "answer", {}), Action("", "", "x", {})]
    changed = draft(customer, id=new_id(), actions=actions)
    assert update_violations(changed, ["actions"]) == ["campaign.actions[2].type"]


def test_update_reports_every_violation_at_once(customer: str) -> None:
    bad = draft(
        "bad",
        id="",
        name="n" * 256,
        outdial_id="nope",
        actions=[Action("", "", "fly", {})],
    )
    got = update_violations(bad, ["name", "outdial_id", "actions", "status"])
    assert sorted(got) == sorted(
        [
            "campaign.customer_id",
            "campaign.id",
            "update_mask",
            "campaign.name",
            "campaign.outdial_id",
            "campaign.actions[0].type",
        ]
    )


# -- keys, status requests, lists, watches -------------------------------------------------


def test_key_needs_two_canonical_uuids(customer: str) -> None:
    validation.validate_key(customer, new_id())
    with pytest.raises(InvalidArgument) as info:
        validation.validate_key("", "X")
    assert fields_of(info.value) == ["customer_id", "id"]


@pytest.mark.parametrize("status", [Status.RUN, Status.STOP])
def test_status_request_accepts_run_and_stop(customer: str, status: Status) -> None:
    validation.validate_status_request(customer, new_id(), status)


@pytest.mark.parametrize("status", [Status.UNSPECIFIED, Status.STOPPING, 4, -1])
def test_status_request_rejects_every_other_status(customer: str, status: int) -> None:
    with pytest.raises(InvalidArgument) as info:
        validation.validate_status_request(customer, new_id(), status)
    assert fields_of(info.value) == ["status"]


def test_status_request_reports_every_violation(customer: str) -> None:
    with pytest.raises(InvalidArgument) as info:
        validation.validate_status_request("", "x", 0)
    assert fields_of(info.value) == ["customer_id", "id", "status"]


@pytest.mark.parametrize(
    ("asked", "effective"),
    [(0, 50), (1, 1), (50, 50), (999, 999), (1000, 1000), (1001, 1000), (2**31 - 1, 1000)],
)
def test_list_page_size(customer: str, asked: int, effective: int) -> None:
    assert validation.validate_list(customer, asked, 0, 0) == effective


@pytest.mark.parametrize("size", [-1, -50])
def test_list_negative_page_size_is_invalid(customer: str, size: int) -> None:
    with pytest.raises(InvalidArgument) as info:
        validation.validate_list(customer, size, 0, 0)
    assert fields_of(info.value) == ["page_size"]


def test_list_filters_must_be_known_values(customer: str) -> None:
    assert validation.validate_list(customer, 10, Status.STOPPING, CampaignType.FLOW) == 10
    with pytest.raises(InvalidArgument) as info:
        validation.validate_list("", -1, 9, 5)
    assert fields_of(info.value) == ["customer_id", "page_size", "status", "type"]


def test_watch_request_rules(customer: str) -> None:
    validation.validate_watch(customer, new_id(), 0)
    validation.validate_watch(customer, "", 17)
    with pytest.raises(InvalidArgument) as info:
        validation.validate_watch("", new_id(), -1)
    assert fields_of(info.value) == ["customer_id", "after_revision"]
    with pytest.raises(InvalidArgument) as info:
        validation.validate_watch("c", "d", 0)
    assert fields_of(info.value) == ["customer_id", "campaign_id"]
    validation.validate_watch(customer, "", 17, timeline="0123456789abcdef")
    with pytest.raises(InvalidArgument) as info:
        validation.validate_watch(customer, "", 17, timeline="not a timeline")
    assert fields_of(info.value) == ["timeline"]


# -- the size of a report -----------------------------------------------------------------


def test_a_request_with_very_many_mistakes_gets_a_bounded_report(customer: str) -> None:
    # The report travels in the response trailers, which clients cap at a few KiB.
    actions = [Action(f"bad-{i}", "", f"bogus-{i}", {}) for i in range(500)]
    with pytest.raises(InvalidArgument) as info:
        validation.validate_create(draft(customer, actions=actions, name="n" * 300), "")
    exc = info.value
    assert len(exc.violations) == validation.MAX_REPORTED_VIOLATIONS
    # The first mistakes, in the order of the request, and how many more there are.
    assert fields_of(exc)[:3] == [
        "campaign.name",
        "campaign.actions[0].id",
        "campaign.actions[0].type",
    ]
    assert exc.omitted == 1001 - validation.MAX_REPORTED_VIOLATIONS
    assert exc.metadata["omitted_violations"] == str(exc.omitted)
    assert exc.message.endswith(f"and {exc.omitted} more")
    assert len(exc.message) < 1024


def test_a_report_at_the_limit_omits_nothing(customer: str) -> None:
    n = validation.MAX_REPORTED_VIOLATIONS
    actions = [Action("", "", f"bogus-{i}", {}) for i in range(n)]
    with pytest.raises(InvalidArgument) as info:
        validation.validate_create(draft(customer, actions=actions), "")
    assert len(info.value.violations) == n
    assert info.value.omitted == 0
    assert "omitted_violations" not in info.value.metadata
    assert "more" not in info.value.message


def test_a_long_value_is_cut_short_in_the_description(customer: str) -> None:
    actions = [Action("", "", "t" * 100_000, {})]
    with pytest.raises(InvalidArgument) as info:
        validation.validate_create(draft(customer, actions=actions), "")
    (violation,) = info.value.violations
    assert violation.field == "campaign.actions[0].type"
    assert "tttt" in violation.description
    assert len(violation.description) < 200
    with pytest.raises(InvalidArgument) as info:
        validation.validate_update(draft(customer, id=new_id()), ["p" * 100_000])
    assert len(info.value.violations[0].description) < 200


@pytest.mark.parametrize("number", [float("nan"), float("inf"), float("-inf")])
def test_option_numbers_must_be_finite(customer: str, number: float) -> None:
    actions = [Action("", "", "sleep", {"duration": {"ms": [1, number]}})]
    assert create_violations(draft(customer, actions=actions)) == ["campaign.actions[0].option"]


@pytest.mark.parametrize(
    "value", ["a" * 500, "\u00e9" * 500, "\U0001f600" * 500, "\U000e0001" * 500]
)
def test_a_quoted_value_stays_small_in_bytes_whatever_its_characters(value: str) -> None:
    # Twenty of these travel in the error's trailers, which clients cap at 8 KiB.
    quoted = validation.shown(value)
    assert quoted.endswith("...")
    assert len(quoted.encode()) <= validation.MAX_SHOWN_VALUE + 5
    assert validation.shown("type") == "'type'"
