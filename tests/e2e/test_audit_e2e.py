"""Who changed what, over a socket: principals on events for tokens, mutual TLS, anonymous
callers and the service's own timers; ListCampaignEvents paging and isolation; the audit log."""

from __future__ import annotations

import contextlib
import hashlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import field_mask_pb2

from campaign_grpc.ops.server import App
from campaign_grpc.settings import Settings
from campaign_grpc_client.v1 import campaign_pb2 as pb
from campaign_grpc_client.v1 import campaign_pb2_grpc
from certificates import Authority
from e2e_helpers import confirm_drained, create, eventually, fails, set_status, token_line
from factories import new_id, runnable_campaign

Code = grpc.StatusCode
C = pb.Campaign
W = pb.WatchStatusResponse
Stub = campaign_pb2_grpc.CampaignServiceStub
Start = Callable[..., Awaitable[App]]

PORTAL_TOKEN = "9d1c2b3a4f5e6d7c8b9a0f1e2d3c4b5a"
DIALER_TOKEN = "1a2b3c4d5e6f7a8b9c0d1e2f3a4b5c6d"


def bearer(token: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),)


async def history(
    stub: Stub,
    customer: str,
    campaign_id: str = "",
    *,
    page_size: int = 0,
    metadata: Any = None,
) -> list[Any]:
    """Every event of a listing, walking all its pages."""
    events: list[Any] = []
    token = ""
    while True:
        page = await stub.ListCampaignEvents(
            pb.ListCampaignEventsRequest(
                customer_id=customer,
                campaign_id=campaign_id,
                page_size=page_size,
                page_token=token,
            ),
            metadata=metadata,
            timeout=10,
        )
        events += page.events
        token = page.next_page_token
        if not token:
            return events


def who(events: list[Any]) -> list[tuple[int, str]]:
    """(reason, principal) of each event, oldest first."""
    return [(e.reason, e.principal) for e in reversed(events)]


@contextlib.asynccontextmanager
async def serve(start_server: Start, settings: Settings, **changes: Any) -> AsyncIterator[Stub]:
    app = await start_server(settings, **changes)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel:
        yield Stub(channel)


# -- principals -------------------------------------------------------------------------------


async def test_each_change_names_the_token_that_made_it(
    start_server: Start, settings: Settings, customer: str, tmp_path: Path
) -> None:
    tokens = tmp_path / "tokens.txt"
    named = token_line(PORTAL_TOKEN, customer).rstrip("\n") + " portal-acme\n"
    tokens.write_text(named + token_line(DIALER_TOKEN, "*"))
    async with serve(start_server, settings, auth_tokens=str(tokens)) as stub:
        portal, dialer = bearer(PORTAL_TOKEN), bearer(DIALER_TOKEN)

        request = pb.CreateCampaignRequest(campaign=runnable_campaign(customer))
        c = (await stub.CreateCampaign(request, metadata=portal, timeout=10)).campaign
        run = pb.UpdateCampaignStatusRequest(customer_id=customer, id=c.id, status=C.STATUS_RUN)
        await stub.UpdateCampaignStatus(run, metadata=dialer, timeout=10)

        unnamed = "token:" + hashlib.sha256(DIALER_TOKEN.encode()).hexdigest()[:12]
        events = await history(stub, customer, metadata=portal)
        assert who(events) == [(W.REASON_CREATED, "portal-acme"), (W.REASON_REQUESTED, unnamed)]
        assert DIALER_TOKEN not in str(events)


async def test_without_authentication_the_principal_is_anonymous(stub: Stub, customer: str) -> None:
    c = await create(stub, runnable_campaign(customer))
    await set_status(stub, customer, c.id, C.STATUS_RUN)
    assert {e.principal for e in await history(stub, customer)} == {"anonymous"}


