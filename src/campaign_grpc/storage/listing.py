"""Reads of many campaigns a page at a time: a customer's list pages, bounded in bytes and
made of cached or stored messages where it can, and the pages of a watch's snapshot."""

from __future__ import annotations

from typing import Any

import peewee as pw

from ..domain.types import Campaign, CampaignState, EncodedCampaign, ListFilter
from .campaign_table import CampaignTable
from .event_log import EventLog
from .pages import ENCODED_BASE, Page
from .prepared import param
from .rows import (
    CAMPAIGN_COLUMNS,
    LISTED_KEY_COLUMNS,
    STATE_VIEW_COLUMNS,
    CampaignRow,
    ListedKey,
    StateRow,
    row_key,
    to_campaign,
    to_state,
)
from .versions import Key

# The largest message a list page keeps in the wire's cache of those it makes of stored
# bytes. Keeping spares a page of small campaigns its rows (much of the server's CPU for
# ListCampaigns of small ones); large ones cost little more to make again than to fetch, and
# walks of hundreds of large ones, through a cache that holds a fraction of them, only churned
# it (another customer's GetCampaign p99 and the peak RSS under them rose; see bench/big.py).
_KEPT_MESSAGE_BYTES = 16 * 1024


class Listing(CampaignTable, EventLog):
    # The reads that may take many rows and much CPU (those whose names start so): the
    # database threads run them apart from the quick ones (see read_lanes.Readers).
    BULK_READS = ("list_page", "snapshot")

    def _list_query(
        self, after: bool, status: bool, type_: bool, show_deleted: bool, keys_only: bool
    ) -> Any:
        C = self.t.campaign
        # The actions' encoding where it was made for the row's actions, and their JSON text
        # only where it was not (rows of an older release, or of a store without wire): the
        # other rows' pages never read the text.
        # A store without wire cannot use the encoding: it reads the text of every row.
        encoded: Any = C.actions_wire_body == C.body_revision if self._wire else pw.SQL("1 = 0")
        wire = pw.Case(None, [(encoded, C.actions_wire)], None)
        json_unless_encoded = pw.Case(None, [(encoded, "")], C.actions)
        # A campaign's row (CampaignRow), its JSON text only where its actions have no
        # encoding made for them, and that encoding (else None).
        columns: tuple[Any, ...] = (
            *(json_unless_encoded if n == "actions" else getattr(C, n) for n in CAMPAIGN_COLUMNS),
            wire,
        )
        if keys_only:
            columns = tuple(getattr(C, name) for name in LISTED_KEY_COLUMNS)
            if self._postgresql:
                # The stored size of the actions, read from the value's header without
                # fetching it: what a page of them will weigh (SQLite's length() would read
                # every byte, as dear as the rows themselves; there the rows are read one by
                # one instead, see _page_rows).
                columns += (
                    pw.fn.COALESCE(pw.fn.OCTET_LENGTH(wire), pw.fn.OCTET_LENGTH(C.actions)),
                )
        cond = C.customer_id == param(0)
        if after:
            cond &= C.seq < param(1)
        if status:
            cond &= C.status == param(2)
        if type_:
            cond &= C.type == param(3)
        if not show_deleted:
            cond &= C.tm_delete.is_null()
        return C.select(*columns).where(cond).order_by(C.seq.desc()).limit(param(4))

    def list_page(
        self, f: ListFilter, after_seq: int | None, limit: int
    ) -> tuple[list[Campaign | EncodedCampaign], int | None]:
        """Up to limit campaigns newest first, no more than page_bytes of them encoded (but
        at least one, so that a walk always moves on), and the seq to continue after (None
        at the end). A campaign comes decoded, or as its message where only that is cached."""
        shape = (after_seq is not None, bool(f.status), bool(f.type), f.show_deleted)
        args = (f.customer_id, after_seq, int(f.status), int(f.type), limit + 1)
        # Most pages are of campaigns read before: their keys and versions alone find them
        # in the cache, at a fraction of the cost of fetching every column.
        keys = self._q.get(("list-keys", shape), lambda: self._list_query(*shape, True)).all(*args)
        more = len(keys) > limit
        listed = [ListedKey(*k) for k in keys[:limit]]
        page = Page(self.page_bytes, self._encoded_size)
        for k in listed:
            found = self._listed(row_key(k))
            if found is None:
                break
            if not page.add(found, k.seq):
                return page.campaigns, page.last_seq
        else:
            return page.campaigns, page.last_seq if more else None
        # From the first campaign not in the cache on, the rows themselves.
        rest = listed[len(page.campaigns) :]
        wanted = self._rows_worth(rest, self.page_bytes - page.bytes)
        after = page.last_seq if page.campaigns else after_seq
        full = self._q.get(
            ("list", (after is not None, *shape[1:])),
            lambda: self._list_query(after is not None, *shape[1:], False),
        )
        for r in full.rows(f.customer_id, after, int(f.status), int(f.type), wanted):
            row, actions = CampaignRow._make(r[:-1]), r[-1]
            if not page.add(self._listed_row(row, actions), row.seq):
                return page.campaigns, page.last_seq
        more = more or wanted < len(rest)
        return page.campaigns, page.last_seq if more else None

    def _listed(self, key: Key) -> Campaign | EncodedCampaign | None:
        """A campaign of a page as the caches hold it: its message, which is what the page
        is sent as, or else decoded."""
        found = self._encoded_campaign(key)
        return self.cache.peek(key) if found is None else found

    def _encoded_campaign(self, key: Key) -> EncodedCampaign | None:
        data = None if self._wire is None else self._wire.cached(key)
        return None if data is None else EncodedCampaign(key[0], key[1], data)

    def _listed_row(self, row: CampaignRow, actions: Any) -> Campaign | EncodedCampaign:
        """A row of a list page as the page sends it: the cached message, or one made of the
        row's fields and its stored actions (the encoding made for them, None where there is
        none), or else the row decoded."""
        key = row_key(row)
        found = self._encoded_campaign(key)
        if found is not None:
            return found
        if actions is None or self._wire is None:
            # Encoded for other actions, or not at all: the row's JSON text was read instead.
            return self._shared(row)
        data = self._wire.message(to_campaign(row, actions=[]), bytes(actions))
        if len(data) <= _KEPT_MESSAGE_BYTES and not self.db.in_transaction():
            # Committed: the next page that lists this version takes it from the cache, by
            # its key alone, without fetching the row (see list_page).
            self._wire.keep(key, data)
        return EncodedCampaign(key[0], key[1], data)

    def _rows_worth(self, keys: list[ListedKey], budget: int) -> int:
        """How many of these rows to fetch for a page with budget bytes left. On PostgreSQL,
        which sends a query's every row at once, as many as their stored sizes say fit, and
        one more (the sizes are of the JSON text, a little off the encoded size either way);
        on SQLite all of them, read one at a time until the page is full."""
        if not self._postgresql:
            return len(keys)
        total = 0
        for n, k in enumerate(keys, 1):
            total += ENCODED_BASE + int(k.stored_size or 0)
            if total > budget:
                return n
        return len(keys)

    def snapshot_page(
        self, customer_id: str, after: int, upto: int, limit: int, *, full: bool
    ) -> list[Campaign] | list[CampaignState]:
        """Up to limit live campaigns (of customer_id, or of all with "") whose last change
        is in (after, upto], in revision order: a snapshot as of upto, read page by page.

        A campaign that changes meanwhile moves past upto and out of the pages not read yet;
        its change after upto reaches the watch through the hub instead. So each campaign is
        sent once, either way, and each page is one short statement rather than one
        transaction holding the database for the whole snapshot.
        """
        shape = ("snapshot", bool(customer_id), full)
        query = self._q.get(shape, lambda: self._snapshot_query(bool(customer_id), full))
        args = (after, upto, limit, customer_id) if customer_id else (after, upto, limit)
        rows = query.all(*args)
        if full:
            return [self._shared(CampaignRow._make(r)) for r in rows]
        return [to_state(StateRow._make(r)) for r in rows]

    def _snapshot_query(self, customer: bool, full: bool) -> Any:
        C = self.t.campaign
        columns = self._campaign_fields if full else [getattr(C, n) for n in STATE_VIEW_COLUMNS]
        cond = C.tm_delete.is_null() & (C.revision > param(0)) & (C.revision <= param(1))
        if customer:
            cond &= C.customer_id == param(3)
        return C.select(*columns).where(cond).order_by(C.revision).limit(param(2))

    def snapshot_one(
        self, customer_id: str, campaign_id: str, *, full: bool
    ) -> tuple[Campaign | CampaignState | None, int]:
        """One campaign, deleted or not, and the log revision it is read at, consistently."""
        # PostgreSQL's default READ COMMITTED gives each statement its own snapshot; the
        # campaign must be read as of the revision, so the transaction gets one snapshot.
        isolation = {"isolation_level": "REPEATABLE READ"} if self._postgresql else {}
        with self.db.atomic(**isolation):
            revision = self.head_revision()
            c = self.get(customer_id, campaign_id)
        if c is None or full:
            return c, revision
        state = CampaignState(
            c.customer_id,
            c.id,
            c.status,
            c.deleted,
            c.revision,
            c.stop_revision,
            c.tm_update or c.tm_create,
        )
        return state, revision
