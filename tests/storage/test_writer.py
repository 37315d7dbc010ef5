"""The writer's batches: a job that fails takes its own writes back and no one else's."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import threading
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest

from campaign_grpc.domain.types import Campaign, CampaignType, Event, Reason, Status
from campaign_grpc.storage.connect import close_database, open_database
from campaign_grpc.storage.read_lanes import Readers
from campaign_grpc.storage.store import Store
from campaign_grpc.storage.writer import Writer


@dataclasses.dataclass
class Domain:
    store: Store
    writer: Writer
    readers: Readers
    committed: list[list[Event]]


@pytest.fixture
async def domain(database_url: str) -> AsyncIterator[Domain]:
    db = open_database(database_url)
    store = Store(db)
    store.migrate()
    committed: list[list[Event]] = []
    writer = Writer(db, journal=store, on_commit=committed.append)
    readers = Readers(db, 1)
    try:
        yield Domain(store, writer, readers, committed)
    finally:
        writer.close()
        readers.close()
        close_database(db)


class Refused(Exception):
    pass


def campaign(customer: str) -> Campaign:
    return Campaign(id=str(uuid.uuid4()), customer_id=customer, type=CampaignType.CALL)


async def batch(writer: Writer, *jobs: Any) -> list[Any]:
    """Runs the jobs in one transaction: handed over in one turn of the loop, they are."""
    return await asyncio.gather(*(writer.run(job) for job in jobs), return_exceptions=True)


def writes(d: Domain, c: Campaign, *, then_fail: bool = False) -> Any:
    def job() -> Campaign:
        d.store.append_event(c, Status.UNSPECIFIED, Reason.CREATED, 1)
        d.store.insert(c, "")
        if then_fail:
            raise Refused(c.id)
        return c

    return job


def refuses_before_writing(c: Campaign) -> Any:
    def job() -> None:
        raise Refused(c.id)

    return job


async def test_a_job_that_fails_after_writing_takes_back_only_its_own_writes(
    domain: Domain, customer: str
) -> None:
    a, b, c, d = (campaign(customer) for _ in range(4))
    results = await batch(
        domain.writer,
        writes(domain, a),
        writes(domain, b, then_fail=True),
        refuses_before_writing(c),
        writes(domain, d),
    )

    assert [r.id if isinstance(r, Campaign) else type(r) for r in results] == [
        a.id,
        Refused,
        Refused,
        d.id,
    ]
    stored = [
        await domain.readers.run(lambda k=k: domain.store.get(customer, k.id)) for k in (a, b, c, d)
    ]
    assert [found is not None for found in stored] == [True, False, False, True]
    # The events of the writes that stood, numbered on without a gap, and only those.
    [events] = domain.committed
    assert [(e.campaign_id, e.revision) for e in events] == [(a.id, 1), (d.id, 2)]
    assert await domain.readers.run(domain.store.head_revision) == 2


async def test_revisions_count_on_across_batches_with_failures(
    domain: Domain, customer: str
) -> None:
    for _ in range(3):
        await batch(
            domain.writer,
            writes(domain, campaign(customer), then_fail=True),
            writes(domain, campaign(customer)),
            refuses_before_writing(campaign(customer)),
            writes(domain, campaign(customer)),
        )

    revisions = [e.revision for events in domain.committed for e in events]
    assert revisions == list(range(1, 7))
    assert await domain.readers.run(domain.store.head_revision) == 6


@pytest.mark.skipif(not hasattr(os, "SCHED_BATCH"), reason="SCHED_BATCH is Linux's")
async def test_database_threads_do_not_preempt_the_event_loop_when_woken(domain: Domain) -> None:
    def policy() -> int:
        return os.sched_getscheduler(threading.get_native_id())

    assert await domain.writer.run(policy) == os.SCHED_BATCH
    assert await domain.readers.run(policy) == os.SCHED_BATCH
    assert os.sched_getscheduler(0) == os.SCHED_OTHER  # the event loop's own thread
