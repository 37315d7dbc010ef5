"""Campaigns of the largest documented size: 1,000 actions with 170-byte options, about
200 KB each. Every page of them reaches a client with gRPC's default limits, and reading
them keeps the server's caches within their budget."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import grpc
from google.protobuf import field_mask_pb2

from campaign_grpc.ops.server import App
from campaign_grpc.settings import Settings
from campaign_grpc_client import AsyncCampaignClient
from campaign_grpc_client.v1 import campaign_pb2 as pb
from campaign_grpc_client.v1 import campaign_pb2_grpc
from e2e_helpers import create, get
from factories import big_campaign

MIB = 1024 * 1024
# About 4.5 MB: a default page of them all is past the 4 MiB a default client receives.
BIG = 20


async def test_every_page_of_big_campaigns_reaches_a_client_with_default_limits(
    server: App, stub: campaign_pb2_grpc.CampaignServiceStub, customer: str
) -> None:
    created = [(await create(stub, big_campaign(customer))).id for _ in range(BIG)]
    newest_first = created[::-1]

    # The project's own client, with gRPC's default receive limit of 4 MiB.
    async with AsyncCampaignClient(f"127.0.0.1:{server.port}") as client:
        walked = [c.id async for c in client.iter_campaigns(customer)]
        assert walked == newest_first
        # page_size asks for a thousand: the page holds what fits in the budget, and says
        # there is more.
        page = await client.list_campaigns(customer, page_size=1000)
    assert 1 <= len(page.campaigns) < BIG
    assert page.ByteSize() <= MIB
    assert page.next_page_token

    # A plain channel, default options: page after page, each within the budget.
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        plain = campaign_pb2_grpc.CampaignServiceStub(channel)
        token, seen = "", []
        while True:
            page = await plain.ListCampaigns(
                pb.ListCampaignsRequest(customer_id=customer, page_token=token), timeout=10
            )
            assert page.ByteSize() <= MIB
            seen += [c.id for c in page.campaigns]
            token = page.next_page_token
            if not token:
                break
    assert seen == newest_first


async def test_reading_big_campaigns_keeps_the_caches_within_their_budget(
    start_server: Callable[..., Any], settings: Settings, customer: str
) -> None:
    budget = 2 * MIB
    server: App = await start_server(settings, cache_bytes=budget)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        stub = campaign_pb2_grpc.CampaignServiceStub(channel)
        created = [await create(stub, big_campaign(customer)) for _ in range(8)]
        for c in created:
            assert (await get(stub, customer, c.id)) == c
            assert server.caches.bytes <= budget
        page = await stub.ListCampaigns(pb.ListCampaignsRequest(customer_id=customer), timeout=10)
        assert server.caches.bytes <= budget
    assert list(page.campaigns) == created[::-1][: len(page.campaigns)]


async def test_every_page_of_full_events_of_big_campaigns_reaches_a_default_client(
    server: App, stub: campaign_pb2_grpc.CampaignServiceStub, customer: str
) -> None:
    created = await create(stub, big_campaign(customer))
    # 31 changes, each event carrying the whole campaign in the full view: about 6.8 MB.
    for n in range(30):
        await stub.UpdateCampaign(
            pb.UpdateCampaignRequest(
                campaign=pb.Campaign(customer_id=customer, id=created.id, name=f"turn {n}"),
                update_mask=field_mask_pb2.FieldMask(paths=["name"]),
            ),
            timeout=10,
        )

    # A plain channel, default options (4 MiB received at most): page after page, each
    # within the budget, the whole history once, newest first.
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        plain = campaign_pb2_grpc.CampaignServiceStub(channel)
        token, pages, revisions = "", 0, []
        while True:
            page = await plain.ListCampaignEvents(
                pb.ListCampaignEventsRequest(
                    customer_id=customer, view=pb.WATCH_VIEW_FULL, page_token=token
                ),
                timeout=10,
            )
            assert page.ByteSize() <= MIB
            assert all(len(e.campaign.actions) == 1000 for e in page.events)
            pages += 1
            revisions += [e.revision for e in page.events]
            token = page.next_page_token
            if not token:
                break
    assert pages > 1
    assert len(revisions) == 31
    assert revisions == sorted(set(revisions), reverse=True)
