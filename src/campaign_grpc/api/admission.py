"""Admission of unary calls: one gate over what the calls in flight hold of the server.

A unary call is admitted once its request has arrived, before it is parsed, and holds until
it ends: its request bytes (parsing and handling a request costs several times its size in
memory), a place among the calls in flight, a place among the writes if it writes (a method
the contract does not mark a read, see campaign_grpc_client.methods), and a place in its
customer's share. A call past any of them is refused at once with RESOURCE_EXHAUSTED and a
reason of its own, so that a flood costs the server little. The budgets are nested so that a
stuck database or a noisy customer cannot take what the others need: writes waiting on a lock
leave the reads their share, and one customer's calls leave the other customers theirs.
Health checks are never counted nor refused: load balancers must see a busy server healthy.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from typing import Any

from campaign_grpc_client.methods import READS

from ..domain.errors import LimitExceeded
from ..ops.limits import (
    request_bytes_in_flight,
    too_many_calls_in_flight,
    too_many_calls_in_flight_for_customer,
    too_many_health_watches,
    too_many_writes_in_flight,
)
from .interceptors import Call

CustomerOf = Callable[[Any], str]


def _every_customer(request: Any) -> str:
    return ""


@dataclass(frozen=True, slots=True)
class Budgets:
    calls: int
    writes: int
    per_customer: int
    request_bytes: int


@dataclass(frozen=True, slots=True)
class Ticket:
    """What one admitted call holds, to be given back when it ends."""

    write: bool
    customer: str


class Admission:
    """The counters behind the gate. Every method runs on the event loop: no locks."""

    def __init__(
        self,
        budgets: Budgets,
        *,
        reads: Collection[str] = READS,
        customer_of: Mapping[str, CustomerOf] | None = None,
        exempt: Collection[str] = (),
    ) -> None:
        self.budgets = budgets
        self._reads = frozenset(reads)
        self._customer_of = dict(customer_of or {})
        self._exempt = frozenset(exempt)
        self.calls = 0
        self.writes = 0
        self.request_bytes = 0
        self._by_customer: dict[str, int] = {}

    def guards(self, call: Call) -> bool:
        return call.kind == "unary" and call.service not in self._exempt

    def held_by(self, customer_id: str) -> int:
        return self._by_customer.get(customer_id, 0)

    def take_bytes(self, size: int) -> LimitExceeded | None:
        """Counts a request of size bytes that has arrived, or says why it may not be held.
        A request larger than the whole budget is let in alone, so that it can be answered
        REQUEST_TOO_LARGE (or served) rather than refused for ever."""
        limit = self.budgets.request_bytes
        if self.request_bytes and self.request_bytes + size > limit:
            return request_bytes_in_flight(limit, self.request_bytes)
        self.request_bytes += size
        return None

    def give_bytes(self, size: int) -> None:
        self.request_bytes -= size

    def admit(self, call: Call, request: Any) -> Ticket | LimitExceeded:
        budgets = self.budgets
        if self.calls >= budgets.calls:
            return too_many_calls_in_flight(budgets.calls)
        write = call.method not in self._reads
        if write and self.writes >= budgets.writes:
            return too_many_writes_in_flight(budgets.writes, budgets.calls)
        customer = self._customer_of.get(call.method, _every_customer)(request)
        held = self._by_customer.get(customer, 0)
        if held >= budgets.per_customer:
            return too_many_calls_in_flight_for_customer(budgets.per_customer, customer)
        self.calls += 1
        self.writes += write
        self._by_customer[customer] = held + 1
        return Ticket(write, customer)

    def release(self, ticket: Ticket) -> None:
        self.calls -= 1
        self.writes -= ticket.write
        held = self._by_customer[ticket.customer] - 1
        if held:
            self._by_customer[ticket.customer] = held
        else:
            del self._by_customer[ticket.customer]


class HealthWatches:
    """Counts open grpc.health.v1.Health/Watch streams and, as a gate, refuses those past
    the cap: each holds memory of its own, and grpc's health servicer sets no bound.
    Check, the unary health call, is never refused."""

    def __init__(self, method: str, limit: int) -> None:
        self.method = method
        self.limit = limit
        self.count = 0

    def started(self, call: Call) -> None:
        if call.method == self.method:
            self.count += 1

    def finished(self, call: Call, code: str, seconds: float) -> None:
        if call.method == self.method:
            self.count -= 1

    def guards(self, call: Call) -> bool:
        return call.method == self.method

    def refusal(self, call: Call, request: Any | None, context: Any) -> LimitExceeded | None:
        # This stream is counted already: the limit may be open alongside it.
        if self.count > self.limit:
            return too_many_health_watches(self.limit)
        return None
