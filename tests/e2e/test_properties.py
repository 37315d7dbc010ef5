"""Hostile requests over a socket (hypothesis): never INTERNAL or UNKNOWN, every rejection a
google.rpc.Status with an ErrorInfo, and a rejected request changes nothing that is stored.

One server per test serves every example of it; its database file is read before and after
each call, so that a rejected call that wrote anything, anywhere, is caught.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import math
import struct
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import field_mask_pb2
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from campaign_grpc.domain import page_token
from campaign_grpc.domain.types import UPDATABLE_FIELD_ORDER, CampaignType, ListFilter, Status
from campaign_grpc.domain.validation import ACTION_TYPES
from campaign_grpc.settings import Settings
from campaign_grpc_client.v1 import campaign_pb2 as pb
from campaign_grpc_client.v1 import campaign_pb2_grpc
from e2e_helpers import details_of, stored_rows

Code = grpc.StatusCode
Stub = campaign_pb2_grpc.CampaignServiceStub

# The stored campaigns every example starts from: two customers, one campaign id in both.
CUSTOMER = "5f0c2a8e-3b1d-4c6e-9a7f-0d2e4b6c8a10"
OTHER = "a1b2c3d4-e5f6-4a7b-8c9d-0e1f2a3b4c5d"
STOPPED = "11111111-2222-4333-8444-555555555555"
RUNNING = "66666666-7777-4888-9999-aaaaaaaaaaaa"
DELETED = "bbbbbbbb-cccc-4ddd-8eee-ffffffffffff"
SHARED = "01234567-89ab-4cde-8f01-23456789abcd"  # also used as an outplan id
THEIRS = "fedcba98-7654-4321-8fed-cba987654321"  # the other customer's campaign
KNOWN_IDS = (STOPPED, RUNNING, DELETED, SHARED, THEIRS)
OUTDIAL = "99999999-8888-4777-8666-555555555555"

EXAMPLES = 100
PROFILE = settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,
    derandomize=True,
    suppress_health_check=[
        # One server per test on purpose: each example checks the stored data around its call.
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.large_base_example,
    ],
)

# -- strategies -----------------------------------------------------------------------------

_ALMOST: tuple[Callable[[str], str], ...] = (
    str.upper,
    lambda u: u.replace("-", ""),
    lambda u: "{" + u + "}",
    lambda u: "urn:uuid:" + u,
    lambda u: u + "\n",
    lambda u: " " + u,
    lambda u: u[:-1],
    lambda u: u + "0",
    lambda u: u[:-1] + "g",
    lambda u: u[:-1] + "\uff10",  # FULLWIDTH DIGIT ZERO
    lambda u: u[:-1] + "\u0660",  # ARABIC-INDIC DIGIT ZERO
    lambda u: u[:-1] + "\x00",
    lambda u: u.replace("-", "\u2010"),  # HYPHEN
    lambda u: u[:8] + u[9:13] + "-" + u[8] + u[13:],  # a hyphen moved
    lambda u: u + "\u0301",  # a combining accent on the last digit
)

uuids = st.one_of(st.sampled_from(KNOWN_IDS), st.uuids().map(str))
almost_uuids = st.builds(lambda u, f: f(u), uuids, st.sampled_from(_ALMOST))
ids = st.one_of(st.just(""), uuids, almost_uuids, st.text(max_size=40))
customers = st.one_of(st.sampled_from((CUSTOMER, OTHER)), ids)

ODD_CHARACTERS = (
    "\x00",
    "\u200b",  # ZERO WIDTH SPACE
    "\u202e",  # RIGHT-TO-LEFT OVERRIDE
    "\ufeff",
    "\uffff",
    "\U0001f600",
    "\U000e0001",  # LANGUAGE TAG: not printable, quoted as ten characters
    "\U0010ffff",
    "\u0301",  # a combining accent, on whatever comes before it
    "'",
    '"',
    "\\",
    "\n",
)
huge_text = st.builds(
    lambda c, n: c * n,
    st.sampled_from(("a", "\u00e9", "\U0001f600", "\U000e0001")),
    # Up to 80 kB: a request stays well under gRPC's 4 MiB limit on messages, which the
    # transport enforces before any of our code runs.
    st.sampled_from((255, 256, 4096, 4097, 20_000)),
)
texts = st.one_of(
    st.text(max_size=60),
    st.text(alphabet=st.sampled_from(ODD_CHARACTERS), max_size=60),
    huge_text,
)
enums = st.one_of(st.integers(0, 3), st.integers(-(2**31), 2**31 - 1))
int32s = st.one_of(
    st.sampled_from((-1, 0, 100, 101, 2**31 - 1, -(2**31))), st.integers(-(2**31), 2**31 - 1)
)
int64s = st.one_of(
    st.sampled_from((-1, 0, 1, 2**63 - 1, -(2**63))), st.integers(-(2**63), 2**63 - 1)
)

leaves = st.one_of(
    st.none(),
    st.booleans(),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(alphabet=st.sampled_from(ODD_CHARACTERS), max_size=8),
    st.text(max_size=20),
)
trees = st.recursive(
    leaves,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=20,
)


def _deep(depth: int, in_list: bool) -> Any:
    # Each level is three messages (Struct, map entry, Value): 25 stay under protobuf's
    # parse limit of 100; the raw-bytes fuzz goes past it.
    value: Any = "bottom"
    for _ in range(depth):
        value = [value] if in_list else {"k": value}
    return {"deep": value}


def _wide(keys: int, width: int) -> dict[str, Any]:
    return {f"k{i}": "v" * width for i in range(keys)}


options = st.one_of(
    st.dictionaries(st.text(max_size=8), trees, max_size=5),
    st.builds(_deep, st.integers(1, 25), st.booleans()),
    st.builds(_wide, st.sampled_from((1, 100, 2200, 3000)), st.sampled_from((1, 30))),
    st.sampled_from(
        (
            {"n": math.nan},
            {"n": math.inf},
            {"n": [1.0, -math.inf]},
            {"n": {"m": math.nan}},
            {"n": 1e308, "m": -0.0, "s": 5e-324},
        )
    ),
)


def _action(id_: str, next_id: str, type_: str, option: dict[str, Any]) -> pb.Action:
    action = pb.Action(id=id_, next_id=next_id, type=type_)
    if option:
        action.option.update(option)
    return action


actions = st.builds(
    _action,
    ids,
    ids,
    st.one_of(st.sampled_from(sorted(ACTION_TYPES)), texts),
    options,
)
action_lists = st.one_of(
    st.lists(actions, max_size=4),
    # Past the limit, and many bad ones: the error must stay small enough to be delivered.
    st.builds(lambda n: [pb.Action(type="answer")] * n, st.sampled_from((1000, 1001))),
    st.builds(
        lambda n, t: [pb.Action(type=t)] * n,
        st.sampled_from((21, 60)),
        st.sampled_from(("\U000e0001" * 60, "x" * 300)),
    ),
)


@st.composite
def campaigns(draw: st.DrawFn) -> pb.Campaign:
    m = pb.Campaign(
        id=draw(ids),
        customer_id=draw(customers),
        name=draw(texts),
        detail=draw(texts),
        service_level=draw(int32s),
        outplan_id=draw(ids),
        outdial_id=draw(st.one_of(st.just(OUTDIAL), ids)),
        queue_id=draw(ids),
        next_campaign_id=draw(ids),
        etag=draw(st.one_of(st.just(""), st.text(max_size=20))),
    )
    # Enum numbers that the generated code would refuse as keyword arguments.
    m.type = draw(enums)  # type: ignore[assignment]
    m.status = draw(enums)  # type: ignore[assignment]
    m.end_handle = draw(enums)  # type: ignore[assignment]
    m.actions.extend(draw(action_lists))
    if draw(st.booleans()):
        m.tm_create.FromSeconds(draw(st.integers(0, 2**33)))
        m.tm_delete.FromSeconds(draw(st.integers(0, 2**33)))
    return m


mask_paths = st.one_of(
    st.sampled_from(
        (
            *UPDATABLE_FIELD_ORDER,
            "",
            "*",
            "campaign.name",
            "name.",
            "NAME",
            "id",
            "customer_id",
            "status",
            "etag",
            "tm_create",
            "tm_delete",
            "actions.type",
            "actions[0]",
            "name,detail",
            " name",
        )
    ),
    texts,
)
masks = st.one_of(
    st.lists(mask_paths, max_size=8),
    st.builds(
        lambda p, n: [p] * n,
        st.one_of(mask_paths.filter(lambda p: len(p) < 100), st.just("\U000e0001" * 60)),
        st.sampled_from((2, 21, 50)),
    ),
)


def _forged(f: ListFilter, version: int, seq: int) -> str:
    """A token spelled as the service spells its own, for a position the service never made."""
    real = base64.urlsafe_b64decode(page_token.encode(f, 0) + "==")
    raw = struct.pack(">BQ8s", version, seq, real[9:])
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


@st.composite
def list_requests(draw: st.DrawFn) -> pb.ListCampaignsRequest:
    # Mostly requests valid but for their token, so that the token is what gets looked at.
    request = pb.ListCampaignsRequest(
        customer_id=draw(st.one_of(st.sampled_from((CUSTOMER, OTHER)), customers)),
        page_size=draw(int32s),
        show_deleted=draw(st.booleans()),
    )
    request.status = draw(st.one_of(st.integers(0, 3), enums))  # type: ignore[assignment]
    request.type = draw(st.one_of(st.integers(0, 2), enums))  # type: ignore[assignment]
    kind = draw(st.sampled_from(("none", "text", "base64", "forged", "forged", "other filters")))
    if kind == "text":
        request.page_token = draw(st.text(max_size=40))
    elif kind == "base64":
        request.page_token = base64.urlsafe_b64encode(draw(st.binary(max_size=40))).decode()
    elif kind != "none":
        f = ListFilter(
            request.customer_id,
            Status(request.status) if 0 <= request.status <= 3 else Status.UNSPECIFIED,
            CampaignType(request.type) if 0 <= request.type <= 2 else CampaignType.UNSPECIFIED,
            request.show_deleted,
        )
        if kind == "other filters":
            f = ListFilter(draw(st.sampled_from((CUSTOMER, OTHER))), show_deleted=True)
        version = draw(st.sampled_from((1, 1, 1, 0, 255)))
        seq = draw(
            st.one_of(
                st.sampled_from((0, 1, 2**31, 2**63 - 1, 2**63, 2**64 - 1)),
                st.integers(0, 2**64 - 1),
            )
        )
        request.page_token = _forged(f, version, seq)
    return request


# -- the server and its stored data -----------------------------------------------------------


@dataclass
class Live:
    stub: Stub
    db_path: Path

    def stored(self) -> dict[str, list[tuple[Any, ...]]]:
        return stored_rows(self.db_path)

    async def check(self, call: Awaitable[Any]) -> Any:
        """Awaits a call; a rejection must be clean, and must have changed nothing stored.

        Returns the response, or None when the call was rejected.
        """
        before = self.stored()
        try:
            return await call
        except grpc.aio.AioRpcError as err:
            error = err
        assert error.code() not in (Code.INTERNAL, Code.UNKNOWN), (error.code(), error.details())
        assert error.code() != Code.DEADLINE_EXCEEDED, "the server did not answer in time"
        details_of(error)  # a google.rpc.Status with one ErrorInfo of our domain
        assert self.stored() == before, f"{error.code()} but the stored data changed"
        return None


async def _seed(stub: Stub) -> None:
    def draft(customer: str, id_: str, outdial: str = "") -> pb.Campaign:
        return pb.Campaign(
            id=id_,
            customer_id=customer,
            type=pb.Campaign.TYPE_CALL,
            outplan_id=SHARED,
            outdial_id=outdial,
            actions=[pb.Action(type="answer")],
        )

    for m in (
        draft(CUSTOMER, STOPPED),
        draft(CUSTOMER, RUNNING, OUTDIAL),
        draft(CUSTOMER, DELETED),
        draft(CUSTOMER, SHARED),
        draft(OTHER, THEIRS, OUTDIAL),
    ):
        await stub.CreateCampaign(pb.CreateCampaignRequest(campaign=m), timeout=10)
    await stub.UpdateCampaignStatus(
        pb.UpdateCampaignStatusRequest(
            customer_id=CUSTOMER, id=RUNNING, status=pb.Campaign.STATUS_RUN
        ),
        timeout=10,
    )
    await stub.DeleteCampaign(
        pb.DeleteCampaignRequest(customer_id=CUSTOMER, id=DELETED), timeout=10
    )


@pytest.fixture
async def live(start_server: Any, tmp_path: Path) -> AsyncIterator[Live]:
    db_path = tmp_path / "properties.db"
    app = await start_server(
        Settings(
            listen="127.0.0.1:0",
            database_url=f"sqlite:///{db_path}",
            heartbeat_interval=0.2,
            shutdown_grace=1,
        )
    )
    async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel:
        stub = campaign_pb2_grpc.CampaignServiceStub(channel)
        await _seed(stub)
        yield Live(stub, db_path)


def _same_key(response: Any, customer_id: str, campaign_id: str) -> None:
    """An accepted call on a key answers with that campaign of that customer, no other."""
    assert response.campaign.customer_id == customer_id
    assert response.campaign.id == campaign_id


# -- the properties ---------------------------------------------------------------------------


@PROFILE
@given(campaign=campaigns(), request_id=ids)
async def test_hostile_creates_are_answered_cleanly(
    live: Live, campaign: pb.Campaign, request_id: str
) -> None:
    response = await live.check(
        live.stub.CreateCampaign(
            pb.CreateCampaignRequest(campaign=campaign, request_id=request_id), timeout=10
        )
    )
    if response is not None:
        assert response.campaign.customer_id == campaign.customer_id
        assert response.campaign.status == pb.Campaign.STATUS_STOP


@PROFILE
@given(
    campaign=campaigns(),
    known=st.sampled_from(KNOWN_IDS),
    use_known=st.booleans(),
    paths=masks,
    etag=st.sampled_from(("", "current", "garbage")),
)
async def test_hostile_updates_are_answered_cleanly(
    live: Live, campaign: pb.Campaign, known: str, use_known: bool, paths: list[str], etag: str
) -> None:
    if use_known:
        campaign.id = known
    if etag == "current":
        with contextlib.suppress(grpc.aio.AioRpcError):
            found = await live.stub.GetCampaign(
                pb.GetCampaignRequest(customer_id=campaign.customer_id, id=campaign.id),
                timeout=10,
            )
            campaign.etag = found.campaign.etag
    elif etag == "garbage":
        campaign.etag = "0123456789abcdef"
    response = await live.check(
        live.stub.UpdateCampaign(
            pb.UpdateCampaignRequest(
                campaign=campaign, update_mask=field_mask_pb2.FieldMask(paths=paths)
            ),
            timeout=10,
        )
    )
    if response is not None:
        _same_key(response, campaign.customer_id, campaign.id)


KEYED = (
    "GetCampaign",
    "DeleteCampaign",
    "UndeleteCampaign",
    "UpdateCampaignStatus",
    "ReportOutdialExhausted",
)


@PROFILE
@given(
    method=st.sampled_from(KEYED),
    customer_id=customers,
    campaign_id=ids,
    etag=st.one_of(st.just(""), st.text(max_size=20)),
    status=enums,
    force=st.booleans(),
)
async def test_hostile_calls_on_one_campaign_are_answered_cleanly(
    live: Live, method: str, customer_id: str, campaign_id: str, etag: str, status: int, force: bool
) -> None:
    request: Any
    match method:
        case "GetCampaign":
            request = pb.GetCampaignRequest(customer_id=customer_id, id=campaign_id)
        case "DeleteCampaign":
            request = pb.DeleteCampaignRequest(customer_id=customer_id, id=campaign_id, etag=etag)
        case "UndeleteCampaign":
            request = pb.UndeleteCampaignRequest(customer_id=customer_id, id=campaign_id)
        case "UpdateCampaignStatus":
            request = pb.UpdateCampaignStatusRequest(
                customer_id=customer_id, id=campaign_id, force=force
            )
            request.status = status
        case _:
            request = pb.ReportOutdialExhaustedRequest(customer_id=customer_id, id=campaign_id)
    response = await live.check(getattr(live.stub, method)(request, timeout=10))
    if response is not None:
        _same_key(response, customer_id, campaign_id)


@PROFILE
@given(request=list_requests())
async def test_hostile_listings_are_answered_cleanly(
    live: Live, request: pb.ListCampaignsRequest
) -> None:
    response = await live.check(live.stub.ListCampaigns(request, timeout=10))
    if response is not None:
        assert all(c.customer_id == request.customer_id for c in response.campaigns)
        if not request.show_deleted:
            assert not any(c.HasField("tm_delete") for c in response.campaigns)


@PROFILE
@given(customer_id=customers, campaign_id=ids, after_revision=int64s)
async def test_hostile_watches_are_answered_cleanly(
    live: Live, customer_id: str, campaign_id: str, after_revision: int
) -> None:
    """The first message or the error, whichever comes: every watch sends one or the other
    within a heartbeat interval."""
    call = live.stub.WatchStatus(
        pb.WatchStatusRequest(
            customer_id=customer_id, campaign_id=campaign_id, after_revision=after_revision
        ),
        timeout=10,
    )
    try:
        first = await live.check(call.read())
    finally:
        call.cancel()
    if first is not None:
        assert first is not grpc.aio.EOF, "a watch ended without a message or an error"
        if customer_id:
            assert first.customer_id in ("", customer_id)


async def test_a_nul_in_a_name_is_refused_without_failing_the_writes_beside_it(
    stub: Stub, customer: str
) -> None:
    """Found by the properties above on PostgreSQL, whose text cannot hold NUL: the one bad
    create failed the whole group commit, and the good creates beside it with UNAVAILABLE."""

    async def create(name: str) -> Any:
        campaign = pb.Campaign(customer_id=customer, type=pb.Campaign.TYPE_CALL, name=name)
        return await stub.CreateCampaign(pb.CreateCampaignRequest(campaign=campaign), timeout=10)

    results = await asyncio.gather(
        create("before"), create("bad\x00name"), create("after"), return_exceptions=True
    )
    assert [type(r) for r in results[::2]] == [pb.CreateCampaignResponse] * 2
    assert isinstance(results[1], grpc.aio.AioRpcError)
    assert details_of(results[1]).fields == {"campaign.name"}
