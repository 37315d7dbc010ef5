"""The one place where domain errors become gRPC statuses with google.rpc details."""

from __future__ import annotations

import contextlib
import functools
import logging
from collections.abc import AsyncGenerator, Awaitable, Callable
from typing import Any, NoReturn, TypeVar

import grpc
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from ..domain.errors import CampaignError, FailedPrecondition, InvalidArgument, LimitExceeded

log = logging.getLogger(__name__)

DOMAIN = "campaign-grpc"

Req = TypeVar("Req")
Resp = TypeVar("Resp")
S = TypeVar("S")


def to_status(exc: CampaignError) -> status_pb2.Status:
    code = grpc.StatusCode[exc.code]
    details: list[Any] = [
        error_details_pb2.ErrorInfo(reason=exc.reason, domain=DOMAIN, metadata=exc.metadata)
    ]
    if isinstance(exc, InvalidArgument):
        details.append(
            error_details_pb2.BadRequest(
                field_violations=[
                    error_details_pb2.BadRequest.FieldViolation(
                        field=v.field, description=v.description
                    )
                    for v in exc.violations
                ]
            )
        )
    elif isinstance(exc, FailedPrecondition):
        details.append(
            error_details_pb2.PreconditionFailure(
                violations=[
                    error_details_pb2.PreconditionFailure.Violation(
                        type=v.type, subject=v.subject, description=v.description
                    )
                    for v in exc.violations
                ]
            )
        )
    elif isinstance(exc, LimitExceeded):
        details.append(
            error_details_pb2.QuotaFailure(
                violations=[
                    error_details_pb2.QuotaFailure.Violation(
                        subject=v.subject, description=v.description
                    )
                    for v in exc.violations
                ]
            )
        )
    packed = []
    for detail in details:
        holder = any_pb2.Any()
        holder.Pack(detail)
        packed.append(holder)
    return status_pb2.Status(code=getattr(code_pb2, code.name), message=exc.message, details=packed)


def internal_error() -> CampaignError:
    return CampaignError("internal error; it has been logged", reason="INTERNAL")


def as_campaign_error(exc: Exception) -> CampaignError:
    if isinstance(exc, CampaignError):
        return exc
    # Never a traceback to the client: it is in our log with the call that hit it.
    log.error("unhandled error", exc_info=exc)
    return internal_error()


async def abort(context: grpc.aio.ServicerContext[Any, Any], exc: CampaignError) -> NoReturn:
    await context.abort_with_status(rpc_status.to_status(to_status(exc)))
    raise AssertionError("abort_with_status returned")  # pragma: no cover


def unary(
    fn: Callable[[S, Req, grpc.aio.ServicerContext[Req, Resp]], Awaitable[Resp]],
) -> Callable[[S, Req, grpc.aio.ServicerContext[Req, Resp]], Awaitable[Resp]]:
    @functools.wraps(fn)
    async def handler(self: S, request: Req, context: grpc.aio.ServicerContext[Req, Resp]) -> Resp:
        try:
            return await fn(self, request, context)
        except grpc.aio.AbortError:
            raise
        except Exception as exc:
            await abort(context, as_campaign_error(exc))

    return handler


def streaming(
    fn: Callable[[S, Req, grpc.aio.ServicerContext[Req, Resp]], AsyncGenerator[Resp, None]],
) -> Callable[[S, Req, grpc.aio.ServicerContext[Req, Resp]], AsyncGenerator[Resp, None]]:
    """fn may be a plain function that returns the generator of the layer below (checking
    the request first): one generator fewer that each message passes through and each open
    stream keeps, with its frame, for as long as it is open."""

    @functools.wraps(fn)
    async def handler(
        self: S, request: Req, context: grpc.aio.ServicerContext[Req, Resp]
    ) -> AsyncGenerator[Resp, None]:
        try:
            async with contextlib.aclosing(fn(self, request, context)) as responses:
                async for response in responses:
                    yield response
        except grpc.aio.AbortError:
            raise
        except Exception as exc:
            await abort(context, as_campaign_error(exc))

    return handler
