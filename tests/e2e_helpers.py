"""Helpers for the end-to-end tests: error details off the wire, watch streams, subprocesses."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import psycopg
import pytest
from google.rpc import error_details_pb2, status_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2
from grpc_status import rpc_status

from campaign_grpc.settings import Settings
from campaign_grpc_client.v1 import campaign_pb2 as pb
from campaign_grpc_client.v1 import campaign_pb2_grpc
from factories import runnable_campaign

DOMAIN = "campaign-grpc"
CLI = Path(sys.executable).parent / "campaign-grpc"
W = pb.WatchStatusResponse


@dataclass
class ErrorDetails:
    code: grpc.StatusCode
    status: status_pb2.Status
    info: error_details_pb2.ErrorInfo
    bad_request: error_details_pb2.BadRequest | None
    precondition: error_details_pb2.PreconditionFailure | None
    quota: error_details_pb2.QuotaFailure | None

    @property
    def fields(self) -> set[str]:
        assert self.bad_request is not None, "no BadRequest in the status"
        return {v.field for v in self.bad_request.field_violations}

    @property
    def precondition_types(self) -> set[str]:
        assert self.precondition is not None, "no PreconditionFailure in the status"
        return {v.type for v in self.precondition.violations}

    @property
    def subjects(self) -> set[str]:
        assert self.precondition is not None, "no PreconditionFailure in the status"
        return {v.subject for v in self.precondition.violations}

    @property
    def quota_subjects(self) -> set[str]:
        assert self.quota is not None, "no QuotaFailure in the status"
        return {v.subject for v in self.quota.violations}


def details_of(err: grpc.aio.AioRpcError) -> ErrorDetails:
    """The google.rpc.Status a failed call carried in its trailing metadata, unpacked."""
    status = rpc_status.from_call(err)  # type: ignore[arg-type]
    assert status is not None, f"{err.code()} carried no google.rpc.Status: {err.details()}"
    assert status.code == err.code().value[0]
    assert status.message == err.details()
    infos = []
    bad_request = precondition = quota = None
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            infos.append(info)
        elif detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad_request = error_details_pb2.BadRequest()
            detail.Unpack(bad_request)
        elif detail.Is(error_details_pb2.PreconditionFailure.DESCRIPTOR):
            precondition = error_details_pb2.PreconditionFailure()
            detail.Unpack(precondition)
        elif detail.Is(error_details_pb2.QuotaFailure.DESCRIPTOR):
            quota = error_details_pb2.QuotaFailure()
            detail.Unpack(quota)
    assert len(infos) == 1, f"expected one ErrorInfo, got {infos}"
    assert infos[0].domain == DOMAIN
    assert re.fullmatch(r"[A-Z][A-Z0-9_]*", infos[0].reason), infos[0].reason
    return ErrorDetails(err.code(), status, infos[0], bad_request, precondition, quota)


async def fails(call: Awaitable[Any], code: grpc.StatusCode) -> ErrorDetails:
    """Awaits a call that must fail with code; returns its decoded details."""
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await call
    err = raised.value
    assert err.code() == code, f"expected {code}, got {err.code()}: {err.details()}"
    return details_of(err)


def stored_rows(db_path: Path) -> dict[str, list[tuple[Any, ...]]]:
    """Every row a request could change: all but what the server writes by itself, the
    health check's probe every interval and the mark that stored actions are encoded, once
    its background pass ends."""
    with contextlib.closing(sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)) as db:
        tables = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        rows = {t: sorted(db.execute(f'SELECT * FROM "{t}"'), key=repr) for t in tables}
    rows["meta"] = [
        row
        for row in rows["meta"]
        if not row[0].startswith("write_probe") and row[0] != "actions_encoded"
    ]
    return rows


async def refuses_new_calls(target: str) -> bool:
    """Whether the server at target answers a new call UNAVAILABLE, as one shutting down does."""
    async with grpc.aio.insecure_channel(target) as probe:
        try:
            await health_pb2_grpc.HealthStub(probe).Check(
                health_pb2.HealthCheckRequest(), timeout=1
            )
        except grpc.aio.AioRpcError as err:
            return err.code() == grpc.StatusCode.UNAVAILABLE
        return False


async def eventually(
    check: Callable[[], Awaitable[bool]], *, within: float = 5.0, every: float = 0.05
) -> None:
    """Polls check until it holds; fails after within seconds."""
    deadline = time.monotonic() + within
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {within} s")
        await asyncio.sleep(every)


async def until(check: Callable[[], bool], *, within: float = 5.0) -> None:
    """eventually() for a check that reads only what the test holds."""

    async def holds() -> bool:
        return check()

    await eventually(holds, within=within)


class Stream:
    """A server stream pumped into a queue, so that every read can be bounded."""

    def __init__(self, call: Any) -> None:
        self.call = call
        self._queue: asyncio.Queue[Any] = asyncio.Queue()
        self._task = asyncio.create_task(self._pump())

    async def _pump(self) -> None:
        try:
            async for message in self.call:
                await self._queue.put(message)
            await self._queue.put(None)
        except grpc.aio.AioRpcError as err:
            await self._queue.put(err)

    async def next(self, within: float = 5.0) -> Any:
        """The next message; raises the stream's AioRpcError; None at its OK end."""
        item = await asyncio.wait_for(self._queue.get(), within)
        if isinstance(item, grpc.aio.AioRpcError):
            raise item
        return item

    async def next_change(self, within: float = 5.0) -> Any:
        """The next message that is not a heartbeat."""
        deadline = time.monotonic() + within
        while True:
            message = await self.next(max(0.01, deadline - time.monotonic()))
            if message is None or message.kind != W.KIND_HEARTBEAT:
                return message

    async def nothing_but_heartbeats(self, wait: float) -> None:
        """Checks that for wait seconds only heartbeats arrive."""
        deadline = time.monotonic() + wait
        while (left := deadline - time.monotonic()) > 0:
            try:
                message = await self.next(left)
            except TimeoutError:
                return
            assert message is not None
            assert message.kind == W.KIND_HEARTBEAT, message

    async def close(self) -> None:
        self.call.cancel()
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task


