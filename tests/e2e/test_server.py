"""The server as its users meet it: reflection, health, the command, logs and shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import re
import sqlite3
import subprocess
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import grpc
import psycopg
import pytest
from google.protobuf import descriptor_pb2, descriptor_pool
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)

from campaign_grpc.ops.server import App
from campaign_grpc.settings import Settings, env_name
from campaign_grpc_client.v1 import campaign_pb2 as pb
from campaign_grpc_client.v1 import campaign_pb2_grpc
from e2e_helpers import (
    CLI,
    Process,
    create,
    details_of,
    eventually,
    fails,
    free_port,
    get,
    read_snapshot,
    reflect,
    refuses_new_calls,
    set_status,
    wait_serving,
    watch,
    writes_held,
)
from factories import new_id, runnable_campaign

C = pb.Campaign
Code = grpc.StatusCode
SERVICE = "campaign.v1.CampaignService"
HEALTH = "grpc.health.v1.Health"
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
RPCS = {
    "CreateCampaign",
    "GetCampaign",
    "ListCampaigns",
    "UpdateCampaign",
    "DeleteCampaign",
    "UndeleteCampaign",
    "UpdateCampaignStatus",
    "ConfirmDrained",
    "ReportOutdialExhausted",
    "WatchStatus",
    "ListCampaignEvents",
    "HoldLeases",
}


# -- reflection -----------------------------------------------------------------------------


def files_of(answer: reflection_pb2.ServerReflectionResponse) -> dict[str, Any]:
    assert answer.WhichOneof("message_response") == "file_descriptor_response", answer
    files = {}
    for raw in answer.file_descriptor_response.file_descriptor_proto:
        proto = descriptor_pb2.FileDescriptorProto.FromString(raw)
        files[proto.name] = proto
    return files


@pytest.mark.parametrize("package", ["v1", "v1alpha"])
async def test_reflection_lists_and_describes_the_services(
    channel: grpc.aio.Channel, package: str
) -> None:
    listed, described, reflected, missing = await reflect(
        channel,
        package,
        [
            reflection_pb2.ServerReflectionRequest(list_services=""),
            reflection_pb2.ServerReflectionRequest(file_containing_symbol=SERVICE),
            reflection_pb2.ServerReflectionRequest(
                file_containing_symbol=f"grpc.reflection.{package}.ServerReflection"
            ),
            reflection_pb2.ServerReflectionRequest(file_containing_symbol="campaign.v1.Nope"),
        ],
    )

    names = {s.name for s in listed.list_services_response.service}
    assert {SERVICE, HEALTH, f"grpc.reflection.{package}.ServerReflection"} <= names

    files = files_of(described)
    campaign_file = files["campaign/v1/campaign.proto"]
    assert "campaign/v1/options.proto" in campaign_file.dependency
    (service,) = campaign_file.service
    assert service.name == "CampaignService"
    assert {m.name for m in service.method} == RPCS
    (watch_method,) = [m for m in service.method if m.name == "WatchStatus"]
    assert watch_method.server_streaming
    assert watch_method.output_type == ".campaign.v1.WatchStatusResponse"
    # Every import comes along, so that a client can build the messages with no proto files.
    pool = descriptor_pool.DescriptorPool()
    added: set[str] = set()
    while len(added) < len(files):
        ready = [f for n, f in files.items() if n not in added and set(f.dependency) <= added]
        assert ready, f"imports missing from the answer: {files.keys()}"
        for f in ready:
            pool.Add(f)
            added.add(f.name)
    assert pool.FindMessageTypeByName("campaign.v1.Campaign").fields_by_name["tm_create"]

    (reflection_file,) = files_of(reflected).values()
    assert reflection_file.package == f"grpc.reflection.{package}"
    assert [s.name for s in reflection_file.service] == ["ServerReflection"]

    assert missing.error_response.error_code == Code.NOT_FOUND.value[0]


async def test_the_reflection_client_of_grpcio_resolves_the_service(server: App) -> None:
    def resolve() -> tuple[list[str], set[str], str]:
        with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            database = ProtoReflectionDescriptorDatabase(channel)
            services = list(database.get_services())
            pool = descriptor_pool.DescriptorPool(database)
            service = pool.FindServiceByName(SERVICE)
            method = service.FindMethodByName("CreateCampaign")
            return services, {m.name for m in service.methods}, method.input_type.full_name

    services, methods, request = await asyncio.wait_for(asyncio.to_thread(resolve), 10)

    assert SERVICE in services
    assert methods == RPCS
    assert request == "campaign.v1.CreateCampaignRequest"


# -- health ---------------------------------------------------------------------------------


async def test_health_is_serving_for_the_server_and_the_service(
    channel: grpc.aio.Channel,
) -> None:
    health = health_pb2_grpc.HealthStub(channel)
    for name in ("", SERVICE):
        answer = await health.Check(health_pb2.HealthCheckRequest(service=name), timeout=5)
        assert answer.status == SERVING, name
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await health.Check(health_pb2.HealthCheckRequest(service="no.Such"), timeout=5)
    assert raised.value.code() == Code.NOT_FOUND


async def test_health_turns_not_serving_when_stop_begins(
    start_server: Callable[..., Any], settings: Settings
) -> None:
    # A long grace: an idle health watch must not hold the stop once no unary call is left.
    # No database check meanwhile: one slower than its interval on a busy machine would turn
    # the status NOT_SERVING before the stop does.
    server: App = await start_server(settings, shutdown_grace=60, health_interval=3600)
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{server.port}")
    health = health_pb2_grpc.HealthStub(channel)
    statuses: asyncio.Queue[int] = asyncio.Queue()

    async def follow() -> None:
        with_errors = health.Watch(health_pb2.HealthCheckRequest(service=SERVICE))
        try:
            async for answer in with_errors:
                await statuses.put(answer.status)
        except grpc.aio.AioRpcError:
            pass

    follower = asyncio.create_task(follow())
    try:
        assert await asyncio.wait_for(statuses.get(), 5) == SERVING
        stopping = asyncio.create_task(server.stop())
        assert await asyncio.wait_for(statuses.get(), 5) == NOT_SERVING
        await asyncio.wait_for(stopping, 10)
    finally:
        follower.cancel()
        await asyncio.gather(follower, return_exceptions=True)
        await channel.close()


def run_sql(database_url: str, statement: str) -> None:
    """Runs a statement on the server's database from a session of its own, as an operator
    would."""
    if database_url.startswith("sqlite:///"):
        path = database_url.removeprefix("sqlite:///")
        with contextlib.closing(sqlite3.connect(path, isolation_level=None)) as db:
            db.execute(statement)
        return
    with psycopg.connect(database_url, autocommit=True) as pg:
        pg.execute(statement.encode())


async def test_the_server_is_not_serving_while_its_tables_cannot_be_read(
    start_server: Callable[..., Any], settings: Settings, customer: str
) -> None:
    server: App = await start_server(settings)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        stub = campaign_pb2_grpc.CampaignServiceStub(channel)
        health = health_pb2_grpc.HealthStub(channel)
        created = await create(stub, runnable_campaign(customer))

        async def status_is(wanted: int) -> bool:
            answer = await health.Check(health_pb2.HealthCheckRequest(), timeout=5)
            return answer.status == wanted

        # The database still answers SELECT 1, but no read of the service can succeed.
        run_sql(settings.database_url, "ALTER TABLE campaign RENAME TO campaign_away")
        try:
            await fails(
                stub.GetCampaign(pb.GetCampaignRequest(customer_id=customer, id=new_id())),
                Code.UNAVAILABLE,
            )
            await eventually(lambda: status_is(NOT_SERVING))
        finally:
            run_sql(settings.database_url, "ALTER TABLE campaign_away RENAME TO campaign")
        await eventually(lambda: status_is(SERVING))
        assert (await get(stub, customer, created.id)).id == created.id


# -- graceful shutdown in process -----------------------------------------------------------


async def test_a_call_in_flight_when_stop_begins_still_completes(
    start_server: Callable[..., Any], settings: Settings, customer: str
) -> None:
    app: App = await start_server(settings, shutdown_grace=5)
    entered, release = threading.Event(), threading.Event()
    insert = app.store.insert

    def slow_insert(*args: Any, **kwargs: Any) -> None:
        entered.set()
        release.wait(10)
        insert(*args, **kwargs)

    app.store.insert = slow_insert  # type: ignore[method-assign]
    target = f"127.0.0.1:{app.port}"
    async with grpc.aio.insecure_channel(target) as channel:
        stub = campaign_pb2_grpc.CampaignServiceStub(channel)
        in_flight = asyncio.create_task(create(stub, runnable_campaign(customer)))
        try:
            assert await asyncio.to_thread(entered.wait, 5)
            stopping = asyncio.create_task(app.stop())

            # New calls are refused while the one in flight is still running.
            await eventually(lambda: refuses_new_calls(target), within=5)
            assert not in_flight.done()
        finally:
            release.set()
        created = await asyncio.wait_for(in_flight, 5)
        await asyncio.wait_for(stopping, 10)

    again: App = await start_server(settings)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{again.port}") as channel:
        stub = campaign_pb2_grpc.CampaignServiceStub(channel)
        assert await get(stub, customer, created.id) == created


# -- database threads -----------------------------------------------------------------------


def read_threads() -> int:
    return sum(t.name.startswith("db-reader") for t in threading.enumerate())


async def test_reads_get_one_thread_on_sqlite_and_four_on_postgresql_unless_told(
    start_server: Callable[..., Any], settings: Settings, database_url: str
) -> None:
    before = read_threads()
    await start_server(settings)
    assert read_threads() - before == (1 if database_url.startswith("sqlite") else 4)

    before = read_threads()
    await start_server(settings, read_threads=3)
    assert read_threads() - before == 3


# -- the command ------------------------------------------------------------------------------


def serve_args(port: int, database: Path, *extra: str) -> list[str]:
    return [
        "--listen",
        f"127.0.0.1:{port}",
        "--database-url",
        f"sqlite:///{database}",
        "--shutdown-grace",
        "3",
        "--heartbeat-interval",
        "0.5",
        *extra,
    ]


async def exercise_and_terminate(proc: Process, port: int, customer: str) -> pb.Campaign:
    """Makes calls, keeps a watch open, sends SIGTERM: the watch ends, the server exits 0."""
    target = f"127.0.0.1:{port}"
    await wait_serving(target, proc)
    async with grpc.aio.insecure_channel(target) as channel:
        stub = campaign_pb2_grpc.CampaignServiceStub(channel)
        created = await create(stub, runnable_campaign(customer))
        await fails(get(stub, customer, new_id()), Code.NOT_FOUND)
        stream = watch(stub, customer)
        try:
            await read_snapshot(stream)
            proc.terminate()
            with pytest.raises(grpc.aio.AioRpcError) as raised:
                await stream.next_change(within=10)
        finally:
            await stream.close()
        assert raised.value.code() == Code.UNAVAILABLE
        assert details_of(raised.value).info.reason == "SHUTTING_DOWN"
    # Within the 3 s grace, and some room for the interpreter to go.
    assert await proc.exit_code(within=3 + 5) == 0
    return created


async def test_serve_logs_one_plain_line_per_call_and_exits_0_on_sigterm(
    spawn: Callable[..., Process], tmp_path: Path, customer: str
) -> None:
    port = free_port()
    proc = spawn(*serve_args(port, tmp_path / "plain.db"))

    await exercise_and_terminate(proc, port, customer)

    log = proc.log
    assert re.search(r"/campaign\.v1\.CampaignService/CreateCampaign OK \d+\.\d+ms$", log, re.M)
    assert re.search(r"/campaign\.v1\.CampaignService/GetCampaign NOT_FOUND \d+\.\d+ms$", log, re.M)
    assert re.search(
        r"/campaign\.v1\.CampaignService/WatchStatus UNAVAILABLE \d+\.\d+ms$", log, re.M
    )
    assert "Traceback" not in log


async def test_serve_logs_json_lines(
    spawn: Callable[..., Process], tmp_path: Path, customer: str
) -> None:
    port = free_port()
    proc = spawn(*serve_args(port, tmp_path / "json.db", "--log-format", "json"))

    await exercise_and_terminate(proc, port, customer)

    lines = [line for line in proc.log.splitlines() if line.strip()]
    assert lines
    entries = [json.loads(line) for line in lines]  # every line is JSON
    for entry in entries:
        # RFC 3339 in UTC to the millisecond, as log pipelines parse it.
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+00:00", entry["time"]), entry
        written = datetime.fromisoformat(entry["time"])
        assert abs((datetime.now(UTC) - written).total_seconds()) < 300, entry
    calls = {(e.get("method"), e.get("code")): e for e in entries if "method" in e}
    for key in (
        ("/campaign.v1.CampaignService/CreateCampaign", "OK"),
        ("/campaign.v1.CampaignService/GetCampaign", "NOT_FOUND"),
        ("/campaign.v1.CampaignService/WatchStatus", "UNAVAILABLE"),
    ):
        assert key in calls, key
        duration = calls[key]["duration_ms"]
        assert isinstance(duration, (int, float))
        assert duration >= 0


async def test_settings_come_from_environment_variables_and_flags_win(
    spawn: Callable[..., Process], tmp_path: Path, customer: str
) -> None:
    port = free_port()
    proc = spawn(
        "--log-format",
        "plain",
        env={
            "CAMPAIGN_GRPC_LISTEN": f"127.0.0.1:{port}",
            "CAMPAIGN_GRPC_DATABASE_URL": f"sqlite:///{tmp_path / 'env.db'}",
            "CAMPAIGN_GRPC_SHUTDOWN_GRACE": "3",
            "CAMPAIGN_GRPC_LOG_FORMAT": "json",
        },
    )

    await exercise_and_terminate(proc, port, customer)

    assert (tmp_path / "env.db").exists()
    assert re.search(r"CreateCampaign OK \d+\.\d+ms$", proc.log, re.M)
    assert not proc.log.lstrip().startswith("{")


def test_serve_help_lists_every_setting() -> None:
    done = subprocess.run(
        [str(CLI), "serve", "--help"],
        capture_output=True,
        text=True,
        timeout=30,
        env={"COLUMNS": "200", "PATH": "/usr/bin:/bin"},
        check=False,
    )

    assert done.returncode == 0, done.stderr
    for f in dataclasses.fields(Settings):
        assert "--" + f.name.replace("_", "-") in done.stdout, f.name
        assert env_name(f.name) in done.stdout, f.name


async def test_sigterm_during_a_burst_of_creates_loses_no_acknowledged_create(
    spawn: Callable[..., Process],
    tmp_path: Path,
    start_server: Callable[..., Any],
    settings: Settings,
    customer: str,
) -> None:
    database = tmp_path / "burst.db"
    port = free_port()
    proc = spawn(*serve_args(port, database))
    target = f"127.0.0.1:{port}"
    await wait_serving(target, proc)

    acknowledged: list[str] = []
    never_ran: list[str] = []
    outcomes: list[Code] = []
    enough = asyncio.Event()

    async def worker(stub: campaign_pb2_grpc.CampaignServiceStub) -> None:
        for _ in range(500):
            campaign_id = new_id()
            try:
                await create(stub, runnable_campaign(customer, id=campaign_id))
            except grpc.aio.AioRpcError as err:
                outcomes.append(err.code())
                if err.code() == Code.CANCELLED:
                    never_ran.append(campaign_id)
                if err.code() == Code.UNAVAILABLE:
                    return
                continue
            outcomes.append(Code.OK)
            acknowledged.append(campaign_id)
            if len(acknowledged) >= 40:
                enough.set()

    async with grpc.aio.insecure_channel(target) as channel:
        stub = campaign_pb2_grpc.CampaignServiceStub(channel)
        workers = [asyncio.create_task(worker(stub)) for _ in range(16)]
        try:
            await asyncio.wait_for(enough.wait(), 15)
            proc.terminate()
            await asyncio.wait_for(asyncio.gather(*workers), 20)
        finally:
            for task in workers:
                task.cancel()
            await asyncio.gather(*workers, return_exceptions=True)
    assert await proc.exit_code(within=3 + 5) == 0

    # CANCELLED is gRPC core killing calls that reached the server after shutdown began but
    # before any handler took them (grpc/grpc#41785): they never ran, which is checked below.
    assert set(outcomes) <= {Code.OK, Code.UNAVAILABLE, Code.CANCELLED}, set(outcomes)
    assert outcomes.count(Code.UNAVAILABLE) == 16  # every worker ended on the shutdown
    assert "Traceback" not in proc.log

    again: App = await start_server(settings, database_url=f"sqlite:///{database}")
    async with grpc.aio.insecure_channel(f"127.0.0.1:{again.port}") as channel:
        stub = campaign_pb2_grpc.CampaignServiceStub(channel)
        for campaign_id in acknowledged:
            assert (await get(stub, customer, campaign_id)).id == campaign_id
        for campaign_id in never_ran:
            await fails(get(stub, customer, campaign_id), Code.NOT_FOUND)


async def test_sigterm_lets_calls_in_flight_complete_within_the_grace(
    spawn: Callable[..., Process],
    database_url: str,
    start_server: Callable[..., Any],
    settings: Settings,
    customer: str,
) -> None:
    port = free_port()
    target = f"127.0.0.1:{port}"
    proc = spawn("--listen", target, "--database-url", database_url, "--shutdown-grace", "10")
    await wait_serving(target, proc)
    async with grpc.aio.insecure_channel(target) as channel:
        stub = campaign_pb2_grpc.CampaignServiceStub(channel)
        running = await create(stub, runnable_campaign(customer))
        with writes_held(database_url):
            calls = [
                asyncio.create_task(create(stub, runnable_campaign(customer))) for _ in range(3)
            ]
            calls.append(asyncio.create_task(set_status(stub, customer, running.id, C.STATUS_RUN)))
            done, _ = await asyncio.wait(calls, timeout=0.5)
            assert not done, "the writes did not wait"
            proc.terminate()

            await eventually(lambda: refuses_new_calls(target), within=5)
            assert not any(call.done() for call in calls)
        *created, ran = await asyncio.wait_for(asyncio.gather(*calls), 10)
    assert await proc.exit_code(within=10 + 5) == 0
    assert ran.status == C.STATUS_RUN

    again: App = await start_server(settings)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{again.port}") as channel:
        stub = campaign_pb2_grpc.CampaignServiceStub(channel)
        for campaign in [*created, ran]:
            assert await get(stub, customer, campaign.id) == campaign
