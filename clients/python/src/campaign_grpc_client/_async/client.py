"""AsyncCampaignClient: campaign.v1.CampaignService over a grpc.aio channel."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Iterable
from types import TracebackType
from typing import TypeVar

import grpc

from .. import _requests as requests
from .._channel import KEEPALIVE_OPTIONS, TLS, Metadata, call_metadata, channel_credentials
from .._retry import (
    CHANNEL_OPTIONS,
    DEFAULT,
    DEFAULT_RETRY,
    DEFAULT_TIMEOUT,
    WATCH_RETRY,
    Default,
    Retry,
)
from .._silence import SILENT_INTERVALS
from .._watch import Resume
from ..v1 import campaign_pb2 as pb
from ..v1 import campaign_pb2_grpc as pb_grpc
from .retries import call_async
from .watch import AsyncWatch

Req = TypeVar("Req")
Resp = TypeVar("Resp")
Timeout = float | None | Default
RetryArg = Retry | None | Default


class AsyncCampaignClient:
    """An asyncio client: make it in the event loop, use it with async with, or aclose() it.

    timeout is each call's deadline in seconds, its retries included (None: no deadline);
    retry says how calls that are safe to repeat are retried after UNAVAILABLE (None: never);
    watch_retry how watch() reconnects. Every call takes timeout= and retry= of its own, and
    raises a CampaignServiceError subclass (see campaign_grpc_client.exceptions).

    tls secures a channel the client makes (or give credentials of your own); token is sent
    as a bearer token with every call, each reconnect of a watch included.
    """

    def __init__(
        self,
        target: str | None = None,
        *,
        channel: grpc.aio.Channel | None = None,
        credentials: grpc.ChannelCredentials | None = None,
        tls: TLS | None = None,
        token: str | None = None,
        timeout: float | None = DEFAULT_TIMEOUT,
        retry: Retry | None = DEFAULT_RETRY,
        watch_retry: Retry = WATCH_RETRY,
    ) -> None:
        if (target is None) == (channel is None):
            raise ValueError("give either a target (HOST:PORT) or a channel")
        self._owns_channel = channel is None
        if channel is None:
            assert target is not None
            secure = channel_credentials(credentials, tls)
            options = [*CHANNEL_OPTIONS, *KEEPALIVE_OPTIONS]
            if secure is None:
                channel = grpc.aio.insecure_channel(target, options=options)
            else:
                channel = grpc.aio.secure_channel(target, secure, options=options)
        self.channel = channel
        self._stub = pb_grpc.CampaignServiceStub(channel)
        self._metadata = call_metadata(token)
        self.timeout = timeout
        self.retry = retry
        self.watch_retry = watch_retry

    @property
    def stub(self) -> pb_grpc.CampaignServiceStub:
        """The generated stub on the client's channel, for what the client does not wrap."""
        return self._stub

    @property
    def metadata(self) -> Metadata | None:
        """What every call of the client sends (its bearer token)."""
        return self._metadata

    async def aclose(self) -> None:
        """Closes the channel if the client made it."""
        if self._owns_channel:
            await self.channel.close()

    async def __aenter__(self) -> AsyncCampaignClient:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def _call(
        self,
        rpc: grpc.aio.UnaryUnaryMultiCallable[Req, Resp],
        name: str,
        request_safe: tuple[Req, bool],
        timeout: Timeout,
        retry: RetryArg,
    ) -> Resp:
        request, safe = request_safe
        metadata = self._metadata

        def invoke(left: float | None) -> Awaitable[Resp]:
            return rpc(request, timeout=left, metadata=metadata)

        return await call_async(
            name,
            invoke,
            timeout=self.timeout if timeout is DEFAULT else timeout,
            retry=self.retry if retry is DEFAULT else retry,
            safe=safe,
        )

    async def create_campaign(
        self,
        campaign: pb.Campaign,
        *,
        request_id: str = "",
        timeout: Timeout = DEFAULT,
        retry: RetryArg = DEFAULT,
    ) -> pb.Campaign:
        """Creates a stopped campaign. Without a request_id the client makes one."""
        r = requests.create(campaign, request_id)
        response = await self._call(self._stub.CreateCampaign, "CreateCampaign", r, timeout, retry)
        return response.campaign

    async def get_campaign(
        self,
        customer_id: str,
        campaign_id: str,
        *,
        timeout: Timeout = DEFAULT,
        retry: RetryArg = DEFAULT,
    ) -> pb.Campaign:
        r = requests.get(customer_id, campaign_id)
        response = await self._call(self._stub.GetCampaign, "GetCampaign", r, timeout, retry)
        return response.campaign

    async def list_campaigns(
        self,
        customer_id: str,
        *,
        page_size: int = 0,
        page_token: str = "",
        status: requests.Status = pb.Campaign.STATUS_UNSPECIFIED,
        type: requests.Type = pb.Campaign.TYPE_UNSPECIFIED,
        show_deleted: bool = False,
        timeout: Timeout = DEFAULT,
        retry: RetryArg = DEFAULT,
    ) -> pb.ListCampaignsResponse:
        """One page, newest first, and the token of the next (empty on the last)."""
        r = requests.list_page(customer_id, page_size, page_token, status, type, show_deleted)
        return await self._call(self._stub.ListCampaigns, "ListCampaigns", r, timeout, retry)

    async def iter_campaigns(
        self,
        customer_id: str,
        *,
        page_size: int = 0,
        status: requests.Status = pb.Campaign.STATUS_UNSPECIFIED,
        type: requests.Type = pb.Campaign.TYPE_UNSPECIFIED,
        show_deleted: bool = False,
        timeout: Timeout = DEFAULT,
        retry: RetryArg = DEFAULT,
    ) -> AsyncIterator[pb.Campaign]:
        """Every matching campaign, newest first, page by page (each page its own call)."""
        token = ""
        while True:
            page = await self.list_campaigns(
                customer_id,
                page_size=page_size,
                page_token=token,
                status=status,
                type=type,
                show_deleted=show_deleted,
                timeout=timeout,
                retry=retry,
            )
            for campaign in page.campaigns:
                yield campaign
            token = page.next_page_token
            if not token:
                return

    async def update_campaign(
        self,
        campaign: pb.Campaign,
        update_mask: Iterable[str],
        *,
        timeout: Timeout = DEFAULT,
        retry: RetryArg = DEFAULT,
    ) -> pb.Campaign:
        """Changes the fields named in update_mask. Retried only when campaign.etag is set."""
        r = requests.update(campaign, update_mask)
        response = await self._call(self._stub.UpdateCampaign, "UpdateCampaign", r, timeout, retry)
        return response.campaign

    async def delete_campaign(
        self,
        customer_id: str,
        campaign_id: str,
        *,
        etag: str = "",
        timeout: Timeout = DEFAULT,
        retry: RetryArg = DEFAULT,
    ) -> pb.Campaign:
        """Soft-deletes a stopped campaign. Retried only with an etag."""
        r = requests.delete(customer_id, campaign_id, etag)
        response = await self._call(self._stub.DeleteCampaign, "DeleteCampaign", r, timeout, retry)
        return response.campaign

    async def undelete_campaign(
        self,
        customer_id: str,
        campaign_id: str,
        *,
        timeout: Timeout = DEFAULT,
        retry: RetryArg = DEFAULT,
    ) -> pb.Campaign:
        r = requests.undelete(customer_id, campaign_id)
        response = await self._call(
            self._stub.UndeleteCampaign, "UndeleteCampaign", r, timeout, retry
        )
        return response.campaign

    async def update_campaign_status(
        self,
        customer_id: str,
        campaign_id: str,
        status: requests.Status,
        *,
        force: bool = False,
        etag: str = "",
        timeout: Timeout = DEFAULT,
        retry: RetryArg = DEFAULT,
    ) -> pb.Campaign:
        """STATUS_RUN or STATUS_STOP (which only asks: the dialer confirms the drain with
        confirm_drained). With etag, ABORTED if the campaign changed since it was read."""
        r = requests.update_status(customer_id, campaign_id, status, force, etag)
        response = await self._call(
            self._stub.UpdateCampaignStatus, "UpdateCampaignStatus", r, timeout, retry
        )
        return response.campaign

    async def confirm_drained(
        self,
        customer_id: str,
        campaign_id: str,
        stop_revision: int,
        *,
        fencing_token: int = 0,
        timeout: Timeout = DEFAULT,
        retry: RetryArg = DEFAULT,
    ) -> pb.Campaign:
        """The dialer's word that the stop of stop_revision (the campaign's stop_revision as
        it saw it) is drained: the campaign completes to STATUS_STOP. Safe to retry. A
        dialer holding the campaign's lease passes its fencing_token."""
        r = requests.confirm_drained(customer_id, campaign_id, stop_revision, fencing_token)
        response = await self._call(self._stub.ConfirmDrained, "ConfirmDrained", r, timeout, retry)
        return response.campaign

    async def list_campaign_events(
        self,
        customer_id: str,
        campaign_id: str = "",
        *,
        page_size: int = 0,
        page_token: str = "",
        view: requests.View = pb.WATCH_VIEW_STATUS,
        timeout: Timeout = DEFAULT,
        retry: RetryArg = DEFAULT,
    ) -> pb.ListCampaignEventsResponse:
        """One page of a campaign's (or a customer's) events, newest first: what happened,
        and who did it (each event's principal)."""
        r = requests.list_events(customer_id, campaign_id, page_size, page_token, view)
        return await self._call(
            self._stub.ListCampaignEvents, "ListCampaignEvents", r, timeout, retry
        )

    async def report_outdial_exhausted(
        self,
        customer_id: str,
        campaign_id: str,
        *,
        fencing_token: int = 0,
        timeout: Timeout = DEFAULT,
        retry: RetryArg = DEFAULT,
    ) -> pb.Campaign:
        r = requests.report_outdial_exhausted(customer_id, campaign_id, fencing_token)
        response = await self._call(
            self._stub.ReportOutdialExhausted, "ReportOutdialExhausted", r, timeout, retry
        )
        return response.campaign

    def watch(
        self,
        customer_id: str = "",
        campaign_id: str = "",
        *,
        after_revision: int = 0,
        timeline: str = "",
        heartbeats: bool = False,
        view: requests.View = pb.WATCH_VIEW_STATUS,
        retry: Retry | Default = DEFAULT,
        silent_intervals: int | None = SILENT_INTERVALS,
    ) -> AsyncWatch:
        """Status changes, each once, across reconnects and server restarts.

        Yields WatchStatusResponse messages (a snapshot first unless after_revision is given;
        heartbeats only if asked for) and a SnapshotReset when it has to start again from a
        snapshot. Watch.revision is the point to resume from in a later watch(), with
        Watch.timeline as timeline (a revision of a log that forked since is refused, and
        the watch starts again from a snapshot rather than skip changes). With view
        WATCH_VIEW_FULL every snapshot item and change carries the campaign as of its
        revision.

        A stream without any message for silent_intervals heartbeat intervals (as the server
        announces them; 10 s until it does) is taken for dead, as a paused server or a
        connection a NAT forgot would leave it: the watch cancels it and reconnects, resuming
        as after UNAVAILABLE. None waits for ever.
        """
        resume = Resume(
            customer_id, campaign_id, after_revision, heartbeats, view, timeline, silent_intervals
        )
        return AsyncWatch(
            self._stub, resume, self.watch_retry if retry is DEFAULT else retry, self._metadata
        )