def watch(
    stub: campaign_pb2_grpc.CampaignServiceStub,
    customer_id: str = "",
    campaign_id: str = "",
    after_revision: int = 0,
) -> Stream:
    return Stream(
        stub.WatchStatus(
            pb.WatchStatusRequest(
                customer_id=customer_id, campaign_id=campaign_id, after_revision=after_revision
            )
        )
    )


async def read_snapshot(stream: Stream) -> tuple[list[Any], int]:
    """The SNAPSHOT messages of a fresh watch and the revision of its SNAPSHOT_END."""
    snapshot = []
    while True:
        message = await stream.next()
        assert message is not None
        if message.kind == W.KIND_SNAPSHOT_END:
            return snapshot, message.revision
        assert message.kind == W.KIND_SNAPSHOT, message
        snapshot.append(message)


async def create(
    stub: campaign_pb2_grpc.CampaignServiceStub, campaign: pb.Campaign, request_id: str = ""
) -> pb.Campaign:
    response = await stub.CreateCampaign(
        pb.CreateCampaignRequest(campaign=campaign, request_id=request_id), timeout=10
    )
    return response.campaign


async def running_campaign(
    stub: campaign_pb2_grpc.CampaignServiceStub, customer_id: str, **changes: Any
) -> pb.Campaign:
    """A runnable campaign of the customer (with changes), created and set to STATUS_RUN."""
    request = pb.CreateCampaignRequest(campaign=runnable_campaign(customer_id, **changes))
    created = (await stub.CreateCampaign(request, timeout=10)).campaign
    run = pb.UpdateCampaignStatusRequest(
        customer_id=customer_id, id=created.id, status=pb.Campaign.STATUS_RUN
    )
    return (await stub.UpdateCampaignStatus(run, timeout=10)).campaign


async def get(
    stub: campaign_pb2_grpc.CampaignServiceStub, customer_id: str, campaign_id: str
) -> pb.Campaign:
    response = await stub.GetCampaign(
        pb.GetCampaignRequest(customer_id=customer_id, id=campaign_id), timeout=10
    )
    return response.campaign


async def set_status(
    stub: campaign_pb2_grpc.CampaignServiceStub,
    customer_id: str,
    campaign_id: str,
    status: pb.Campaign.Status.ValueType,
    force: bool = False,
) -> pb.Campaign:
    response = await stub.UpdateCampaignStatus(
        pb.UpdateCampaignStatusRequest(
            customer_id=customer_id, id=campaign_id, status=status, force=force
        ),
        timeout=10,
    )
    return response.campaign


async def confirm_drained(
    stub: campaign_pb2_grpc.CampaignServiceStub,
    customer_id: str,
    campaign_id: str,
    stop_revision: int,
) -> pb.Campaign:
    response = await stub.ConfirmDrained(
        pb.ConfirmDrainedRequest(
            customer_id=customer_id, id=campaign_id, stop_revision=stop_revision
        ),
        timeout=10,
    )
    return response.campaign


