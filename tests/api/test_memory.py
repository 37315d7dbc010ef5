"""When the memory trimmer gives freed heap pages back, and when it leaves the server alone."""

from __future__ import annotations

import pytest

from campaign_grpc.ops import memory


def trimmer(free: list[int]) -> tuple[memory.MemoryTrimmer, list[int]]:
    sizes = iter(free)
    trims: list[int] = []
    t = memory.MemoryTrimmer(interval_s=0.01, margin=50)
    t._trim = lambda pad: trims.append(pad) or 1
    t._free = lambda: next(sizes)
    return t, trims


async def test_a_burst_of_freed_memory_is_trimmed_once_and_a_steady_server_never() -> None:
    # free bytes in glibc's heaps at each step: a steady 10, a burst freed (200), kept free
    # after the trim (a trim leaves them free in glibc's books), then more freed (260).
    t, trims = trimmer([10, 10, 200, 200, 200, 260])

    for _ in range(6):
        await t.step()

    assert trims == [0, 0]
    assert t.trims == 2


async def test_free_memory_reused_then_freed_again_is_trimmed_again() -> None:
    t, trims = trimmer([200, 20, 200])

    for _ in range(3):
        await t.step()

    assert len(trims) == 2


def test_glibc_reports_its_free_memory() -> None:
    glibc = memory._glibc()
    if glibc is None:
        pytest.skip("not glibc 2.33 or later")
    _, free_bytes = glibc
    chunks = [bytearray(4096) for _ in range(20_000)]  # 80 MiB of small blocks
    del chunks[::2]

    assert free_bytes() >= 20_000 // 2 * 4096


async def test_a_release_trims_below_the_margin_and_counts_as_the_last_trim() -> None:
    # A cache let go of 30 bytes' worth (below the margin of 50): released at once; the
    # next step finds nothing more freed since, and leaves the heap alone.
    t, trims = trimmer([40, 40])

    await t.release()
    await t.step()

    assert trims == [0]
