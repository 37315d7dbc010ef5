"""Who is calling: the principal, and the trace context, that a call's writes are recorded with.

The gate that checks a bearer token names the caller for the rest of the call (each call runs
in a task, and so a context, of its own); without tokens, a client certificate's subject
names it under mutual TLS, and "anonymous" is left.
"""

from __future__ import annotations

from collections.abc import Callable
from contextvars import ContextVar
from typing import Any

import grpc

from ..domain.types import Origin
from ..ops import tracing

_principal: ContextVar[str | None] = ContextVar("campaign_grpc_principal", default=None)
# For a call whose requests come as a stream (the gate sees none of them): how to check the
# customer its first request names, once it comes.
_authorize: ContextVar[Callable[[str], None] | None] = ContextVar(
    "campaign_grpc_authorize", default=None
)

ANONYMOUS = "anonymous"


def identify(principal: str) -> None:
    """Names the caller of the current call (the token gate does, once it knows the token)."""
    _principal.set(principal)


def authorize_later(check: Callable[[str], None]) -> None:
    _authorize.set(check)


def authorize_customer(customer_id: str) -> None:
    """Raises unless the caller may act for customer_id ("": every customer); a server
    without tokens allows any."""
    check = _authorize.get()
    if check is not None:
        check(customer_id)


def certificate_subject(context: grpc.aio.ServicerContext[Any, Any]) -> str:
    """The subject of the client's certificate, under mutual TLS; "" without one."""
    auth = context.auth_context() or {}
    for key in ("x509_subject", "x509_common_name"):
        values = list(auth.get(key) or ())
        if values:
            value = values[0]
            return value.decode(errors="replace") if isinstance(value, bytes) else str(value)
    return ""


def principal_of(context: grpc.aio.ServicerContext[Any, Any]) -> str:
    named = _principal.get()
    if named is not None:
        return named
    # Kept for the rest of the call (its task's own context): a write asks twice, for its
    # event and for its audit line, and reading the auth context makes a dict each time.
    named = certificate_subject(context) or ANONYMOUS
    _principal.set(named)
    return named


def origin_of(context: grpc.aio.ServicerContext[Any, Any]) -> Origin:
    return Origin(principal_of(context), tracing.current_traceparent())
