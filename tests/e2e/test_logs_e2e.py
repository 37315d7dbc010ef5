"""Logging never stops the server: a log destination nobody reads loses lines, not calls."""

from __future__ import annotations

import asyncio
import subprocess
import threading
import urllib.request
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from campaign_grpc_client.v1 import campaign_pb2_grpc
from e2e_helpers import CLI, create, eventually, free_port, get, wait_serving
from factories import runnable_campaign

CALLS = 1500  # each logs a line of about 100 bytes: twice what a pipe holds


def dropped_lines(port: int) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as answer:
        for line in answer.read().decode().splitlines():
            if line.startswith("campaign_grpc_log_lines_dropped_total "):
                return float(line.split()[1])
    raise AssertionError("no campaign_grpc_log_lines_dropped_total")


def unread_server(*args: str) -> subprocess.Popen[bytes]:
    """`campaign-grpc serve` whose stdout and stderr are pipes that nothing reads."""
    return subprocess.Popen(
        [str(CLI), "serve", *args],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


@pytest.mark.parametrize("log_format", ["plain", "json"])
async def test_a_log_destination_nobody_reads_drops_lines_and_serving_goes_on(
    sqlite_url: str, customer: str, log_format: str
) -> None:
    target, metrics_port = f"127.0.0.1:{free_port()}", free_port()
    proc = unread_server(
        "--listen", target, "--database-url", sqlite_url, "--log-format", log_format,
        "--log-buffer", "100", "--metrics-listen", f"127.0.0.1:{metrics_port}",
    )  # fmt: skip
    assert proc.stderr is not None
    try:
        await wait_serving(target)
        async with grpc.aio.insecure_channel(target) as channel:
            stub = campaign_pb2_grpc.CampaignServiceStub(channel)
            health = health_pb2_grpc.HealthStub(channel)
            c = await create(stub, runnable_campaign(customer))
            for _ in range(CALLS):
                assert (await get(stub, customer, c.id)).id == c.id
            answer = await health.Check(health_pb2.HealthCheckRequest(), timeout=5)
            assert answer.status == health_pb2.HealthCheckResponse.SERVING
            assert await asyncio.to_thread(dropped_lines, metrics_port) > 0

            # Read at last: the log says what it lost, and goes on.
            text: list[bytes] = []
            reader = threading.Thread(
                target=lambda: text.extend(iter(proc.stderr.readline, b"")),  # type: ignore[union-attr]
                daemon=True,
            )
            reader.start()

            async def told() -> bool:
                await get(stub, customer, c.id)
                return any(b"log lines dropped" in line for line in text)

            await eventually(told, within=10)
    finally:
        proc.kill()
        proc.wait(10)
        for pipe in (proc.stdout, proc.stderr):
            if pipe is not None:
                pipe.close()


def test_lines_logged_before_a_command_ends_are_written(tmp_path: Path) -> None:
    """The queue is written out at exit: a migration's lines are not lost."""
    done = subprocess.run(
        [str(CLI), "migrate", "--database-url", f"sqlite:///{tmp_path / 'c.db'}"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "database schema" in done.stdout + done.stderr
