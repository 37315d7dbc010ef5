"""The limits on their own: the counting of watch streams, and what each refusal says."""

from __future__ import annotations

import asyncio

import pytest

from campaign_grpc.domain.errors import LimitExceeded
from campaign_grpc.ops.limits import (
    UnreadBytes,
    WatchStreamCounts,
    receive_ceiling,
    request_too_large,
    too_many_calls_in_flight,
)


def refusal(counts: WatchStreamCounts, customer_id: str) -> LimitExceeded:
    with pytest.raises(LimitExceeded) as raised:
        counts.take(customer_id)
    return raised.value


def test_streams_are_counted_per_server_and_per_customer() -> None:
    counts = WatchStreamCounts(per_server=5, per_customer=2)
    for customer_id in ("a", "a", "b", ""):
        counts.take(customer_id)

    assert counts.total == 4
    assert (counts.held_by("a"), counts.held_by("b"), counts.held_by(""), counts.held_by("c")) == (
        2,
        1,
        1,
        0,
    )


def test_a_customer_past_its_cap_is_refused_and_others_are_not() -> None:
    counts = WatchStreamCounts(per_server=10, per_customer=2)
    counts.take("a")
    counts.take("a")

    error = refusal(counts, "a")

    assert error.code == "RESOURCE_EXHAUSTED"
    assert error.reason == "TOO_MANY_WATCH_STREAMS_FOR_CUSTOMER"
    assert error.metadata == {"limit": "2", "customer_id": "a"}
    assert [v.subject for v in error.violations] == ["customer_id:a"]
    assert counts.total == 2
    counts.take("b")
    assert counts.total == 3


def test_the_watch_of_all_customers_counts_under_its_own_key() -> None:
    counts = WatchStreamCounts(per_server=10, per_customer=1)
    counts.take("")
    counts.take("a")

    error = refusal(counts, "")

    assert error.reason == "TOO_MANY_WATCH_STREAMS_FOR_CUSTOMER"
    assert [v.subject for v in error.violations] == ["all customers"]


def test_the_server_cap_refuses_every_customer() -> None:
    counts = WatchStreamCounts(per_server=2, per_customer=5)
    counts.take("a")
    counts.take("b")

    for customer_id in ("a", "c", ""):
        error = refusal(counts, customer_id)
        assert error.reason == "TOO_MANY_WATCH_STREAMS"
        assert error.metadata == {"limit": "2"}
    assert counts.total == 2


def test_a_released_stream_frees_its_slot() -> None:
    counts = WatchStreamCounts(per_server=2, per_customer=1)
    counts.take("a")
    counts.take("b")
    counts.release("a")

    assert (counts.total, counts.held_by("a")) == (1, 0)
    counts.take("a")
    assert counts.total == 2


def test_without_caps_nothing_is_refused() -> None:
    counts = WatchStreamCounts()
    for _ in range(10_000):
        counts.take("a")
    assert counts.held_by("a") == 10_000


def test_refusals_name_their_limit() -> None:
    too_large = request_too_large(2000, 1024)
    assert (too_large.code, too_large.reason) == ("RESOURCE_EXHAUSTED", "REQUEST_TOO_LARGE")
    assert too_large.metadata == {"limit": "1024", "request_bytes": "2000"}

    busy = too_many_calls_in_flight(1000)
    assert (busy.code, busy.reason) == ("RESOURCE_EXHAUSTED", "TOO_MANY_CALLS_IN_FLIGHT")
    assert busy.metadata == {"limit": "1000"}


def test_the_core_ceiling_is_above_the_limit_and_fits_a_c_int() -> None:
    assert receive_ceiling(1024 * 1024) == 2 * 1024 * 1024
    assert receive_ceiling(2**31 - 1) == 2**31 - 1


# -- unread bytes of watch streams ----------------------------------------------------------


async def test_unread_bytes_are_held_per_customer_and_given_back_in_order() -> None:
    unread = UnreadBytes(per_server=1000, per_customer=400)
    await unread.take("a", 300, within=1)
    # Past the customer's budget, a's next message waits; b's fits at once.
    waiting = asyncio.ensure_future(unread.take("a", 200, within=5))
    await asyncio.sleep(0)
    assert not waiting.done()
    assert unread.try_take("b", 400)
    assert (unread.held_by("a"), unread.held_by("b"), unread.total) == (300, 400, 700)

    unread.give_back("a", 300)
    await asyncio.wait_for(waiting, 1)
    assert (unread.held_by("a"), unread.total) == (200, 600)
    unread.give_back("a", 200)
    unread.give_back("b", 400)
    assert unread.total == 0


async def test_a_message_past_an_empty_budget_is_let_in_alone() -> None:
    unread = UnreadBytes(per_server=100, per_customer=50)
    await unread.take("a", 500, within=1)
    assert unread.held_by("a") == 500
    assert not unread.try_take("b", 1)


async def test_a_message_that_finds_no_room_in_time_is_refused_with_its_reason() -> None:
    unread = UnreadBytes(per_server=10_000, per_customer=400)
    await unread.take("a", 400, within=1)
    with pytest.raises(LimitExceeded) as raised:
        await unread.take("a", 100, within=0.05)
    refused = raised.value
    assert (refused.code, refused.reason) == (
        "RESOURCE_EXHAUSTED",
        "WATCH_UNREAD_BYTES_FOR_CUSTOMER",
    )
    assert refused.metadata == {"limit": "400", "customer_id": "a", "unread_bytes": "400"}
    assert unread.refused == 1

    await unread.take("b", 9_000, within=1)
    with pytest.raises(LimitExceeded) as raised:
        await unread.take("c", 1_000, within=0.05)
    assert raised.value.reason == "WATCH_UNREAD_BYTES"
    assert raised.value.violations[0].subject == "server"
    # Nothing is left held by the refused ones, and room goes on being given.
    assert unread.total == 9_400
    unread.give_back("b", 9_000)
    await unread.take("c", 1_000, within=1)
    assert unread.total == 1_400


async def test_a_snapshot_is_not_read_while_its_customer_s_budget_is_spent() -> None:
    unread = UnreadBytes(per_server=10_000, per_customer=400)
    assert unread.refusal_now("a") is None
    await unread.take("a", 300, within=1)
    assert unread.refusal_now("a") is None
    # a's next message waits for room: a's new streams would only wait behind it.
    waiting = asyncio.ensure_future(unread.take("a", 200, within=5))
    await asyncio.sleep(0)
    refused = unread.refusal_now("a")
    assert refused is not None
    assert refused.reason == "WATCH_UNREAD_BYTES_FOR_CUSTOMER"
    assert "snapshot was not read" in refused.message
    assert unread.refusal_now("b") is None

    unread.give_back("a", 300)
    await asyncio.wait_for(waiting, 1)
    assert unread.refusal_now("a") is None
