"""One stream's subscription: a bounded buffer, woken by a future, ended once."""

from __future__ import annotations

import pytest

from campaign_grpc.domain.errors import ResourceExhausted, Unavailable
from campaign_grpc.watch import errors
from campaign_grpc.watch.items import Item, Kind
from campaign_grpc.watch.subscription import Subscription


def change(revision: int) -> Item:
    return Item(Kind.CHANGE, revision)


async def test_take_hands_over_what_was_pushed_in_order_once() -> None:
    sub = Subscription("c1", "", limit=4, beat_slot=0)
    for revision in (1, 2, 3):
        sub.push(change(revision))
    assert sub.waiting() is None
    assert [i.revision for i in sub.take()] == [1, 2, 3]
    assert sub.take() == []


async def test_a_stream_a_whole_buffer_behind_is_ended_as_too_slow() -> None:
    sub = Subscription("c1", "", limit=2, beat_slot=0)
    sub.push(change(1))
    sub.push(change(2))
    sub.push(change(3))
    with pytest.raises(ResourceExhausted) as raised:
        sub.take()
    assert raised.value.reason == "WATCH_TOO_SLOW"
    # Nothing more is kept once it is ended.
    sub.push(change(4))
    with pytest.raises(ResourceExhausted):
        sub.take()


async def test_the_first_end_wins() -> None:
    sub = Subscription("c1", "", limit=2, beat_slot=0)
    sub.end(errors.shutting_down)
    sub.end(errors.too_slow)
    with pytest.raises(Unavailable) as raised:
        sub.take()
    assert raised.value.reason == "SHUTTING_DOWN"


async def test_the_future_waited_on_completes_on_push_wake_or_end() -> None:
    sub = Subscription("c1", "x", limit=2, beat_slot=0)
    assert sub.key == ("c1", "x")
    for poke in (lambda: sub.push(change(1)), sub.wake, lambda: sub.end(errors.too_slow)):
        waiter = sub.waiting()
        if waiter is None:  # what the previous poke left is taken first
            sub.take()
            waiter = sub.waiting()
        assert waiter is not None
        assert not waiter.done()
        poke()
        assert waiter.done()


async def test_a_stream_is_stuck_only_when_not_waiting_and_silent_past_the_timeout() -> None:
    sub = Subscription("c1", "", limit=2, beat_slot=0)
    sub.sent_at = 100.0
    assert not sub.stuck(now=105.0, timeout=10.0)
    assert sub.stuck(now=111.0, timeout=10.0)
    assert sub.waiting() is not None
    assert not sub.stuck(now=111.0, timeout=10.0)
