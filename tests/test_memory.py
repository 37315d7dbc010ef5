"""When the memory trimmer gives freed heap pages back, and when it leaves the server alone."""

from __future__ import annotations

import pytest

from campaign_grpc.ops import memory


async def test_a_server_grown_past_the_margin_is_trimmed_and_a_steady_one_is_not(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sizes = iter([100, 100, 200, 120, 120, 120, 120])
    monkeypatch.setattr(memory, "resident_bytes", lambda: next(sizes))
    trims: list[int] = []
    trimmer = memory.MemoryTrimmer(interval_s=0.01, margin=50, every=3)  # started at 100
    trimmer._trim = lambda pad: trims.append(pad) or 1  # type: ignore[assignment]

    await trimmer.step()  # 100: steady
    await trimmer.step()  # 200: grown past the margin, trimmed (to 120)
    await trimmer.step()  # 120
    await trimmer.step()  # 120
    await trimmer.step()  # 120: within the margin of the start: never due

    assert trims == [0]
    assert trimmer.trims == 1


async def test_memory_still_high_after_a_trim_is_trimmed_again_now_and_then(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Memory in use at one trim (a burst still draining) may be free by a later one.
    sizes = iter([100, 300, 260, 260, 260, 260, 200])
    monkeypatch.setattr(memory, "resident_bytes", lambda: next(sizes))
    trimmer = memory.MemoryTrimmer(interval_s=0.01, margin=50, every=3)
    trimmer._trim = lambda pad: 1  # type: ignore[assignment]

    await trimmer.step()  # 300: grown, trimmed to 260
    for _ in range(3):
        await trimmer.step()  # 260 three times: due on the third

    assert trimmer.trims == 2
