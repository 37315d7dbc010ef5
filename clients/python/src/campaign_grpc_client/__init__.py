"""A typed Python client of campaign.v1.CampaignService, blocking and asyncio.

    from campaign_grpc_client import Campaign, CampaignClient

    with CampaignClient("127.0.0.1:50051") as client:
        created = client.create_campaign(Campaign(customer_id=c, type=Campaign.TYPE_CALL))
        for item in client.watch(c):
            ...

Calls have a deadline (timeout, 10 s by default), are retried after UNAVAILABLE when that is
safe (see _requests), and raise CampaignServiceError subclasses with the google.rpc details
decoded. watch() reconnects by itself and delivers every change once. A server that asks
for TLS and a bearer token is reached with tls=TLS.from_files(root_ca=...) and token=...
service_config() is the retry policy as a gRPC service config, for a plain channel.
"""

from . import exceptions
from ._async.client import AsyncCampaignClient
from ._async.watch import AsyncWatch
from ._channel import TLS, service_config
from ._retry import DEFAULT_RETRY, DEFAULT_TIMEOUT, WATCH_RETRY, Retry
from ._sync.client import CampaignClient
from ._sync.watch import Watch
from ._watch import SnapshotReset, WatchItem
from .exceptions import CampaignServiceError, FieldViolation, PreconditionViolation
from .v1.campaign_pb2 import (
    Action,
    Campaign,
    ListCampaignsResponse,
    WatchStatusResponse,
)

__all__ = [
    "DEFAULT_RETRY",
    "DEFAULT_TIMEOUT",
    "TLS",
    "WATCH_RETRY",
    "Action",
    "AsyncCampaignClient",
    "AsyncWatch",
    "Campaign",
    "CampaignClient",
    "CampaignServiceError",
    "FieldViolation",
    "ListCampaignsResponse",
    "PreconditionViolation",
    "Retry",
    "SnapshotReset",
    "Watch",
    "WatchItem",
    "WatchStatusResponse",
    "exceptions",
    "service_config",
]
