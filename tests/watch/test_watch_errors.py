"""The errors a watch stream ends with: each its code, reason and resume hints."""

from __future__ import annotations

import pytest

from campaign_grpc.domain.errors import CampaignError
from campaign_grpc.watch import errors


@pytest.mark.parametrize(
    ("error", "code", "reason", "metadata"),
    [
        (errors.shutting_down(), "UNAVAILABLE", "SHUTTING_DOWN", {}),
        (errors.too_slow(), "RESOURCE_EXHAUSTED", "WATCH_TOO_SLOW", {}),
        (errors.resume_needed(), "UNAVAILABLE", "RESUME", {}),
        (
            errors.database_changed("its epoch differs", 7, 9),
            "OUT_OF_RANGE",
            "DATABASE_CHANGED",
            {"head_revision": "7", "last_revision": "9"},
        ),
        (
            errors.log_unreadable(12.34, 5),
            "UNAVAILABLE",
            "LOG_UNREADABLE",
            {"head_revision": "5", "unread_seconds": "12.3"},
        ),
        (
            errors.not_in_this_log("t1", 10, None),
            "OUT_OF_RANGE",
            "LOG_TIMELINE_CHANGED",
            {"timeline": "t1"},
        ),
        (
            errors.not_in_this_log("t1", 10, 8),
            "OUT_OF_RANGE",
            "LOG_TIMELINE_CHANGED",
            {"timeline": "t1", "forked_at_revision": "8"},
        ),
        (
            errors.compacted(20, "lost"),
            "OUT_OF_RANGE",
            "REVISION_COMPACTED",
            {"compacted_revision": "20", "oldest_revision": "21"},
        ),
        (
            errors.ahead_of_log(30, 25),
            "OUT_OF_RANGE",
            "REVISION_AHEAD_OF_LOG",
            {"head_revision": "25"},
        ),
        (
            errors.full_view_not_recorded(40),
            "OUT_OF_RANGE",
            "FULL_VIEW_NOT_RECORDED",
            {"oldest_revision": "41"},
        ),
    ],
)
def test_each_error_carries_its_code_reason_and_metadata(
    error: CampaignError, code: str, reason: str, metadata: dict[str, str]
) -> None:
    assert (error.code, error.reason, error.metadata) == (code, reason, metadata)


def test_each_call_makes_a_new_error_for_the_stream_that_raises_it() -> None:
    assert errors.too_slow() is not errors.too_slow()


def test_a_fork_names_the_revision_the_resume_point_lost() -> None:
    message = errors.not_in_this_log("t1", 10, 8).message
    assert "after revision 8" in message
    assert "revision 10" in message
    assert "start again from a snapshot" in message
