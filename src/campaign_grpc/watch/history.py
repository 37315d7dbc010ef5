"""What a watch stream sends before it follows the hub: a snapshot of the campaigns as they
are, or a replay of the log's changes after the revision the stream resumes from.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Callable
from functools import partial

from ..domain.campaigns import Campaigns
from ..domain.errors import CampaignError, NotFound, ResourceExhausted
from ..domain.types import LEASE_REASONS, Campaign, CampaignState
from ..ops.limits import UnreadBytes
from ..storage.timelines import TimelineSource
from . import errors
from .items import Item, Kind

_READ_BATCH = 1000
# Full-view events and snapshot pages carry whole campaigns (up to about 1 MB each): fewer
# at a time, so that one stream holds a few MB at most, never a whole snapshot.
_FULL_READ_BATCH = 64
_SNAPSHOT_PAGE = 1000
_FULL_SNAPSHOT_PAGE = 16


class History:
    """Reads a stream's snapshot or replay, page by page, as the stream sends it."""

    def __init__(
        self,
        campaigns: Campaigns,
        *,
        heartbeat_interval: float,
        timeline: Callable[[], str],
        timelines: TimelineSource | None,
        unread: UnreadBytes,
        on_refused: Callable[[], None],
    ) -> None:
        """timeline() is the token of the log's current timeline, as the hub last found it;
        on_refused runs when a snapshot is refused for its customer's unread bytes."""
        self._campaigns = campaigns
        self._heartbeat_interval = heartbeat_interval
        self._timeline = timeline
        self._timeline_source = timelines
        self._unread = unread
        self._on_refused = on_refused

    async def snapshot(
        self, customer_id: str, campaign_id: str, full: bool
    ) -> AsyncGenerator[Item, None]:
        """The snapshot's items in revision order, page by page, then its SNAPSHOT_END."""
        if campaign_id:
            found, head = await self._campaigns.snapshot_one(customer_id, campaign_id, full=full)
            if found is None:
                raise NotFound(f"campaign {campaign_id} not found", metadata={"id": campaign_id})
            yield _snapshot_item(found, self._timeline())
        else:
            head = await self._campaigns.head_revision()
            page_size = _FULL_SNAPSHOT_PAGE if full else _SNAPSHOT_PAGE
            after = 0
            # Asked as the first page is read, which may be long after this stream asked
            # (behind the snapshots of thousands of others): when the customer's streams
            # hold their whole budget of unread messages by then, the read is not worth
            # doing, and would only hold up other customers' snapshots behind it.
            refusal: Callable[[], CampaignError | None] = partial(
                self._unread.refusal_now, customer_id
            )
            while True:
                try:
                    page = await self._campaigns.snapshot_page(
                        customer_id, after, head, page_size, full=full, refusal=refusal
                    )
                except ResourceExhausted:
                    self._on_refused()
                    raise
                # Only the first page: a snapshot under way is not broken off.
                refusal = _admitted
                for found in page:
                    yield _snapshot_item(found, self._timeline())
                if len(page) < page_size:
                    break
                after = page[-1].revision
                del page
        yield Item(
            Kind.SNAPSHOT_END,
            head,
            heartbeat_interval=self._heartbeat_interval,
            timeline=self._timeline(),
        )

    async def replay(
        self,
        customer_id: str,
        campaign_id: str,
        after_revision: int,
        full: bool,
        timeline: str,
        leases: bool,
    ) -> AsyncGenerator[Item, None]:
        """The changes after after_revision, then a heartbeat: the stream has caught up."""
        if timeline and self._timeline_source is not None:
            # Read now, not as the hub last saw them: another server may have recorded a
            # fork, and written past it, since.
            shared = (await self._timeline_source.read()).shared_up_to(timeline)
            if shared is None or after_revision > shared:
                raise errors.not_in_this_log(timeline, after_revision, shared)
        if campaign_id:
            await self._campaigns.get(customer_id, campaign_id)
        head = await self._campaigns.head_revision()
        if after_revision > head:
            raise errors.ahead_of_log(after_revision, head)
        if full:
            recorded = await self._campaigns.full_history_from()
            if after_revision < recorded:
                raise errors.full_view_not_recorded(recorded)
        batch = _FULL_READ_BATCH if full else _READ_BATCH
        cursor = after_revision
        while True:
            events = await self._campaigns.events_after(
                cursor, customer_id, campaign_id, batch, full=full
            )
            # Read after the events: compaction only moves forward, so if it has not passed
            # the cursor now, it had not when the events were read, and they have no gap.
            compacted = await self._campaigns.compacted_revision()
            if compacted > cursor:
                raise errors.compacted(
                    compacted, f"the log no longer holds the changes after revision {cursor}"
                )
            for event in events:
                cursor = event.revision
                if not leases and event.reason in LEASE_REASONS:
                    continue
                yield Item(Kind.CHANGE, cursor, event=event, full=full, timeline=self._timeline())
            if len(events) < batch:
                break
            del events
        # Every matching change up to head has been sent (and those after it, to cursor).
        yield Item(
            Kind.HEARTBEAT,
            max(cursor, head),
            heartbeat_interval=self._heartbeat_interval,
            timeline=self._timeline(),
        )


def _snapshot_item(found: Campaign | CampaignState, timeline: str) -> Item:
    if isinstance(found, Campaign):
        return Item(Kind.SNAPSHOT, found.revision, campaign=found, timeline=timeline)
    return Item(Kind.SNAPSHOT, found.revision, state=found, timeline=timeline)


def _admitted() -> CampaignError | None:
    return None
