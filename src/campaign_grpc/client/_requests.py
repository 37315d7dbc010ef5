"""The request of each call, and whether repeating it is safe (so whether it is retried).

A retry may repeat a request that the server already carried out (its reply was lost), so
only requests whose repetition changes nothing more are retried:
- reads: GetCampaign, ListCampaigns;
- CreateCampaign with a request_id: the client makes one when the caller gives none, so a
  repeat returns the first result;
- UpdateCampaign and DeleteCampaign with an etag: a repeat of one that was carried out
  fails with ABORTED instead of overwriting a change made in between (read the campaign to
  see); without an etag they are not retried;
- UndeleteCampaign: undeleting a live campaign returns it unchanged;
- UpdateCampaignStatus: a repeated RUN or STOP returns the campaign unchanged (a STOP only
  asks; the dialer's confirmation of a drain is a call of its own);
- ConfirmDrained: it names the stop it confirms, and a repeat of one that completed
  returns the campaign unchanged;
- ReportOutdialExhausted: a repeated report returns the campaign unchanged.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from typing import TypeAlias

from google.protobuf import field_mask_pb2

from campaign.v1 import campaign_pb2 as pb

Status: TypeAlias = pb.Campaign.Status.ValueType
Type: TypeAlias = pb.Campaign.Type.ValueType
View: TypeAlias = pb.WatchView.ValueType


def create(campaign: pb.Campaign, request_id: str) -> tuple[pb.CreateCampaignRequest, bool]:
    request_id = request_id or str(uuid.uuid4())
    return pb.CreateCampaignRequest(campaign=campaign, request_id=request_id), True


def get(customer_id: str, campaign_id: str) -> tuple[pb.GetCampaignRequest, bool]:
    return pb.GetCampaignRequest(customer_id=customer_id, id=campaign_id), True


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
    return request, True


def update(
    campaign: pb.Campaign, update_mask: Iterable[str]
) -> tuple[pb.UpdateCampaignRequest, bool]:
    mask = field_mask_pb2.FieldMask(paths=list(update_mask))
    return pb.UpdateCampaignRequest(campaign=campaign, update_mask=mask), bool(campaign.etag)


def delete(customer_id: str, campaign_id: str, etag: str) -> tuple[pb.DeleteCampaignRequest, bool]:
    return pb.DeleteCampaignRequest(customer_id=customer_id, id=campaign_id, etag=etag), bool(etag)


def undelete(customer_id: str, campaign_id: str) -> tuple[pb.UndeleteCampaignRequest, bool]:
    return pb.UndeleteCampaignRequest(customer_id=customer_id, id=campaign_id), True


def update_status(
    customer_id: str, campaign_id: str, status: Status, force: bool, etag: str
) -> tuple[pb.UpdateCampaignStatusRequest, bool]:
    request = pb.UpdateCampaignStatusRequest(
        customer_id=customer_id, id=campaign_id, status=status, force=force, etag=etag
    )
    return request, True


def confirm_drained(
    customer_id: str, campaign_id: str, stop_revision: int
) -> tuple[pb.ConfirmDrainedRequest, bool]:
    request = pb.ConfirmDrainedRequest(
        customer_id=customer_id, id=campaign_id, stop_revision=stop_revision
    )
    return request, True


def report_outdial_exhausted(
    customer_id: str, campaign_id: str
) -> tuple[pb.ReportOutdialExhaustedRequest, bool]:
    return pb.ReportOutdialExhaustedRequest(customer_id=customer_id, id=campaign_id), True
