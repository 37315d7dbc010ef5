"""What the domain needs of storage, in its own words: the operations it composes into its
transactions, and the threads that run them. storage.store.Store is what the server gives
it; a test may give it a store of its own.

Every operation here is synchronous and runs on a database thread, inside the function that
a Transactions runs: for the writer, one transaction, so that a rule checked against the
stored state still holds when the change commits.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol, TypeVar

from .leases import LeaseRow, SessionRow
from .types import (
    ANONYMOUS,
    Campaign,
    CampaignState,
    EncodedCampaign,
    Event,
    ListFilter,
    NextCampaignResult,
    Origin,
    Reason,
    Status,
)

T = TypeVar("T")


class Transactions(Protocol):
    """Runs functions on the database threads: the writer runs each as one write
    transaction (storage.writer.Writer), the readers as reads (Readers)."""

    async def run(self, fn: Callable[[], T]) -> T: ...


class CampaignReads(Protocol):
    """Reads of campaigns and of their log (any database thread). Reads may share the
    Campaign objects they return between callers: treat them as read-only."""

    def get(self, customer_id: str, campaign_id: str) -> Campaign | None: ...

    def list_page(
        self, f: ListFilter, after_seq: int | None, limit: int
    ) -> tuple[list[Campaign | EncodedCampaign], int | None]:
        """Up to limit campaigns newest first, bounded in bytes, and the seq to continue
        after (None at the end)."""
        ...

    def events_page(
        self, before: int | None, customer_id: str, campaign_id: str, limit: int, *, full: bool
    ) -> tuple[list[Event], bool]:
        """Up to limit events newest first, bounded in bytes, and whether more are left."""
        ...

    def snapshot_page(
        self, customer_id: str, after: int, upto: int, limit: int, *, full: bool
    ) -> list[Campaign] | list[CampaignState]: ...

    def snapshot_one(
        self, customer_id: str, campaign_id: str, *, full: bool
    ) -> tuple[Campaign | CampaignState | None, int]: ...

    def events_after(
        self, revision: int, customer_id: str, campaign_id: str, limit: int, *, full: bool = False
    ) -> list[Event]: ...

    def full_history_from(self) -> int: ...

    def head_revision(self) -> int: ...

    def compacted_revision(self) -> int: ...

    def next_stop_deadline(self) -> int | None: ...

    def probe_read(self) -> float: ...


class CampaignWrites(Protocol):
    """What a write transaction reads and writes (writer thread, inside its transaction)."""

    # Whether insert() raises FailedPrecondition("OUTDIAL_IN_USE") for a taken outdial
    # without spoiling the transaction, so that the holder may be looked up after it.
    insert_refuses_taken_outdial: bool

    def get(self, customer_id: str, campaign_id: str) -> Campaign | None: ...

    def load(self, customer_id: str, campaign_id: str) -> Campaign | None:
        """A campaign of its own for the caller to change."""
        ...

    def get_by_request(self, customer_id: str, request_id: str) -> Campaign | None: ...

    def id_taken(self, campaign_id: str) -> bool: ...

    def outdial_holder(self, customer_id: str, outdial_id: str, other_than: str) -> str | None: ...

    def referrers(self, customer_id: str, campaign_id: str, limit: int) -> list[str]: ...

    def due_stops(self, now: int, limit: int) -> list[Campaign]: ...

    def insert(self, c: Campaign, request_id: str) -> None: ...

    def save(self, c: Campaign) -> None: ...

    def save_state(self, c: Campaign) -> None:
        """Writes what a status change or a deletion touches, the rest as it is."""
        ...

    def supersede_body(self, c: Campaign, superseded_at: int) -> None:
        """Keeps c's body, about to be replaced at revision superseded_at, for the events
        written with it."""
        ...

    def append_event(
        self,
        c: Campaign,
        previous_status: Status,
        reason: Reason,
        now: int,
        *,
        next_campaign_id: str = "",
        chained_from: str = "",
        detail: str = "",
        next_campaign_result: NextCampaignResult = NextCampaignResult.UNSPECIFIED,
        unmet_run_conditions: tuple[str, ...] = (),
        begins_stop: bool = False,
        new_body: bool = False,
        origin: Origin = ANONYMOUS,
    ) -> Event:
        """Takes the next revision and logs the campaign's new state; sets c.revision and
        c.last_reason, and with begins_stop c.stop_revision, with new_body c.body_revision,
        to this revision."""
        ...


class CampaignStore(CampaignReads, CampaignWrites, Protocol):
    """Everything domain.campaigns.Campaigns needs of storage."""


class LeaseTable(Protocol):
    """The dialers' sessions and the campaigns' leases (writer thread, in its transaction,
    or a reader). Every put names the row it read, None for a new one."""

    def sessions(self) -> list[SessionRow]: ...

    def session(self, holder: str) -> SessionRow | None: ...

    def held(self) -> list[LeaseRow]: ...

    def lease(self, campaign_id: str) -> LeaseRow | None: ...

    def lease_and_expiry(self, campaign_id: str) -> tuple[LeaseRow | None, int | None]:
        """A lease, and when its holder's session expires."""
        ...

    def unheld(self, limit: int) -> list[tuple[str, str]]:
        """(customer_id, campaign_id) of campaigns that need a dialer and have none."""
        ...

    def put_session(self, s: SessionRow, read: SessionRow | None) -> SessionRow: ...

    def delete_session(self, read: SessionRow) -> None: ...

    def put_lease(self, lease: LeaseRow, read: LeaseRow | None) -> LeaseRow: ...


class LeaseStore(Protocol):
    """Everything domain.leasing.Leasing needs of storage."""

    @property
    def leases(self) -> LeaseTable: ...

    def load(self, customer_id: str, campaign_id: str) -> Campaign | None: ...

    def append_lease_event(
        self, c: Campaign, reason: Reason, now: int, holder: str, token: int, origin: Origin
    ) -> Event:
        """Logs a change of c's lease: c itself is unchanged."""
        ...
