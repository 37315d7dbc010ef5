"""The server's limits: each refusal as a LimitExceeded, and the count of open watch streams.

A call past a limit is refused before any work is done for it, so that a flood of calls or
streams costs the server little and it keeps answering the others.
"""

from __future__ import annotations

import asyncio
import sys
from collections import deque

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


def _mib(size: int) -> str:
    return f"{size / (1024 * 1024):.1f} MiB"


class UnreadBytes:
    """Bytes of WatchStatus messages handed to gRPC and not yet taken by their clients, per
    server and per customer, each kept under its budget.

    A message is held from the moment its stream hands it to gRPC until the send completes,
    which is when the client's flow-control window has taken it: at once for a client that
    reads, never for one that does not (grpc copies each message it sends, so every stream's
    send holds its bytes, a change shared by many streams included). A stream whose message
    does not fit waits, in order, for room: a burst of large changes to many streams that
    read goes out in waves; room held by streams that do not read is never given back, and
    their customer's further messages wait until they are refused (see take). The first
    message is let in when nothing is held, so that one larger than a budget is sent rather
    than refused for ever. Every method runs on the event loop.
    """

    def __init__(self, per_server: int = sys.maxsize, per_customer: int = sys.maxsize) -> None:
        self.per_server = per_server
        self.per_customer = per_customer
        self.total = 0
        self._by_customer: dict[str, int] = {}
        # The messages waiting for room, per customer, in order: one that does not fit its
        # customer's budget holds back only that customer's later ones.
        self._waiting: dict[str, deque[tuple[int, asyncio.Future[None]]]] = {}
        # Streams refused room, for the log (see watch.slow_readers).
        self.refused = 0

    def held_by(self, customer_id: str) -> int:
        return self._by_customer.get(customer_id, 0)

    def _fits(self, customer_id: str, size: int) -> bool:
        held = self._by_customer.get(customer_id, 0)
        return (not self.total or self.total + size <= self.per_server) and (
            not held or held + size <= self.per_customer
        )

    def _hold(self, customer_id: str, size: int) -> None:
        self.total += size
        self._by_customer[customer_id] = self._by_customer.get(customer_id, 0) + size

    def try_take(self, customer_id: str, size: int) -> bool:
        """Holds size bytes for customer_id if they fit now, behind nobody waiting."""
        if self._waiting.get(customer_id) or not self._fits(customer_id, size):
            return False
        self._hold(customer_id, size)
        return True

    async def take(self, customer_id: str, size: int, within: float) -> None:
        """Holds size bytes for customer_id once they fit; raises LimitExceeded when they do
        not within that many seconds."""
        if self.try_take(customer_id, size):
            return
        waiter = asyncio.get_running_loop().create_future()
        self._waiting.setdefault(customer_id, deque()).append((size, waiter))
        try:
            async with asyncio.timeout(within):
                await waiter
        except BaseException as exc:
            # Given room as the wait ended: give it back, to the next in line.
            if waiter.done() and not waiter.cancelled():
                self.give_back(customer_id, size)
            else:
                waiter.cancel()
            if isinstance(exc, TimeoutError):
                self.refused += 1
                held = self.held_by(customer_id)
                raise self._refusal(
                    customer_id,
                    f"this stream's next message waited {within:g} s for room",
                    for_customer=bool(held) and held + size > self.per_customer,
                ) from None
            raise

    def refusal_now(self, customer_id: str) -> LimitExceeded | None:
        """Why a stream of customer_id that has yet to read its snapshot should not read
        it: its customer's or the server's budget is spent already, or its customer's
        streams wait for room. Safe to ask from a database thread (it only reads)."""
        for_customer = self.held_by(customer_id) >= self.per_customer or bool(
            self._waiting.get(customer_id)
        )
        if not for_customer and self.total < self.per_server:
            return None
        self.refused += 1
        return self._refusal(
            customer_id, "this stream's snapshot was not read", for_customer=for_customer
        )

    def give_back(self, customer_id: str, size: int) -> None:
        """Gives back what take() held, and room to those waiting that now fit."""
        if not size:
            return
        self.total -= size
        held = self._by_customer[customer_id] - size
        if held:
            self._by_customer[customer_id] = held
        else:
            del self._by_customer[customer_id]
        for customer, line in list(self._waiting.items()):
            while line:
                wanted, waiter = line[0]
                if waiter.done():  # gave up waiting
                    line.popleft()
                    continue
                if not self._fits(customer, wanted):
                    break
                line.popleft()
                self._hold(customer, wanted)
                waiter.set_result(None)
            if not line:
                del self._waiting[customer]

    def _refusal(self, customer_id: str, detail: str, *, for_customer: bool) -> LimitExceeded:
        held = self._by_customer.get(customer_id, 0)
        if for_customer:
            subject = _customer_subject(customer_id)
            return LimitExceeded(
                f"the WatchStatus streams of {subject} hold {_mib(held)} of messages their "
                f"clients have not read, of at most {_mib(self.per_customer)}, and {detail}; "
                "read every stream opened, then resume from the last revision received",
                QuotaViolation(
                    subject, f"at most {self.per_customer} bytes of unread WatchStatus messages"
                ),
                reason="WATCH_UNREAD_BYTES_FOR_CUSTOMER",
                limit=self.per_customer,
                metadata={"customer_id": customer_id, "unread_bytes": str(held)},
            )
        return LimitExceeded(
            f"the server's WatchStatus streams hold {_mib(self.total)} of messages their "
            f"clients have not read, of at most {_mib(self.per_server)}, and {detail}; "
            "resume from the last revision received, with backoff, or on another server",
            QuotaViolation(
                "server", f"at most {self.per_server} bytes of unread WatchStatus messages"
            ),
            reason="WATCH_UNREAD_BYTES",
            limit=self.per_server,
            metadata={"unread_bytes": str(self.total)},
        )
