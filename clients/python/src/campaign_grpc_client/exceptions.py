"""Client exceptions: one class per gRPC status code, with the google.rpc details decoded.

Every call of the client raises a subclass of CampaignServiceError. Each class carries its
status code, and a registry maps codes to classes (as google.api_core.exceptions does):

    try:
        client.update_campaign_status(customer, campaign_id, Campaign.STATUS_RUN)
    except FailedPrecondition as err:
        for v in err.precondition_violations:
            print(v.type, v.subject, v.description)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import grpc
from google.protobuf.message import DecodeError
from google.rpc import error_details_pb2, status_pb2

STATUS_DETAILS_KEY = "grpc-status-details-bin"


@dataclass(frozen=True, slots=True)
class FieldViolation:
    """A bad request field (google.rpc.BadRequest.FieldViolation)."""

    field: str
    description: str


@dataclass(frozen=True, slots=True)
class PreconditionViolation:
    """An unmet condition (google.rpc.PreconditionFailure.Violation)."""

    type: str
    subject: str
    description: str


_BY_CODE: dict[grpc.StatusCode, type[CampaignServiceError]] = {}

_DETAIL_TYPES = (
    error_details_pb2.ErrorInfo,
    error_details_pb2.BadRequest,
    error_details_pb2.PreconditionFailure,
    error_details_pb2.QuotaFailure,
    error_details_pb2.RetryInfo,
    error_details_pb2.ResourceInfo,
    error_details_pb2.DebugInfo,
)


class CampaignServiceError(Exception):
    """A call that did not succeed. Subclasses name the status code."""

    code: ClassVar[grpc.StatusCode] = grpc.StatusCode.UNKNOWN

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "code" in cls.__dict__:
            _BY_CODE[cls.code] = cls

    def __init__(
        self,
        message: str,
        *,
        status: Any = None,
        response: grpc.RpcError | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        # The google.rpc.Status of the grpc-status-details-bin trailer, if the server sent one.
        self.status: Any = status
        # The grpc error this one was made from.
        self.response = response
        self.details: list[Any] = _unpack(status)
        info = next((d for d in self.details if isinstance(d, error_details_pb2.ErrorInfo)), None)
        self.error_info: Any = info
        self.reason: str = info.reason if info is not None else ""
        self.domain: str = info.domain if info is not None else ""
        self.metadata: dict[str, str] = dict(info.metadata) if info is not None else {}
        self.field_violations = [
            FieldViolation(v.field, v.description)
            for d in self.details
            if isinstance(d, error_details_pb2.BadRequest)
            for v in d.field_violations
        ]
        self.precondition_violations = [
            PreconditionViolation(v.type, v.subject, v.description)
            for d in self.details
            if isinstance(d, error_details_pb2.PreconditionFailure)
            for v in d.violations
        ]

    def __str__(self) -> str:
        reason = f" [{self.reason}]" if self.reason else ""
        return f"{self.code.name}{reason}: {self.message}"


class Cancelled(CampaignServiceError):
    code = grpc.StatusCode.CANCELLED


class Unknown(CampaignServiceError):
    code = grpc.StatusCode.UNKNOWN


class InvalidArgument(CampaignServiceError):
    """The request is wrong: field_violations names every bad field."""

    code = grpc.StatusCode.INVALID_ARGUMENT


class DeadlineExceeded(CampaignServiceError):
    code = grpc.StatusCode.DEADLINE_EXCEEDED


class NotFound(CampaignServiceError):
    code = grpc.StatusCode.NOT_FOUND


class AlreadyExists(CampaignServiceError):
    code = grpc.StatusCode.ALREADY_EXISTS


class PermissionDenied(CampaignServiceError):
    code = grpc.StatusCode.PERMISSION_DENIED


class ResourceExhausted(CampaignServiceError):
    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class FailedPrecondition(CampaignServiceError):
    """The campaign is not in a state for this: precondition_violations says why."""

    code = grpc.StatusCode.FAILED_PRECONDITION


class Aborted(CampaignServiceError):
    """A stale etag: metadata["etag"] holds the current one. Read again, then retry."""

    code = grpc.StatusCode.ABORTED


class OutOfRange(CampaignServiceError):
    code = grpc.StatusCode.OUT_OF_RANGE


class Unimplemented(CampaignServiceError):
    code = grpc.StatusCode.UNIMPLEMENTED


class Internal(CampaignServiceError):
    code = grpc.StatusCode.INTERNAL


class Unavailable(CampaignServiceError):
    """The server cannot answer now (down, shutting down, database unavailable): retry."""

    code = grpc.StatusCode.UNAVAILABLE


class DataLoss(CampaignServiceError):
    code = grpc.StatusCode.DATA_LOSS


class Unauthenticated(CampaignServiceError):
    code = grpc.StatusCode.UNAUTHENTICATED


def exception_class_for(code: grpc.StatusCode) -> type[CampaignServiceError]:
    return _BY_CODE.get(code, Unknown)


def from_grpc_error(error: grpc.RpcError) -> CampaignServiceError:
    """The exception for a failed call of a grpc or grpc.aio stub, with its details."""
    code_of = getattr(error, "code", None)
    code = code_of() if callable(code_of) else grpc.StatusCode.UNKNOWN
    details_of = getattr(error, "details", None)
    message = (details_of() if callable(details_of) else None) or str(code)
    trailers_of = getattr(error, "trailing_metadata", None)
    status = _status_from(trailers_of() if callable(trailers_of) else None)
    return exception_class_for(code)(message, status=status, response=error)


def _status_from(trailers: Any) -> Any:
    for key, value in trailers or ():
        if key == STATUS_DETAILS_KEY:
            try:
                return status_pb2.Status.FromString(value)
            except DecodeError:
                return None
    return None


def _unpack(status: Any) -> list[Any]:
    if status is None:
        return []
    unpacked: list[Any] = []
    for holder in status.details:
        for kind in _DETAIL_TYPES:
            if holder.Is(kind.DESCRIPTOR):
                message = kind()
                holder.Unpack(message)
                unpacked.append(message)
                break
        else:
            unpacked.append(holder)  # a detail this client does not know: left packed
    return unpacked
