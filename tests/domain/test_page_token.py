"""Page tokens: opaque, and valid only for the listing that made them."""

from __future__ import annotations

import base64

import pytest

from campaign_grpc.domain import page_token
from campaign_grpc.domain.errors import InvalidArgument
from campaign_grpc.domain.types import CampaignType, ListFilter, Status
from factories import new_id


def assert_invalid_token(token: str, f: ListFilter) -> None:
    with pytest.raises(InvalidArgument) as info:
        page_token.decode(token, f)
    assert info.value.reason == "INVALID_PAGE_TOKEN"
    assert [v.field for v in info.value.violations] == ["page_token"]


@pytest.mark.parametrize("seq", [0, 1, 12345, 2**63 - 1])
def test_round_trip(customer: str, seq: int) -> None:
    f = ListFilter(customer, Status.RUN, CampaignType.CALL, show_deleted=True)
    token = page_token.encode(f, seq)
    assert page_token.decode(token, f) == seq


def test_token_is_url_safe_text_that_does_not_show_the_position(customer: str) -> None:
    f = ListFilter(customer)
    token = page_token.encode(f, 4242)
    assert token.isascii()
    assert all(ch.isalnum() or ch in "-_" for ch in token)
    assert "4242" not in token
    assert customer not in token


@pytest.mark.parametrize(
    "garbage",
    [
        "x",
        "garbage",
        "!!!!",
        "AAAAAAAAAAAAAAAAAAAAAAA",  # decodes, but to nothing of ours
        "a" * 500,
        "ünïcode",
        base64.urlsafe_b64encode(b"\x01" + b"\x00" * 8).decode(),  # too short
    ],
)
def test_garbage_token_is_invalid(customer: str, garbage: str) -> None:
    assert_invalid_token(garbage, ListFilter(customer))


def test_a_tampered_token_is_invalid(customer: str) -> None:
    f = ListFilter(customer)
    token = page_token.encode(f, 10)
    raw = bytearray(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
    raw[-1] ^= 0xFF
    tampered = base64.urlsafe_b64encode(bytes(raw)).rstrip(b"=").decode()
    assert_invalid_token(tampered, f)


@pytest.mark.parametrize(
    "other",
    [
        ListFilter("", status=Status.RUN),
        ListFilter("", type=CampaignType.FLOW),
        ListFilter("", show_deleted=True),
        ListFilter("", status=Status.STOP, type=CampaignType.CALL),
    ],
)
def test_token_made_with_other_filters_is_invalid(customer: str, other: ListFilter) -> None:
    made_with = ListFilter(customer)
    token = page_token.encode(made_with, 7)
    used_with = ListFilter(customer, other.status, other.type, other.show_deleted)
    assert_invalid_token(token, used_with)
    # And the other way round.
    assert_invalid_token(page_token.encode(used_with, 7), made_with)


def test_token_of_another_customer_is_invalid(customer: str) -> None:
    token = page_token.encode(ListFilter(customer), 7)
    assert_invalid_token(token, ListFilter(new_id()))


@pytest.mark.parametrize("seq", [2**63, 2**64 - 1])
def test_a_forged_position_beyond_the_stores_keys_is_invalid(customer: str, seq: int) -> None:
    # The fingerprint is no secret: anyone can spell a token for their own filters.
    f = ListFilter(customer)
    assert_invalid_token(page_token.encode(f, seq), f)
