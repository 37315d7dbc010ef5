"""Turns at sending snapshot and replay items: few at once, and never kept by a stuck stream."""

from __future__ import annotations

import asyncio

import pytest

from campaign_grpc.watch.turns import SendTurns

WAIT = 5.0  # an upper bound for something that must happen; never reached when all is well


async def test_no_more_than_the_allowed_turns_are_out_at_once() -> None:
    turns = SendTurns(concurrent=2, hold_s=WAIT)
    first, second = await turns.take(), await turns.take()
    third = asyncio.create_task(turns.take())
    await asyncio.sleep(0.05)
    assert not third.done()
    first.give_back()
    (await asyncio.wait_for(third, WAIT)).give_back()
    second.give_back()


async def test_a_turn_never_given_back_is_taken_back_by_the_clock() -> None:
    # A stream whose client stopped reading: its send never completes.
    turns = SendTurns(concurrent=1, hold_s=0.3)
    stuck = await turns.take()
    waited_from = asyncio.get_running_loop().time()
    turn = await asyncio.wait_for(turns.take(), WAIT)
    assert asyncio.get_running_loop().time() - waited_from >= 0.25
    # Given back late, the stuck turn frees nothing it no longer holds.
    stuck.give_back()
    waiting = asyncio.create_task(turns.take())
    await asyncio.sleep(0.02)
    assert not waiting.done()
    turn.give_back()
    (await asyncio.wait_for(waiting, WAIT)).give_back()


async def test_a_turn_given_back_twice_counts_once() -> None:
    turns = SendTurns(concurrent=1, hold_s=WAIT)
    turn = await turns.take()
    turn.give_back()
    turn.give_back()
    held = await turns.take()
    waiting = asyncio.create_task(turns.take())
    await asyncio.sleep(0.05)
    assert not waiting.done()
    held.give_back()
    (await asyncio.wait_for(waiting, WAIT)).give_back()


def test_at_least_one_turn() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        SendTurns(concurrent=0)