async def test_under_mutual_tls_the_principal_is_the_client_certificate(
    start_server: Start, settings: Settings, customer: str, tmp_path: Path
) -> None:
    ca = Authority(tmp_path, "ca")
    server, client = ca.issue("server", server=True), ca.issue("dialer-eu1", server=False)
    app = await start_server(
        settings,
        tls_cert=str(server.cert),
        tls_key=str(server.key),
        tls_client_ca=str(ca.ca.cert),
    )
    credentials = grpc.ssl_channel_credentials(
        root_certificates=ca.ca.cert.read_bytes(),
        private_key=client.key.read_bytes(),
        certificate_chain=client.cert.read_bytes(),
    )
    async with grpc.aio.secure_channel(f"localhost:{app.port}", credentials) as channel:
        stub = Stub(channel)
        await create(stub, runnable_campaign(customer))
        (event,) = await history(stub, customer)
    assert "CN=dialer-eu1" in event.principal


async def test_the_service_is_the_principal_of_its_timers_and_chains(
    start_server: Start, settings: Settings, customer: str
) -> None:
    async with serve(start_server, settings, stop_grace=0.3) as stub:
        # A chain: the dialer's confirmation is the caller's, the chained start the service's.
        following = await create(stub, runnable_campaign(customer))
        first = await create(stub, runnable_campaign(customer, next_campaign_id=following.id))
        await set_status(stub, customer, first.id, C.STATUS_RUN)
        finishing = (
            await stub.ReportOutdialExhausted(
                pb.ReportOutdialExhaustedRequest(customer_id=customer, id=first.id), timeout=10
            )
        ).campaign
        await confirm_drained(stub, customer, first.id, finishing.stop_revision)
        # A stop left to its grace.
        await set_status(stub, customer, following.id, C.STATUS_STOP)

        async def expired() -> bool:
            found = await stub.GetCampaign(
                pb.GetCampaignRequest(customer_id=customer, id=following.id)
            )
            return found.campaign.status == C.STATUS_STOP

        await eventually(expired, within=10)
        events = await history(stub, customer)
        by_reason = {e.reason: e.principal for e in events}
        assert by_reason[W.REASON_DRAINED] == "anonymous"
        assert by_reason[W.REASON_CHAINED] == "service"
        assert by_reason[W.REASON_GRACE_EXPIRED] == "service"


# -- ListCampaignEvents -----------------------------------------------------------------------


async def test_a_walk_of_events_is_newest_first_and_never_skips_or_repeats(
    stub: Stub, customer: str
) -> None:
    c = await create(stub, runnable_campaign(customer))
    other = await create(stub, runnable_campaign(customer))
    for _ in range(6):
        await set_status(stub, customer, c.id, C.STATUS_RUN)
        await set_status(stub, customer, c.id, C.STATUS_STOP, force=True)
    logged = await history(stub, customer, page_size=1000)
    assert [e.revision for e in logged] == sorted((e.revision for e in logged), reverse=True)

    # Paged while more is written: the walk is what was there when it began, once each.
    walked: list[Any] = []
    token = ""
    while True:
        page = await stub.ListCampaignEvents(
            pb.ListCampaignEventsRequest(customer_id=customer, page_size=4, page_token=token)
        )
        walked += page.events
        await set_status(stub, customer, other.id, C.STATUS_RUN)
        await set_status(stub, customer, other.id, C.STATUS_STOP, force=True)
        token = page.next_page_token
        if not token:
            break
    assert walked[4:] == logged[4:]
    assert len({e.revision for e in walked}) == len(walked)
    assert walked[-1].reason == W.REASON_CREATED

    only_c = await history(stub, customer, c.id, page_size=5)
    assert {e.campaign_id for e in only_c} == {c.id}
    assert len(only_c) == 13
    # A token is bound to its listing's filters.
    page = await stub.ListCampaignEvents(
        pb.ListCampaignEventsRequest(customer_id=customer, campaign_id=c.id, page_size=2)
    )
    elsewhere = pb.ListCampaignEventsRequest(
        customer_id=customer, campaign_id=other.id, page_token=page.next_page_token
    )
    refused = await fails(stub.ListCampaignEvents(elsewhere), Code.INVALID_ARGUMENT)
    assert refused.info.reason == "INVALID_PAGE_TOKEN"


