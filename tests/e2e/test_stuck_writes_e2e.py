"""Writes the database will not take: behind another session's lock, on a full disk.

A write stuck behind a lock fails by itself, in bounded time, with a reason a client can
retry on; reads go on; health says the service cannot serve (and the server that it can
still answer); the failure is logged and counted; and a SIGTERM still ends the server within
its grace, with the write still stuck.
"""

from __future__ import annotations

import asyncio
import logging
import resource
import urllib.request
from collections.abc import Callable
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client.parser import text_string_to_metric_families

from campaign_grpc.ops.server import App
from campaign_grpc.settings import Settings
from campaign_grpc_client.v1 import campaign_pb2 as pb
from campaign_grpc_client.v1 import campaign_pb2_grpc
from e2e_helpers import (
    Process,
    create,
    details_of,
    eventually,
    fails,
    free_port,
    get,
    wait_serving,
    writes_held,
)
from factories import big_campaign, runnable_campaign

Code = grpc.StatusCode
SERVICE = "campaign.v1.CampaignService"
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
Stub = campaign_pb2_grpc.CampaignServiceStub


async def health_of(channel: grpc.aio.Channel, name: str) -> int:
    answer = await health_pb2_grpc.HealthStub(channel).Check(
        health_pb2.HealthCheckRequest(service=name), timeout=5
    )
    return int(answer.status)


async def turns(channel: grpc.aio.Channel, name: str, status: int, within: float = 10) -> None:
    async def now() -> bool:
        return await health_of(channel, name) == status

    await eventually(now, within=within)


def database_errors(port: int, reason: str) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as answer:
        text = answer.read().decode()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if (
                sample.name == "campaign_grpc_database_errors_total"
                and sample.labels.get("reason") == reason
            ):
                return float(sample.value)
    raise AssertionError(f"no campaign_grpc_database_errors_total{{reason={reason}}}")


async def test_a_write_behind_a_foreign_lock_fails_in_bounded_time_and_reads_go_on(
    start_server: Callable[..., Any],
    settings: Settings,
    database_url: str,
    customer: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    server: App = await start_server(
        settings, database_lock_timeout=0.5, metrics_listen="127.0.0.1:0"
    )
    assert server.metrics_port is not None
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        stub = campaign_pb2_grpc.CampaignServiceStub(channel)
        a = await create(stub, runnable_campaign(customer))
        with writes_held(database_url), caplog.at_level(logging.ERROR):
            # The client would wait 10 s; the server ends the wait at its lock timeout and
            # says why, with nothing written.
            err = await fails(create(stub, runnable_campaign(customer)), Code.UNAVAILABLE)
            assert err.info.reason == "DATABASE_LOCK_TIMEOUT"
            # Reads are served all along.
            assert (await get(stub, customer, a.id)).id == a.id
            listed = await stub.ListCampaigns(
                pb.ListCampaignsRequest(customer_id=customer), timeout=10
            )
            assert [c.id for c in listed.campaigns] == [a.id]
            # A load balancer learns the service cannot serve; the server still answers.
            await turns(channel, SERVICE, NOT_SERVING)
            assert await health_of(channel, "") == SERVING
        assert any("DATABASE_LOCK_TIMEOUT" in r.getMessage() for r in caplog.records)
        assert (
            await asyncio.to_thread(database_errors, server.metrics_port, "DATABASE_LOCK_TIMEOUT")
            >= 1
        )

        # The lock released, writes and health come back by themselves.
        await turns(channel, SERVICE, SERVING)
        b = await create(stub, runnable_campaign(customer))
        listed = await stub.ListCampaigns(pb.ListCampaignsRequest(customer_id=customer), timeout=10)
        assert [c.id for c in listed.campaigns] == [b.id, a.id]


async def test_writes_queued_behind_a_foreign_lock_hear_its_reason_within_their_deadline(
    start_server: Callable[..., Any], settings: Settings, database_url: str, customer: str
) -> None:
    """Writes keep arriving while the writer waits on a lock: each one's wait counts from its
    arrival, so a client whose deadline is well past the lock timeout hears the reason, not
    DEADLINE_EXCEEDED (a write queued behind another's wait used to wait as long again)."""
    server: App = await start_server(settings, database_lock_timeout=1.0)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        stub = campaign_pb2_grpc.CampaignServiceStub(channel)
        with writes_held(database_url):

            async def write(after: float) -> str:
                await asyncio.sleep(after)
                try:
                    await stub.CreateCampaign(
                        pb.CreateCampaignRequest(campaign=runnable_campaign(customer)),
                        timeout=1.6,
                    )
                except grpc.aio.AioRpcError as err:
                    reason = details_of(err).info.reason if err.code() == Code.UNAVAILABLE else ""
                    return f"{err.code().name} {reason}".strip()
                return "OK"

            answers = await asyncio.gather(*(write(0.25 * i) for i in range(8)))
        assert answers == ["UNAVAILABLE DATABASE_LOCK_TIMEOUT"] * 8


async def test_sigterm_ends_the_server_within_its_grace_with_a_write_stuck_behind_a_lock(
    spawn: Callable[..., Process], database_url: str, customer: str
) -> None:
    target = f"127.0.0.1:{free_port()}"
    # A lock timeout far beyond the grace: only the grace can end this stop in time.
    proc = spawn(
        "--listen", target, "--database-url", database_url,
        "--shutdown-grace", "1", "--database-lock-timeout", "120",
    )  # fmt: skip
    await wait_serving(target, proc)
    async with grpc.aio.insecure_channel(target) as channel:
        stub = campaign_pb2_grpc.CampaignServiceStub(channel)
        with writes_held(database_url):
            stuck = asyncio.create_task(create(stub, runnable_campaign(customer)))
            done, _ = await asyncio.wait([stuck], timeout=0.5)
            assert not done, "the write did not wait for the lock"
            proc.terminate()
            # Well within the lock timeout: the stop did not wait for the write.
            assert await proc.exit_code(within=30) == 0
            with pytest.raises(grpc.aio.AioRpcError) as raised:
                await stuck
    assert raised.value.code() in (Code.CANCELLED, Code.UNAVAILABLE)
    assert "left behind" in proc.log or "cancelling it" in proc.log


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_a_full_disk_turns_the_service_not_serving_while_reads_go_on(
    spawn: Callable[..., Process], database_url: str, customer: str
) -> None:
    """The disk is full for campaigns, not for a few bytes: the health probe's own write
    would pass, but the writes that failed hold the service NOT_SERVING."""
    target = f"127.0.0.1:{free_port()}"
    proc = spawn("--listen", target, "--database-url", database_url, "--health-interval", "0.5")
    # Files of the server may not grow past 3 MB: a dozen large campaigns fill them.
    resource.prlimit(proc.proc.pid, resource.RLIMIT_FSIZE, (3_000_000, 3_000_000))
    await wait_serving(target, proc)
    async with grpc.aio.insecure_channel(target) as channel:
        stub = campaign_pb2_grpc.CampaignServiceStub(channel)
        small = await create(stub, runnable_campaign(customer))
        refused = None
        for _ in range(30):
            try:
                await create(stub, big_campaign(customer))
            except grpc.aio.AioRpcError as err:
                refused = err
                break
        assert refused is not None, "the disk never filled"
        assert refused.code() == Code.UNAVAILABLE
        assert details_of(refused).info.reason == "DATABASE_UNAVAILABLE"
        await turns(channel, SERVICE, NOT_SERVING)
        assert await health_of(channel, "") == SERVING
        assert (await get(stub, customer, small.id)).id == small.id
    proc.terminate()
    assert await proc.exit_code(within=30) == 0
