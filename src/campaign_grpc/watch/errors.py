"""Why a watch stream ends: the errors it is answered with.

Each is made by a function rather than kept as one object, so that every stream raises its
own on its own task (see Subscription.end).
"""

from __future__ import annotations

from ..domain.errors import CampaignError, OutOfRange, ResourceExhausted, Unavailable


def shutting_down() -> CampaignError:
    return Unavailable("the server is shutting down; reconnect and resume", reason="SHUTTING_DOWN")


def too_slow() -> CampaignError:
    return ResourceExhausted(
        "the stream fell too far behind; resume from the last revision received",
        reason="WATCH_TOO_SLOW",
    )


def resume_needed() -> CampaignError:
    return Unavailable("the stream must be resumed; reconnect and resume", reason="RESUME")


def database_changed(why: str, head: int, sent: int) -> OutOfRange:
    return OutOfRange(
        f"the database changed under this server: {why}; its log is at revision {head}, "
        f"and changes up to revision {sent} were sent from the one before; start again "
        "from a snapshot",
        reason="DATABASE_CHANGED",
        metadata={"head_revision": str(head), "last_revision": str(sent)},
    )


def log_unreadable(unread_s: float, head: int) -> CampaignError:
    return Unavailable(
        f"this server has not read the event log for {unread_s:.1f} s (the database does not "
        f"answer it), so it cannot tell what changed after revision {head}; reconnect, to "
        "another server if this one stays unavailable, and resume",
        reason="LOG_UNREADABLE",
        metadata={"head_revision": str(head), "unread_seconds": f"{unread_s:.1f}"},
    )


def not_in_this_log(timeline: str, revision: int, shared: int | None) -> OutOfRange:
    if shared is None:
        why = f"timeline {timeline} is not one of this log's (the database was made anew)"
        metadata = {"timeline": timeline}
    else:
        why = (
            f"this log forked from timeline {timeline} after revision {shared} (a standby "
            f"promoted, or a backup restored), so revision {revision} of it names a change "
            "this log does not hold"
        )
        metadata = {"timeline": timeline, "forked_at_revision": str(shared)}
    return OutOfRange(
        f"{why}; start again from a snapshot", reason="LOG_TIMELINE_CHANGED", metadata=metadata
    )


def compacted(compacted: int, lost: str) -> OutOfRange:
    return OutOfRange(
        f"{lost}: the log starts after revision {compacted}; start again from a snapshot",
        reason="REVISION_COMPACTED",
        metadata={"compacted_revision": str(compacted), "oldest_revision": str(compacted + 1)},
    )


def ahead_of_log(revision: int, head: int) -> OutOfRange:
    return OutOfRange(
        f"revision {revision} is ahead of the log (at {head}); start again from a snapshot",
        reason="REVISION_AHEAD_OF_LOG",
        metadata={"head_revision": str(head)},
    )


def full_view_not_recorded(recorded: int) -> OutOfRange:
    return OutOfRange(
        f"the changes up to revision {recorded} were logged before the log kept whole "
        "campaigns; start again from a snapshot",
        reason="FULL_VIEW_NOT_RECORDED",
        metadata={"oldest_revision": str(recorded + 1)},
    )
