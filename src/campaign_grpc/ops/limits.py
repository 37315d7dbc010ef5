"""The server's limits: each refusal as a LimitExceeded, and the count of open watch streams.

A call past a limit is refused before any work is done for it, so that a flood of calls or
streams costs the server little and it keeps answering the others.
"""

from __future__ import annotations

import sys

from ..domain.errors import DeadlineExceeded, LimitExceeded, QuotaViolation

# gRPC core reads a message length into a C int.
_MAX_CORE_LENGTH = 2**31 - 1


def receive_ceiling(max_request_bytes: int) -> int:
    """gRPC core's own cap on a request, above ours: requests up to twice the limit are
    answered with our details; larger ones core refuses itself, before reading them."""
    return min(2 * max_request_bytes, _MAX_CORE_LENGTH)


def request_too_large(size: int, limit: int) -> LimitExceeded:
    return LimitExceeded(
        f"the request is {size} bytes; the server accepts at most {limit}",
        QuotaViolation("request", f"a request may be at most {limit} bytes"),
        reason="REQUEST_TOO_LARGE",
        limit=limit,
        metadata={"request_bytes": str(size)},
    )


def too_many_calls_in_flight(limit: int) -> LimitExceeded:
    return LimitExceeded(
        f"the server is answering {limit} calls already; retry with backoff",
        QuotaViolation("server", f"at most {limit} unary calls in flight per server"),
        reason="TOO_MANY_CALLS_IN_FLIGHT",
        limit=limit,
    )


def too_many_writes_in_flight(limit: int, calls: int) -> LimitExceeded:
    return LimitExceeded(
        f"the server is running {limit} writes already (the rest of its {calls} calls in "
        "flight are kept for reads); retry with backoff",
        QuotaViolation("server", f"at most {limit} unary writes in flight per server"),
        reason="TOO_MANY_WRITES_IN_FLIGHT",
        limit=limit,
    )


def too_many_calls_in_flight_for_customer(limit: int, customer_id: str) -> LimitExceeded:
    subject = _customer_subject(customer_id)
    return LimitExceeded(
        f"{subject} has {limit} calls in flight on this server already; retry with backoff",
        QuotaViolation(subject, f"at most {limit} unary calls in flight per customer"),
        reason="TOO_MANY_CALLS_IN_FLIGHT_FOR_CUSTOMER",
        limit=limit,
        metadata={"customer_id": customer_id},
    )


def request_bytes_in_flight(limit: int, held: int) -> LimitExceeded:
    return LimitExceeded(
        f"the server holds {held} bytes of requests already, of at most {limit}; "
        "retry with backoff",
        QuotaViolation("server", f"at most {limit} bytes of requests in flight per server"),
        reason="REQUEST_BYTES_IN_FLIGHT",
        limit=limit,
    )


def too_many_health_watches(limit: int) -> LimitExceeded:
    return LimitExceeded(
        f"the server has {limit} health Watch streams open already; use Check, or retry "
        "with backoff",
        QuotaViolation("server", f"at most {limit} grpc.health.v1.Health/Watch streams"),
        reason="TOO_MANY_HEALTH_WATCHES",
        limit=limit,
    )


def request_not_received(seconds: float) -> DeadlineExceeded:
    return DeadlineExceeded(
        f"the request message did not arrive within {seconds:g} s of the call's start",
        reason="REQUEST_NOT_RECEIVED",
        metadata={"limit_seconds": f"{seconds:g}"},
    )


def _customer_subject(customer_id: str) -> str:
    return f"customer_id:{customer_id}" if customer_id else "all customers"


class WatchStreamCounts:
    """Open WatchStatus streams, per server and per customer, each kept under its cap.

    A watch of all customers (the empty customer_id) counts under a key of its own.
    """

    def __init__(self, per_server: int = sys.maxsize, per_customer: int = sys.maxsize) -> None:
        self.per_server = per_server
        self.per_customer = per_customer
        self.total = 0
        self._by_customer: dict[str, int] = {}

    def held_by(self, customer_id: str) -> int:
        return self._by_customer.get(customer_id, 0)

    def take(self, customer_id: str) -> None:
        """Counts a new stream of customer_id; raises LimitExceeded past a cap."""
        if self.total >= self.per_server:
            raise LimitExceeded(
                f"the server has {self.per_server} WatchStatus streams open already; "
                "retry with backoff, or on another server",
                QuotaViolation("server", f"at most {self.per_server} WatchStatus streams"),
                reason="TOO_MANY_WATCH_STREAMS",
                limit=self.per_server,
            )
        held = self._by_customer.get(customer_id, 0)
        if held >= self.per_customer:
            subject = _customer_subject(customer_id)
            raise LimitExceeded(
                f"{subject} has {self.per_customer} WatchStatus streams open on this server "
                "already; close one, or retry with backoff",
                QuotaViolation(subject, f"at most {self.per_customer} WatchStatus streams"),
                reason="TOO_MANY_WATCH_STREAMS_FOR_CUSTOMER",
                limit=self.per_customer,
                metadata={"customer_id": customer_id},
            )
        self.total += 1
        self._by_customer[customer_id] = held + 1

    def release(self, customer_id: str) -> None:
        """Uncounts a stream that take() counted."""
        self.total -= 1
        held = self._by_customer[customer_id] - 1
        if held:
            self._by_customer[customer_id] = held
        else:
            del self._by_customer[customer_id]
