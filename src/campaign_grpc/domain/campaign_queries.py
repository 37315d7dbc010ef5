"""The campaign domain's reads: a campaign, list pages, events, a watch's snapshot, and the
log's revisions. Each runs on a read thread, as one store operation."""

from __future__ import annotations

from collections.abc import Callable

from . import page_token, validation
from .errors import CampaignError, NotFound
from .ports import CampaignStore, Transactions
from .types import (
    Campaign,
    CampaignState,
    Event,
    EventFilter,
    EventPage,
    ListFilter,
    Page,
)


def not_found(campaign_id: str) -> NotFound:
    return NotFound(f"campaign {campaign_id} not found", metadata={"id": campaign_id})


class CampaignQueries:
    def __init__(self, store: CampaignStore, readers: Transactions) -> None:
        self._store = store
        self._readers = readers

    async def get(self, customer_id: str, campaign_id: str) -> Campaign:
        validation.validate_key(customer_id, campaign_id)
        found = await self._readers.run(lambda: self._store.get(customer_id, campaign_id))
        if found is None:
            raise not_found(campaign_id)
        return found

    async def list_page(self, f: ListFilter, page_size: int, token: str) -> Page:
        limit = validation.validate_list(f.customer_id, page_size, f.status, f.type)
        after = page_token.decode(token, f) if token else None
        campaigns, last = await self._readers.run(lambda: self._store.list_page(f, after, limit))
        return Page(campaigns, "" if last is None else page_token.encode(f, last))

    async def list_events(
        self, f: EventFilter, page_size: int, token: str, *, full: bool
    ) -> EventPage:
        """A page of events, newest first: what happened to one campaign or a customer's."""
        limit = validation.validate_list_events(f.customer_id, f.campaign_id, page_size)
        before = page_token.decode(token, f) if token else None
        if f.campaign_id and not token:
            await self.get(f.customer_id, f.campaign_id)
        # A page is bounded in bytes too: a full-view event carries its whole campaign.
        events, more = await self._readers.run(
            lambda: self._store.events_page(before, f.customer_id, f.campaign_id, limit, full=full)
        )
        return EventPage(events, page_token.encode(f, events[-1].revision) if more else "")

    async def snapshot_page(
        self,
        customer_id: str,
        after: int,
        upto: int,
        limit: int,
        *,
        full: bool,
        refusal: Callable[[], CampaignError | None] = lambda: None,
    ) -> list[Campaign] | list[CampaignState]:
        """refusal() is asked on the database thread, just before the read: a page read
        minutes after it was asked for (behind thousands of others) may be refused then."""

        def read() -> list[Campaign] | list[CampaignState]:
            refused = refusal()
            if refused is not None:
                raise refused
            return self._store.snapshot_page(customer_id, after, upto, limit, full=full)

        return await self._readers.run(read)

    async def snapshot_one(
        self, customer_id: str, campaign_id: str, *, full: bool
    ) -> tuple[Campaign | CampaignState | None, int]:
        return await self._readers.run(
            lambda: self._store.snapshot_one(customer_id, campaign_id, full=full)
        )

    async def events_after(
        self, revision: int, customer_id: str, campaign_id: str, limit: int, *, full: bool = False
    ) -> list[Event]:
        return await self._readers.run(
            lambda: self._store.events_after(revision, customer_id, campaign_id, limit, full=full)
        )

    async def full_history_from(self) -> int:
        return await self._readers.run(self._store.full_history_from)

    async def head_revision(self) -> int:
        return await self._readers.run(self._store.head_revision)

    async def compacted_revision(self) -> int:
        return await self._readers.run(self._store.compacted_revision)

    async def next_stop_deadline(self) -> int | None:
        return await self._readers.run(self._store.next_stop_deadline)

    async def probe_read(self) -> float:
        """Fails when the service's reads would: each of its tables is read. Returns the
        seconds the database took."""
        return await self._readers.run(self._store.probe_read)
