"""Pages bounded in bytes: what a campaign or an event weighs as it is sent, and the page
that takes them while they fit its budget."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

from ..domain.types import Action, Campaign, EncodedCampaign, Event
from .rows import actions_to_json
from .versions import Key


class WireForm(Protocol):
    """How campaigns travel, as far as the store needs to know: the sizes and the cached
    messages that weigh and make up list pages, and the encoding of actions that it keeps
    beside their JSON text, so that a page of campaigns read from the database is made of
    stored bytes rather than of rows decoded and encoded again (for a campaign of 1,000
    actions, far more of the interpreter's time than its bytes take)."""

    def size(self, c: Campaign) -> int: ...

    def cached(self, key: Key) -> bytes | None: ...

    def keep(self, key: Key, data: bytes) -> None: ...

    def actions(self, actions: Sequence[Action]) -> bytes: ...

    def message(self, c: Campaign, actions: bytes) -> bytes:
        """The message of c, read without its actions, with actions as actions() made them."""
        ...


# A campaign's message beyond its actions, for estimates: ids, times, etag, the small fields.
ENCODED_BASE = 400
# A page's campaigns travel as field 1 of ListCampaignsResponse, each behind a tag byte and a
# length of up to four; the next_page_token takes the reserve.
ENTRY_OVERHEAD = 5
PAGE_RESERVE = 64
# An event's message beyond its texts and its campaign: ids, statuses, times, revisions.
_EVENT_BASE = 200


def estimated_size(c: Campaign) -> int:
    """What c's message weighs, about: its actions as JSON, its texts and the rest."""
    return ENCODED_BASE + len(actions_to_json(c.actions)) + len(c.name) + len(c.detail)


def event_size(e: Event, encoded_size: Callable[[Campaign], int]) -> int:
    """What e's message weighs, about: its own fields, and its campaign's message."""
    texts = (e.detail, e.principal, e.traceparent, *e.unmet_run_conditions)
    size = _EVENT_BASE + sum(len(t) for t in texts)
    # The campaign weighed as a list page weighs it (the wire's cached size, or an
    # estimate), not encoded once more only to be measured.
    return size if e.campaign is None else size + encoded_size(e.campaign)


class Page:
    """The campaigns of a list page, added while they fit its budget in bytes."""

    def __init__(self, budget: int, encoded_size: Callable[[Campaign], int]) -> None:
        self._budget = budget
        self._encoded_size = encoded_size
        self.campaigns: list[Campaign | EncodedCampaign] = []
        self.last_seq: int | None = None
        self.bytes = PAGE_RESERVE

    def add(self, c: Campaign | EncodedCampaign, seq: int) -> bool:
        """Adds c unless it would take the page past its budget; the first always goes in."""
        weight = len(c.data) if isinstance(c, EncodedCampaign) else self._encoded_size(c)
        size = weight + ENTRY_OVERHEAD
        if self.campaigns and self.bytes + size > self._budget:
            return False
        self.campaigns.append(c)
        self.bytes += size
        self.last_seq = seq
        return True
