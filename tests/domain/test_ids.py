"""The ids the service assigns."""

from __future__ import annotations

import time
import uuid

from campaign_grpc.domain.ids import new_id
from campaign_grpc.domain.validation import is_uuid


def test_ids_are_canonical_version_7_uuids() -> None:
    ids = [new_id() for _ in range(1000)]

    assert all(is_uuid(i) for i in ids)
    assert {uuid.UUID(i).version for i in ids} == {7}
    assert {uuid.UUID(i).variant for i in ids} == {uuid.RFC_4122}
    assert len(set(ids)) == len(ids)


def test_ids_carry_their_creation_time_and_sort_by_it() -> None:
    before = time.time_ns() // 1_000_000
    first = new_id()
    deadline = time.monotonic() + 1
    while (later := new_id())[:13] == first[:13] and time.monotonic() < deadline:
        pass  # the next millisecond
    after = time.time_ns() // 1_000_000

    assert first < later
    assert before <= uuid.UUID(first).int >> 80 <= uuid.UUID(later).int >> 80 <= after
