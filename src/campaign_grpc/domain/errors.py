"""Domain errors. Each class carries the status code name and reason a client will see.

The names are those of google.rpc.Code so that the gRPC layer maps them with one lookup,
while the domain stays free of gRPC imports.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import ClassVar


@dataclass(slots=True, frozen=True)
class FieldViolation:
    field: str
    description: str


@dataclass(slots=True, frozen=True)
class PreconditionViolation:
    type: str
    subject: str
    description: str


@dataclass(slots=True, frozen=True)
class QuotaViolation:
    subject: str
    description: str


class CampaignError(Exception):
    code: ClassVar[str] = "INTERNAL"
    default_reason: ClassVar[str] = "INTERNAL"

    def __init__(
        self,
        message: str,
        *,
        reason: str | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.reason = reason or self.default_reason
        self.metadata: dict[str, str] = dict(metadata or {})


class InvalidArgument(CampaignError):
    code = "INVALID_ARGUMENT"
    default_reason = "INVALID_ARGUMENT"

    def __init__(
        self,
        violations: Sequence[FieldViolation],
        *,
        reason: str | None = None,
        metadata: Mapping[str, str] | None = None,
        omitted: int = 0,
    ) -> None:
        """omitted counts violations found beyond those listed, left out to keep it small."""
        self.violations = list(violations)
        self.omitted = omitted
        # Each field once, in the order found: a field with two problems is listed twice in
        # the details, which say what each one is, but named once here.
        fields = ", ".join(dict.fromkeys(v.field for v in self.violations))
        if omitted:
            fields += f" and {omitted} more"
            metadata = {**(metadata or {}), "omitted_violations": str(omitted)}
        super().__init__(f"invalid request: {fields}", reason=reason, metadata=metadata)


class NotFound(CampaignError):
    code = "NOT_FOUND"
    default_reason = "CAMPAIGN_NOT_FOUND"


class AlreadyExists(CampaignError):
    code = "ALREADY_EXISTS"
    default_reason = "CAMPAIGN_ALREADY_EXISTS"


class FailedPrecondition(CampaignError):
    code = "FAILED_PRECONDITION"
    default_reason = "FAILED_PRECONDITION"

    def __init__(
        self,
        message: str,
        violations: Sequence[PreconditionViolation],
        *,
        reason: str | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message, reason=reason, metadata=metadata)
        self.violations = list(violations)


class Aborted(CampaignError):
    code = "ABORTED"
    default_reason = "ETAG_MISMATCH"


class OutOfRange(CampaignError):
    code = "OUT_OF_RANGE"
    default_reason = "REVISION_OUT_OF_RANGE"


class ResourceExhausted(CampaignError):
    code = "RESOURCE_EXHAUSTED"
    default_reason = "RESOURCE_EXHAUSTED"


class LimitExceeded(ResourceExhausted):
    """A server limit refused the call before any work was done; it may succeed later."""

    def __init__(
        self,
        message: str,
        violation: QuotaViolation,
        *,
        reason: str,
        limit: int,
        metadata: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message, reason=reason, metadata={"limit": str(limit), **(metadata or {})})
        self.violations = [violation]


class Unavailable(CampaignError):
    code = "UNAVAILABLE"
    default_reason = "UNAVAILABLE"


class DeadlineExceeded(CampaignError):
    code = "DEADLINE_EXCEEDED"
    default_reason = "DEADLINE_EXCEEDED"


class Unauthenticated(CampaignError):
    code = "UNAUTHENTICATED"
    default_reason = "TOKEN_UNKNOWN"


class PermissionDenied(CampaignError):
    code = "PERMISSION_DENIED"
    default_reason = "CUSTOMER_NOT_ALLOWED"


class Unimplemented(CampaignError):
    code = "UNIMPLEMENTED"
    default_reason = "UNIMPLEMENTED"
