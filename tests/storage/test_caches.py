"""The caches' aging: what nobody reads leaves, and the memory it held is given back."""

from __future__ import annotations

from campaign_grpc.ops.caches import Caches
from campaign_grpc.storage.versions import VersionCache

MIB = 1024 * 1024


async def test_megabytes_let_go_by_an_aging_are_given_back_and_a_kilobyte_is_not() -> None:
    big: VersionCache[bytes] = VersionCache(64 * MIB)
    small: VersionCache[bytes] = VersionCache(64 * MIB)
    big.put(("c", "a", 1, 1), b"", 8 * MIB)
    small.put(("c", "b", 1, 1), b"", 1024)
    released: list[int] = []

    async def release() -> None:
        released.append(1)

    caches = Caches([big, small], released=release)
    await caches.step()  # both move to the old generation: nothing goes
    assert released == []
    assert caches.bytes == 8 * MIB + 1024
    await caches.step()  # nobody read them: they go
    assert caches.bytes == 0
    assert released == [1]

    small.put(("c", "b", 2, 2), b"", 1024)
    await caches.step()
    await caches.step()  # a kilobyte let go: not worth a trim
    assert released == [1]
