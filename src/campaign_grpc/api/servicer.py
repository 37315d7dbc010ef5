"""campaign.v1.CampaignService: parse the request, call the domain, convert the result."""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any, TypeVar, cast

import grpc

from campaign_grpc_client.v1 import campaign_pb2 as pb
from campaign_grpc_client.v1 import campaign_pb2_grpc as pb_grpc

from ..domain.campaigns import Campaigns
from ..domain.errors import Unimplemented
from ..domain.types import Campaign, EncodedCampaign, EventFilter
from ..domain.validation import validate_view, validate_watch
from ..watch.hub import Hub
from ..watch.items import Item
from . import convert
from .callers import origin_of
from .lease_service import LeaseService
from .rpc_errors import streaming, unary

Context = grpc.aio.ServicerContext[Any, Any]
R = TypeVar("R")


class CampaignServicer(pb_grpc.CampaignServiceServicer):
    def __init__(
        self,
        campaigns: Campaigns,
        hub: Hub,
        wire: convert.CampaignWire | None = None,
        leases: LeaseService | None = None,
    ) -> None:
        self._campaigns = campaigns
        self._hub = hub
        self._leases = leases
        # Shared with the store, which weighs list pages by these messages' sizes.
        self._wire = wire or convert.CampaignWire()

    def _read(self, response: R, c: Campaign) -> R:
        """The response with its campaign field filled from the wire cache."""
        self._wire.fill(cast(Any, response).campaign, c)
        return response

    def _written(self, response: R, c: Campaign) -> R:
        """The response with its campaign field filled with a version just written: built in
        place, not encoded for the wire cache and decoded back; its first read caches it."""
        convert.fill_campaign(cast(Any, response).campaign, c)
        return response

    @unary
    async def CreateCampaign(
        self, request: pb.CreateCampaignRequest, context: Context
    ) -> pb.CreateCampaignResponse:
        draft = convert.campaign_from_proto(request.campaign)
        created = await self._campaigns.create(draft, request.request_id, origin=origin_of(context))
        return self._written(pb.CreateCampaignResponse(), created)

    @unary
    async def GetCampaign(
        self, request: pb.GetCampaignRequest, context: Context
    ) -> pb.GetCampaignResponse:
        found = await self._campaigns.get(request.customer_id, request.id)
        return self._read(pb.GetCampaignResponse(), found)

    @unary
    async def ListCampaigns(
        self, request: pb.ListCampaignsRequest, context: Context
    ) -> pb.ListCampaignsResponse:
        page = await self._campaigns.list_page(
            convert.list_filter_from_proto(request), request.page_size, request.page_token
        )
        # Sent as the cached encodings of its campaigns (see convert.EncodedPage): the store
        # weighed the page by them, and registration.add_campaign_service registers
        # convert.page_to_wire as the serializer.
        encoded = convert.EncodedPage(
            [
                c.data if isinstance(c, EncodedCampaign) else self._wire.serialized(c)
                for c in page.campaigns
            ],
            page.next_page_token,
        )
        return cast(pb.ListCampaignsResponse, encoded)

    @unary
    async def UpdateCampaign(
        self, request: pb.UpdateCampaignRequest, context: Context
    ) -> pb.UpdateCampaignResponse:
        draft = convert.campaign_from_proto(request.campaign)
        updated = await self._campaigns.update(
            draft,
            list(request.update_mask.paths),
            request.campaign.etag,
            origin=origin_of(context),
        )
        return self._written(pb.UpdateCampaignResponse(), updated)

    @unary
    async def DeleteCampaign(
        self, request: pb.DeleteCampaignRequest, context: Context
    ) -> pb.DeleteCampaignResponse:
        deleted = await self._campaigns.delete(
            request.customer_id, request.id, request.etag, origin=origin_of(context)
        )
        return self._written(pb.DeleteCampaignResponse(), deleted)

    @unary
    async def UndeleteCampaign(
        self, request: pb.UndeleteCampaignRequest, context: Context
    ) -> pb.UndeleteCampaignResponse:
        restored = await self._campaigns.undelete(
            request.customer_id, request.id, origin=origin_of(context)
        )
        return self._written(pb.UndeleteCampaignResponse(), restored)

    @unary
    async def UpdateCampaignStatus(
        self, request: pb.UpdateCampaignStatusRequest, context: Context
    ) -> pb.UpdateCampaignStatusResponse:
        changed = await self._campaigns.set_status(
            request.customer_id,
            request.id,
            request.status,
            request.force,
            request.etag,
            origin=origin_of(context),
        )
        return self._written(pb.UpdateCampaignStatusResponse(), changed)

    @unary
    async def ConfirmDrained(
        self, request: pb.ConfirmDrainedRequest, context: Context
    ) -> pb.ConfirmDrainedResponse:
        confirmed = await self._campaigns.confirm_drained(
            request.customer_id,
            request.id,
            request.stop_revision,
            fencing_token=request.fencing_token,
            origin=origin_of(context),
        )
        return self._written(pb.ConfirmDrainedResponse(), confirmed)

    @unary
    async def ReportOutdialExhausted(
        self, request: pb.ReportOutdialExhaustedRequest, context: Context
    ) -> pb.ReportOutdialExhaustedResponse:
        reported = await self._campaigns.report_outdial_exhausted(
            request.customer_id,
            request.id,
            fencing_token=request.fencing_token,
            origin=origin_of(context),
        )
        return self._written(pb.ReportOutdialExhaustedResponse(), reported)

    @unary
    async def ListCampaignEvents(
        self, request: pb.ListCampaignEventsRequest, context: Context
    ) -> pb.ListCampaignEventsResponse:
        validate_view(request.view)
        full = request.view == pb.WATCH_VIEW_FULL
        page = await self._campaigns.list_events(
            EventFilter(request.customer_id, request.campaign_id),
            request.page_size,
            request.page_token,
            full=full,
        )
        response = pb.ListCampaignEventsResponse(
            next_page_token=page.next_page_token, timeline=self._hub.timeline
        )
        add = response.events.add
        for event in page.events:
            convert.fill_event(add(), event, full=full)
        return response

    @streaming
    def WatchStatus(
        self, request: pb.WatchStatusRequest, context: Context
    ) -> AsyncGenerator[Item, None]:
        """The hub's items: registration.add_campaign_service registers convert.item_to_wire as
        the serializer, so that a change is encoded once for all the streams that send it."""
        validate_watch(
            request.customer_id,
            request.campaign_id,
            request.after_revision,
            request.view,
            request.timeline,
        )
        return self._hub.watch(
            request.customer_id,
            request.campaign_id,
            request.after_revision,
            full=request.view == pb.WATCH_VIEW_FULL,
            timeline=request.timeline,
            leases=request.include_leases,
        )

    @streaming
    def HoldLeases(
        self, requests: AsyncIterator[pb.HoldLeasesRequest], context: Context
    ) -> AsyncGenerator[pb.HoldLeasesResponse, None]:
        if self._leases is None:
            raise Unimplemented("this server grants no leases")
        return self._leases.hold(requests, context)
