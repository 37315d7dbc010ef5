"""Which database this server is on, and how far its log has come.

A database restored from an older backup, dropped and made anew, or a lagging standby
promoted answers every query as before, but its log is not the one the server followed: its
head is behind the revisions already sent, or the same revisions name other changes. Three
things tell them apart:

- the epoch, a random number the first migration writes into the meta table (a database made
  anew gets another one);
- the head revision, which in one database only ever grows;
- the event at the revision the server last read, which in one database never changes (a
  restored log that has since grown past it holds another event there).

The watch hub checks them as it follows the log and keeps `LogIdentity` up to date; every
write transaction checks the epoch and the head against it before it writes (see
Store.journal_begin), so that no write is decided on a database the server has not
recognised yet.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass

from ..domain.errors import Unavailable
from ..domain.types import Event

# The largest value a signed 64-bit column holds.
_MAX_EPOCH = 2**63 - 1


def new_epoch() -> int:
    return 1 + secrets.randbelow(_MAX_EPOCH)


# An event as far as telling two logs apart goes: its revision, its campaign and its time.
Fingerprint = tuple[int, str, int]


def fingerprint(e: Event) -> Fingerprint:
    return (e.revision, e.campaign_id, e.tm_event)


@dataclass(frozen=True, slots=True)
class LogState:
    """The log as one read found it."""

    epoch: int | None
    head: int
    compacted: int
    # The event at the revision asked about, and at the head (None: not in the log).
    at: Fingerprint | None
    last: Fingerprint | None


class LogIdentity:
    """What this server knows of its database: its epoch, and a revision its log has passed.
    Written by the watch hub on the event loop, read by the writer thread: each value is set
    in one assignment, and a stale floor only makes the check less strict, never wrong."""

    def __init__(self) -> None:
        self.epoch: int | None = None
        self.floor = 0
        self.known = False
        # Called, from any thread, when a write found the database changed: the hub should
        # look at the log now rather than at its next poll.
        self.on_mismatch: Callable[[], None] = lambda: None

    def set(self, epoch: int | None, floor: int) -> None:
        self.epoch, self.floor, self.known = epoch, floor, True

    def mismatch(self, epoch: int | None, head: int) -> str:
        """Why a database whose epoch and head are these is not the one known ("": it is)."""
        if not self.known:
            return ""
        if epoch != self.epoch:
            return "its epoch differs (the database was made anew, or is another one)"
        if head < self.floor:
            return (
                f"its log ends at revision {head}, before revision {self.floor} which it "
                "reached already (restored from an older backup, or a lagging standby)"
            )
        return ""


def database_changed(why: str) -> Unavailable:
    return Unavailable(
        f"the database changed under this server: {why}; retry",
        reason="DATABASE_CHANGED",
    )
