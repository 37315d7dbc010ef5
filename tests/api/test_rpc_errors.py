"""The error table: each domain error becomes its status code with ErrorInfo and its details."""

from __future__ import annotations

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from campaign_grpc.api.rpc_errors import DOMAIN, as_campaign_error, to_status
from campaign_grpc.domain import errors
from campaign_grpc.domain.errors import (
    Aborted,
    AlreadyExists,
    CampaignError,
    DeadlineExceeded,
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
    LimitExceeded,
    NotFound,
    OutOfRange,
    PermissionDenied,
    PreconditionViolation,
    QuotaViolation,
    ResourceExhausted,
    Unauthenticated,
    Unavailable,
    Unimplemented,
)

Code = grpc.StatusCode

TABLE: list[tuple[CampaignError, grpc.StatusCode, str]] = [
    (
        InvalidArgument(
            [FieldViolation("campaign.name", "too long"), FieldViolation("page_size", "negative")]
        ),
        Code.INVALID_ARGUMENT,
        "INVALID_ARGUMENT",
    ),
    (NotFound("campaign x not found", metadata={"id": "x"}), Code.NOT_FOUND, "CAMPAIGN_NOT_FOUND"),
    (AlreadyExists("campaign x exists"), Code.ALREADY_EXISTS, "CAMPAIGN_ALREADY_EXISTS"),
    (
        FailedPrecondition(
            "cannot run",
            [
                PreconditionViolation("OUTPLAN_MISSING", "outplan_id", "an outplan is required"),
                PreconditionViolation("OUTDIAL_MISSING", "outdial_id", "an outdial is required"),
            ],
            reason="RUN_CONDITIONS_UNMET",
        ),
        Code.FAILED_PRECONDITION,
        "RUN_CONDITIONS_UNMET",
    ),
    (Aborted("stale etag", metadata={"etag": "e"}), Code.ABORTED, "ETAG_MISMATCH"),
    (OutOfRange("ahead of the log"), Code.OUT_OF_RANGE, "REVISION_OUT_OF_RANGE"),
    (
        ResourceExhausted("too slow", reason="WATCH_TOO_SLOW"),
        Code.RESOURCE_EXHAUSTED,
        "WATCH_TOO_SLOW",
    ),
    (
        LimitExceeded(
            "too many streams",
            QuotaViolation("server", "at most 3 WatchStatus streams"),
            reason="TOO_MANY_WATCH_STREAMS",
            limit=3,
        ),
        Code.RESOURCE_EXHAUSTED,
        "TOO_MANY_WATCH_STREAMS",
    ),
    (Unavailable("shutting down"), Code.UNAVAILABLE, "UNAVAILABLE"),
    (Unimplemented("no leases here"), Code.UNIMPLEMENTED, "UNIMPLEMENTED"),
    (DeadlineExceeded("too late"), Code.DEADLINE_EXCEEDED, "DEADLINE_EXCEEDED"),
    (Unauthenticated("unknown token"), Code.UNAUTHENTICATED, "TOKEN_UNKNOWN"),
    (PermissionDenied("not this customer"), Code.PERMISSION_DENIED, "CUSTOMER_NOT_ALLOWED"),
    (CampaignError("internal error"), Code.INTERNAL, "INTERNAL"),
]


def _all_error_classes() -> set[type[CampaignError]]:
    found: set[type[CampaignError]] = set()
    todo = [CampaignError]
    while todo:
        cls = todo.pop()
        if cls.__module__ == errors.__name__:
            found.add(cls)
        todo.extend(cls.__subclasses__())
    return found


def test_the_table_covers_every_domain_error() -> None:
    assert {type(error) for error, _, _ in TABLE} == _all_error_classes()


@pytest.mark.parametrize(
    ("error", "code", "reason"), TABLE, ids=[type(e).__name__ for e, _, _ in TABLE]
)
def test_each_domain_error_maps_to_its_status(
    error: CampaignError, code: grpc.StatusCode, reason: str
) -> None:
    status = to_status(error)
    sent = rpc_status.to_status(status)

    assert sent.code == code
    assert status.code == code.value[0]
    assert status.message == sent.details == error.message
    assert [key for key, _ in sent.trailing_metadata] == ["grpc-status-details-bin"]

    info = error_details_pb2.ErrorInfo()
    assert status.details[0].Unpack(info)
    assert (info.reason, info.domain) == (reason, DOMAIN)
    assert dict(info.metadata) == error.metadata

    rest = status.details[1:]
    if isinstance(error, InvalidArgument):
        bad_request = error_details_pb2.BadRequest()
        assert len(rest) == 1
        assert rest[0].Unpack(bad_request)
        assert [(v.field, v.description) for v in bad_request.field_violations] == [
            (v.field, v.description) for v in error.violations
        ]
    elif isinstance(error, FailedPrecondition):
        precondition = error_details_pb2.PreconditionFailure()
        assert len(rest) == 1
        assert rest[0].Unpack(precondition)
        assert [(v.type, v.subject, v.description) for v in precondition.violations] == [
            (v.type, v.subject, v.description) for v in error.violations
        ]
    elif isinstance(error, LimitExceeded):
        quota = error_details_pb2.QuotaFailure()
        assert len(rest) == 1
        assert rest[0].Unpack(quota)
        assert [(v.subject, v.description) for v in quota.violations] == [
            (v.subject, v.description) for v in error.violations
        ]
        assert info.metadata["limit"] == "3"
    else:
        assert list(rest) == []


def test_an_unexpected_exception_becomes_a_generic_internal_error(
    caplog: pytest.LogCaptureFixture,
) -> None:
    cause = RuntimeError("secret detail from deep inside")
    error = as_campaign_error(cause)
    status = to_status(error)

    assert status.code == Code.INTERNAL.value[0]
    assert "secret" not in status.message
    assert b"secret" not in status.SerializeToString()
    assert [r.exc_info[1] for r in caplog.records if r.exc_info] == [cause]


def test_a_domain_error_passes_through_unchanged() -> None:
    error = NotFound("campaign x not found")
    assert as_campaign_error(error) is error
