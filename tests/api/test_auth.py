"""The token table and the authorization rules, without a server."""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import pytest
from google.protobuf import empty_pb2

from campaign_grpc.api.auth_gate import customer_of
from campaign_grpc.domain.errors import PermissionDenied, Unauthenticated
from campaign_grpc.ops.auth import (
    Grant,
    TokenFile,
    TokenFileError,
    TokenTable,
    authenticate,
    authorize,
)
from campaign_grpc_client.v1 import campaign_pb2 as pb
from factories import new_id

CUSTOMER = "8b0e5d3c-2f4a-4c61-9d7e-1a2b3c4d5e6f"
OTHER = "0f1e2d3c-4b5a-4697-8877-665544332211"


def digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


TOKEN_FILE = f"""\
# issued 2025-01-10 to the dialer
{digest("dialer-token")} *

{digest("customer-token")} {CUSTOMER}   # the customer's portal
"""
DIALER = Grant(None, f"token:{digest('dialer-token')[:12]}")
PORTAL = Grant(CUSTOMER, f"token:{digest('customer-token')[:12]}")


def test_a_token_grants_what_its_line_says_and_an_unknown_one_nothing() -> None:
    table = TokenTable.parse(TOKEN_FILE)

    assert table.grant_for("dialer-token") == DIALER
    assert table.grant_for("customer-token") == PORTAL
    assert table.grant_for("customer-token ") is None
    assert table.grant_for(digest("customer-token")) is None  # the digest is not the token
    assert table.grant_for("") is None
    assert TokenTable.parse("# nobody yet\n\n").grant_for("dialer-token") is None


def test_a_token_may_be_named_and_old_files_still_load() -> None:
    named = TokenTable.parse(f"{digest('t1')} * dialer-eu1  # a name after the customer\n")
    assert named.grant_for("t1") == Grant(None, "dialer-eu1")
    # A file of the earlier format, names absent: each token known by its digest's start.
    assert TokenTable.parse(TOKEN_FILE).grant_for("dialer-token") == DIALER
    assert "dialer-token" not in DIALER.principal


@pytest.mark.parametrize(
    ("line", "says"),
    [
        ("dialer-token *", "64 hex digits"),
        (f"{digest('x')[:-1]} *", "64 hex digits"),
        (f"{digest('x')[:-1]}g *", "64 hex digits"),
        (digest("x"), "got 1 words"),
        (f"{digest('x')} {CUSTOMER} two names", "got 4 words"),
        (f"{digest('x')} {CUSTOMER} na;me", "one word"),
        (f"{digest('x')} acme", "canonical lowercase UUID"),
        (f"{digest('x')} {CUSTOMER.upper()}", "canonical lowercase UUID"),
    ],
)
def test_a_bad_line_is_refused_with_its_number(line: str, says: str) -> None:
    with pytest.raises(TokenFileError) as raised:
        TokenTable.parse(f"{TOKEN_FILE}{line}\n", source="tokens.txt")

    assert "tokens.txt line 5" in str(raised.value)
    assert says in str(raised.value)
    assert "dialer-token" not in str(raised.value)


def test_a_digest_listed_twice_is_refused() -> None:
    text = f"{TOKEN_FILE}{digest('customer-token')} {OTHER}\n"
    with pytest.raises(TokenFileError, match="line 5: the same digest as line 4"):
        TokenTable.parse(text)


def test_the_authorization_metadata_must_carry_one_known_bearer_token() -> None:
    table = TokenTable.parse(TOKEN_FILE)

    assert authenticate(table, ["Bearer customer-token"]) == PORTAL
    assert authenticate(table, ["bearer  dialer-token "]) == DIALER
    cases = [
        ([], "TOKEN_MISSING"),
        (["customer-token"], "TOKEN_MALFORMED"),
        (["Basic customer-token"], "TOKEN_MALFORMED"),
        (["Bearer "], "TOKEN_MALFORMED"),
        (["Bearer customer-token", "Bearer dialer-token"], "TOKEN_MALFORMED"),
        (["Bearer someone-elses-token"], "TOKEN_UNKNOWN"),
    ]
    for values, reason in cases:
        with pytest.raises(Unauthenticated) as raised:
            authenticate(table, values)
        assert raised.value.reason == reason, values
        assert "token" in raised.value.message
        assert "customer-token" not in raised.value.message
        assert "someone-elses" not in raised.value.message


def test_a_customer_token_acts_for_its_customer_only_and_a_star_token_for_all() -> None:
    authorize(Grant(CUSTOMER), CUSTOMER)
    for customer in (OTHER, ""):
        with pytest.raises(PermissionDenied) as raised:
            authorize(Grant(CUSTOMER), customer)
        assert raised.value.reason == "CUSTOMER_NOT_ALLOWED"

    for customer in (CUSTOMER, OTHER, ""):
        authorize(Grant(None), customer)


def test_every_campaign_service_request_names_its_customer() -> None:
    customer = new_id()
    for method in pb.DESCRIPTOR.services_by_name["CampaignService"].methods:
        if method.client_streaming:
            # Its first message names the customer: checked when it comes (test_auth_e2e).
            assert method.name == "HoldLeases"
            continue
        request = getattr(pb, method.input_type.name)()
        if "campaign" in method.input_type.fields_by_name:
            request.campaign.customer_id = customer
        else:
            request.customer_id = customer
        assert customer_of(method.input_type)(request) == customer, method.name


def test_a_request_that_names_no_customer_counts_as_one_for_every_customer() -> None:
    assert customer_of(empty_pb2.Empty.DESCRIPTOR)(empty_pb2.Empty()) == ""


def test_a_reload_replaces_the_tokens_and_a_bad_file_keeps_the_previous_ones(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "tokens.txt"
    path.write_text(TOKEN_FILE)
    tokens = TokenFile(str(path))
    assert tokens.table.grant_for("customer-token") == PORTAL

    path.write_text(f"{digest('new-token')} {OTHER}\n")
    assert tokens.reload()
    assert tokens.table.grant_for("customer-token") is None
    assert tokens.table.grant_for("new-token") == Grant(OTHER, f"token:{digest('new-token')[:12]}")

    path.write_text(f"{digest('new-token')} {OTHER}\nnew-token *\n")
    with caplog.at_level(logging.ERROR):
        assert not tokens.reload()
    assert tokens.table.grant_for("new-token") == Grant(OTHER, f"token:{digest('new-token')[:12]}")
    assert "line 2" in caplog.text
    assert "previous ones stay in force" in caplog.text

    path.unlink()
    assert not tokens.reload()
    assert tokens.table.grant_for("new-token") == Grant(OTHER, f"token:{digest('new-token')[:12]}")
