"""The request of each call, and whether repeating it is safe (so whether it is retried).

A retry may repeat a request that the server already carried out (its reply was lost), so
only requests whose repetition changes nothing more are retried. Each method's options in the
contract say which (see campaign_grpc_client.methods): a read always; another call as it is, or only
when its request sets a key or a condition: CreateCampaign's request_id, which the client
makes when the caller gives none, so that a repeat returns the first result; an etag, so that
a repeat of a call carried out fails with ABORTED instead of overwriting a change made in
between (read the campaign to see).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from typing import TypeAlias

from google.protobuf import field_mask_pb2

from .methods import safe_to_retry
from .v1 import campaign_pb2 as pb

Status: TypeAlias = pb.Campaign.Status.ValueType
Type: TypeAlias = pb.Campaign.Type.ValueType
View: TypeAlias = pb.WatchView.ValueType


def create(campaign: pb.Campaign, request_id: str) -> tuple[pb.CreateCampaignRequest, bool]:
    request_id = request_id or str(uuid.uuid4())
    request = pb.CreateCampaignRequest(campaign=campaign, request_id=request_id)
    return request, safe_to_retry("CreateCampaign", request)


def get(customer_id: str, campaign_id: str) -> tuple[pb.GetCampaignRequest, bool]:
    request = pb.GetCampaignRequest(customer_id=customer_id, id=campaign_id)
    return request, safe_to_retry("GetCampaign", request)


def list_page(
    customer_id: str,
    page_size: int,
    page_token: str,
    status: Status,
    type: Type,
    show_deleted: bool,
) -> tuple[pb.ListCampaignsRequest, bool]:
    request = pb.ListCampaignsRequest(
        customer_id=customer_id,
        page_size=page_size,
        page_token=page_token,
        status=status,
        type=type,
        show_deleted=show_deleted,
    )
    return request, safe_to_retry("ListCampaigns", request)


def list_events(
    customer_id: str, campaign_id: str, page_size: int, page_token: str, view: View
) -> tuple[pb.ListCampaignEventsRequest, bool]:
    request = pb.ListCampaignEventsRequest(
        customer_id=customer_id,
        campaign_id=campaign_id,
        page_size=page_size,
        page_token=page_token,
        view=view,
    )
    return request, safe_to_retry("ListCampaignEvents", request)


def update(
    campaign: pb.Campaign, update_mask: Iterable[str]
) -> tuple[pb.UpdateCampaignRequest, bool]:
    mask = field_mask_pb2.FieldMask(paths=list(update_mask))
    request = pb.UpdateCampaignRequest(campaign=campaign, update_mask=mask)
    return request, safe_to_retry("UpdateCampaign", request)


def delete(customer_id: str, campaign_id: str, etag: str) -> tuple[pb.DeleteCampaignRequest, bool]:
    request = pb.DeleteCampaignRequest(customer_id=customer_id, id=campaign_id, etag=etag)
    return request, safe_to_retry("DeleteCampaign", request)


def undelete(customer_id: str, campaign_id: str) -> tuple[pb.UndeleteCampaignRequest, bool]:
    request = pb.UndeleteCampaignRequest(customer_id=customer_id, id=campaign_id)
    return request, safe_to_retry("UndeleteCampaign", request)


def update_status(
    customer_id: str, campaign_id: str, status: Status, force: bool, etag: str
) -> tuple[pb.UpdateCampaignStatusRequest, bool]:
    request = pb.UpdateCampaignStatusRequest(
        customer_id=customer_id, id=campaign_id, status=status, force=force, etag=etag
    )
    return request, safe_to_retry("UpdateCampaignStatus", request)


def confirm_drained(
    customer_id: str, campaign_id: str, stop_revision: int, fencing_token: int = 0
) -> tuple[pb.ConfirmDrainedRequest, bool]:
    request = pb.ConfirmDrainedRequest(
        customer_id=customer_id,
        id=campaign_id,
        stop_revision=stop_revision,
        fencing_token=fencing_token,
    )
    return request, safe_to_retry("ConfirmDrained", request)


def report_outdial_exhausted(
    customer_id: str, campaign_id: str, fencing_token: int = 0
) -> tuple[pb.ReportOutdialExhaustedRequest, bool]:
    request = pb.ReportOutdialExhaustedRequest(
        customer_id=customer_id, id=campaign_id, fencing_token=fencing_token
    )
    return request, safe_to_retry("ReportOutdialExhausted", request)