# -- the command as a subprocess ---------------------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def quick_settings(database_url: str) -> Settings:
    """A server on 127.0.0.1's free port whose background loops run often: the end-to-end
    tests' usual one."""
    return Settings(
        listen="127.0.0.1:0",
        database_url=database_url,
        stop_grace=60,
        heartbeat_interval=0.5,
        shutdown_grace=2,
        health_interval=0.2,
        event_poll_interval=0.1,
    )


class Process:
    """`campaign-grpc serve` in a subprocess, with its stderr in a file."""

    def __init__(self, args: list[str], log_path: Path, env: dict[str, str] | None = None) -> None:
        self.log_path = log_path
        self._log = log_path.open("wb")
        self.proc = subprocess.Popen(
            [str(CLI), "serve", *args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=self._log,
            env={**os.environ, **(env or {})},
        )

    @property
    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def terminate(self) -> None:
        self.proc.send_signal(signal.SIGTERM)

    async def exit_code(self, within: float) -> int:
        deadline = time.monotonic() + within
        while (code := self.proc.poll()) is None:
            if time.monotonic() > deadline:
                raise AssertionError(f"the server did not exit within {within} s:\n{self.log}")
            await asyncio.sleep(0.02)
        return code

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)
        self._log.close()


async def wait_serving(target: str, proc: Process | None = None, within: float = 15.0) -> None:
    """Waits until the health service at target answers SERVING."""
    deadline = time.monotonic() + within
    async with grpc.aio.insecure_channel(target) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        while True:
            if proc is not None and proc.proc.poll() is not None:
                raise AssertionError(f"the server exited early:\n{proc.log}")
            try:
                answer = await health.Check(health_pb2.HealthCheckRequest(), timeout=0.5)
                if answer.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.aio.AioRpcError:
                pass
            if time.monotonic() > deadline:
                log = proc.log if proc is not None else ""
                raise AssertionError(f"not SERVING within {within} s\n{log}")
            await asyncio.sleep(0.05)


@contextlib.contextmanager
def serving(folder: Path, *args: str) -> Iterator[str]:
    """HOST:PORT of `campaign-grpc serve` (with args) on a free port and a SQLite file in folder,
    SERVING until the block ends."""
    target = f"127.0.0.1:{free_port()}"
    database = f"sqlite:///{folder / 'campaigns.db'}"
    proc = Process(["--listen", target, "--database-url", database, *args], folder / "server.log")
    try:
        asyncio.run(wait_serving(target, proc))
        yield target
    finally:
        proc.kill()


def run(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None) -> tuple[int, str]:
    """Runs the command; its exit code and its stdout and stderr together."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("CAMPAIGN_GRPC_")}
    done = subprocess.run(
        [str(CLI), *args],
        capture_output=True,
        text=True,
        timeout=30,
        env={**clean, "COLUMNS": "200", **(env or {})},
        cwd=cwd,
        check=False,
    )
    return done.returncode, done.stdout + done.stderr


async def reflect(
    channel: grpc.aio.Channel, package: str, requests: list[reflection_pb2.ServerReflectionRequest]
) -> list[reflection_pb2.ServerReflectionResponse]:
    """Asks each request on one reflection stream of the given protocol version."""
    method = channel.stream_stream(
        f"/grpc.reflection.{package}.ServerReflection/ServerReflectionInfo",
        request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
        response_deserializer=reflection_pb2.ServerReflectionResponse.FromString,
    )
    call = method()
    answers = []
    try:
        for request in requests:
            await asyncio.wait_for(call.write(request), 5)
            answers.append(await asyncio.wait_for(call.read(), 5))
        await call.done_writing()
    finally:
        call.cancel()
    return answers


def token_line(token: str, customer: str) -> str:
    return f"{hashlib.sha256(token.encode()).hexdigest()} {customer}\n"


@contextlib.contextmanager
def writes_held(database_url: str) -> Iterator[None]:
    """Holds what every write transaction takes first, as a slow writer elsewhere would:
    the server's writer waits for it (SQLite's file lock, PostgreSQL's revision row)."""
    if database_url.startswith("sqlite:///"):
        conn = sqlite3.connect(database_url.removeprefix("sqlite:///"), isolation_level=None)
        try:
            conn.execute("BEGIN IMMEDIATE")
            yield
            conn.execute("ROLLBACK")
        finally:
            conn.close()
        return
    with psycopg.connect(database_url) as pg:
        pg.execute("SELECT value FROM meta WHERE key = 'revision' FOR UPDATE")
        yield
        pg.rollback()