async def test_the_full_view_of_history_shows_each_campaign_as_it_was(
    stub: Stub, customer: str
) -> None:
    c = await create(stub, runnable_campaign(customer, name="first"))

    rename = pb.UpdateCampaignRequest(
        campaign=pb.Campaign(customer_id=customer, id=c.id, name="second"),
        update_mask=field_mask_pb2.FieldMask(paths=["name"]),
    )
    await stub.UpdateCampaign(rename, timeout=10)
    page = await stub.ListCampaignEvents(
        pb.ListCampaignEventsRequest(customer_id=customer, view=pb.WATCH_VIEW_FULL)
    )
    assert [e.campaign.name for e in page.events] == ["second", "first"]


async def test_a_customer_token_sees_only_its_customers_events(
    start_server: Start, settings: Settings, customer: str, tmp_path: Path
) -> None:
    other = new_id()
    tokens = tmp_path / "tokens.txt"
    tokens.write_text(token_line(PORTAL_TOKEN, customer) + token_line(DIALER_TOKEN, "*"))
    async with serve(start_server, settings, auth_tokens=str(tokens)) as stub:
        dialer, portal = bearer(DIALER_TOKEN), bearer(PORTAL_TOKEN)
        theirs = (
            await stub.CreateCampaign(
                pb.CreateCampaignRequest(campaign=runnable_campaign(other)), metadata=dialer
            )
        ).campaign
        mine = (
            await stub.CreateCampaign(
                pb.CreateCampaignRequest(campaign=runnable_campaign(customer)), metadata=portal
            )
        ).campaign

        denied = await fails(
            stub.ListCampaignEvents(
                pb.ListCampaignEventsRequest(customer_id=other), metadata=portal
            ),
            Code.PERMISSION_DENIED,
        )
        assert denied.info.reason == "CUSTOMER_NOT_ALLOWED"
        hidden = pb.ListCampaignEventsRequest(customer_id=customer, campaign_id=theirs.id)
        await fails(stub.ListCampaignEvents(hidden, metadata=portal), Code.NOT_FOUND)
        own = await history(stub, customer, metadata=portal)
        assert [(e.campaign_id, e.customer_id) for e in own] == [(mine.id, customer)]
        assert {e.principal for e in own} != {
            e.principal for e in await history(stub, other, metadata=dialer)
        }


# -- the audit log ----------------------------------------------------------------------------


async def test_one_audit_line_for_every_write_attempt_accepted_or_refused(
    start_server: Start,
    settings: Settings,
    customer: str,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    tokens = tmp_path / "tokens.txt"
    tokens.write_text(token_line(PORTAL_TOKEN, customer).rstrip("\n") + " portal-acme\n")
    async with serve(start_server, settings, auth_tokens=str(tokens)) as stub:
        portal = bearer(PORTAL_TOKEN)
        caplog.set_level(logging.INFO, logger="campaign_grpc.audit")

        created = (
            await stub.CreateCampaign(
                pb.CreateCampaignRequest(campaign=runnable_campaign(customer)), metadata=portal
            )
        ).campaign
        missing = new_id()
        await fails(
            stub.DeleteCampaign(
                pb.DeleteCampaignRequest(customer_id=customer, id=missing), metadata=portal
            ),
            Code.NOT_FOUND,
        )
        await stub.GetCampaign(
            pb.GetCampaignRequest(customer_id=customer, id=created.id), metadata=portal
        )
        await fails(
            stub.UndeleteCampaign(pb.UndeleteCampaignRequest(customer_id=customer, id=created.id)),
            Code.UNAUTHENTICATED,
        )

        def lines() -> list[tuple[str, ...]]:
            return [
                (r.method, r.code, r.principal, r.customer_id, r.campaign_id)  # type: ignore[attr-defined]
                for r in caplog.records
                if r.name == "campaign_grpc.audit"
            ]

        # A refusal's status goes out as the call aborts, before its line is written.
        async def all_written() -> bool:
            return len(lines()) >= 3

        await eventually(all_written)
        assert lines() == [
            ("CreateCampaign", "OK", "portal-acme", customer, created.id),
            ("DeleteCampaign", "NOT_FOUND", "portal-acme", customer, missing),
            ("UndeleteCampaign", "UNAUTHENTICATED", "unauthenticated", customer, created.id),
        ]
