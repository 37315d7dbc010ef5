"""Prometheus metrics, scraped over HTTP from real servers."""

from __future__ import annotations

import asyncio
import urllib.request
from collections.abc import Callable
from typing import Any

import grpc
from prometheus_client.parser import text_string_to_metric_families

from campaign_grpc.ops.server import App
from campaign_grpc.settings import Settings
from campaign_grpc.storage.connect import close_database, open_database
from campaign_grpc_client.v1 import campaign_pb2 as pb
from campaign_grpc_client.v1 import campaign_pb2_grpc
from e2e_helpers import create, eventually, fails, get, read_snapshot, set_status, watch
from factories import new_id, runnable_campaign

C = pb.Campaign
SERVICE = "campaign.v1.CampaignService"
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape_sync(port: int) -> tuple[str, str]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as answer:
        return answer.headers["Content-Type"], answer.read().decode()


async def scrape(app: App) -> Samples:
    assert app.metrics_port is not None
    _, text = await asyncio.to_thread(scrape_sync, app.metrics_port)
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, tuple(sorted(labels.items()))))


def call(method: str, **labels: str) -> dict[str, str]:
    return {"grpc_service": SERVICE, "grpc_method": method, "grpc_type": "unary", **labels}


async def written_reaches(app: App, count: int) -> None:
    """Events written follows the log as the server reads it back: shortly after a commit."""

    async def reached() -> bool:
        return value(await scrape(app), "campaign_grpc_events_written_total") == count

    await eventually(reached)


async def start_with_metrics(start_server: Callable[..., Any], settings: Settings) -> App:
    app: App = await start_server(settings, metrics_listen="127.0.0.1:0")
    return app


async def test_calls_are_counted_by_method_and_code_and_timed(
    start_server: Callable[..., Any], settings: Settings, customer: str
) -> None:
    app = await start_with_metrics(start_server, settings)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel:
        stub = campaign_pb2_grpc.CampaignServiceStub(channel)
        await create(stub, runnable_campaign(customer))
        await create(stub, runnable_campaign(customer))
        await fails(get(stub, customer, new_id()), grpc.StatusCode.NOT_FOUND)

    assert app.metrics_port is not None
    content_type, _ = await asyncio.to_thread(scrape_sync, app.metrics_port)
    assert content_type.startswith("text/plain")
    s = await scrape(app)
    handled = "grpc_server_handled_total"
    assert value(s, handled, **call("CreateCampaign", grpc_code="OK")) == 2
    assert value(s, handled, **call("GetCampaign", grpc_code="NOT_FOUND")) == 1
    assert value(s, handled, **call("GetCampaign", grpc_code="OK")) is None
    assert value(s, "grpc_server_started_total", **call("CreateCampaign")) == 2
    assert value(s, "grpc_server_handling_seconds_count", **call("CreateCampaign")) == 2
    assert value(s, "grpc_server_handling_seconds_bucket", **call("GetCampaign", le="+Inf")) == 1


async def test_watch_streams_events_and_campaigns_by_status(
    start_server: Callable[..., Any], settings: Settings, customer: str
) -> None:
    app = await start_with_metrics(start_server, settings)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel:
        stub = campaign_pb2_grpc.CampaignServiceStub(channel)
        await create(stub, runnable_campaign(customer))
        running = await create(stub, runnable_campaign(customer))
        await set_status(stub, customer, running.id, C.STATUS_RUN)

        await written_reaches(app, 3)
        s = await scrape(app)
        assert value(s, "campaign_grpc_watch_streams") == 0
        assert {
            status: value(s, "campaign_grpc_campaigns", status=status)
            for status in ("STATUS_STOP", "STATUS_STOPPING", "STATUS_RUN")
        } == {"STATUS_STOP": 1, "STATUS_STOPPING": 0, "STATUS_RUN": 1}

        stream = watch(stub, customer)
        try:
            await read_snapshot(stream)
            await set_status(stub, customer, running.id, C.STATUS_STOP)
            assert (await stream.next_change()).status == C.STATUS_STOPPING
            s = await scrape(app)
            assert value(s, "campaign_grpc_watch_streams") == 1
            assert value(s, "campaign_grpc_events_delivered_total") == 1
            await written_reaches(app, 4)
            assert value(s, "campaign_grpc_campaigns", status="STATUS_STOPPING") == 1
        finally:
            await stream.close()

        async def no_stream_open() -> bool:
            return value(await scrape(app), "campaign_grpc_watch_streams") == 0

        await eventually(no_stream_open)


async def test_database_errors_are_counted(
    start_server: Callable[..., Any], settings: Settings, customer: str
) -> None:
    app = await start_with_metrics(start_server, settings)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel:
        stub = campaign_pb2_grpc.CampaignServiceStub(channel)
        created = await create(stub, runnable_campaign(customer))
        unavailable = {"reason": "DATABASE_UNAVAILABLE"}
        assert value(await scrape(app), "campaign_grpc_database_errors_total", **unavailable) == 0

        # The table goes away under the server: its reads fail.
        db = open_database(settings.database_url)
        db.execute_sql("ALTER TABLE campaign RENAME TO campaign_gone")
        close_database(db)
        await fails(get(stub, customer, created.id), grpc.StatusCode.UNAVAILABLE)

    errors = value(await scrape(app), "campaign_grpc_database_errors_total", **unavailable)
    assert errors is not None
    assert errors >= 1


async def test_each_server_has_its_own_registry_and_metrics_are_off_by_default(
    start_server: Callable[..., Any], settings: Settings, customer: str
) -> None:
    busy = await start_with_metrics(start_server, settings)
    idle = await start_with_metrics(start_server, settings)
    off: App = await start_server(settings)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{busy.port}") as channel:
        await create(campaign_pb2_grpc.CampaignServiceStub(channel), runnable_campaign(customer))

    created = call("CreateCampaign", grpc_code="OK")
    assert value(await scrape(busy), "grpc_server_handled_total", **created) == 1
    assert value(await scrape(idle), "grpc_server_handled_total", **created) is None
    assert (off.metrics, off.metrics_port) == (None, None)
