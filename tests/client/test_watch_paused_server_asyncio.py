"""A watch on a connection that went dead without a word: a server paused with SIGSTOP, as a
half-open TCP connection or a NAT that forgot the flow would leave it."""

from __future__ import annotations

import contextlib
import dataclasses
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from campaign_grpc.settings import Settings
from campaign_grpc_client import AsyncCampaignClient, Retry, exceptions
from campaign_grpc_client.v1 import campaign_pb2 as pb
from client_twins import AsyncBeside, AsyncErrors, AsyncReader, AsyncServing, async_wait_serving
from e2e_helpers import Process, free_port
from factories import runnable_campaign

# Each test serves on a real socket.
pytestmark = pytest.mark.e2e

C = pb.Campaign
W = pb.WatchStatusResponse
QUICK = Retry(initial=0.05, maximum=0.3)
HEARTBEAT = 0.3
# Three intervals, and room for a loaded machine to schedule the watch's timer.
NOTICED_WITHIN = 3 * HEARTBEAT + 1.0
# How long a write made while the server is paused may wait: one the paused server holds a
# lock against (a health probe caught half-way) can go on only once it runs again.
MEANWHILE = 3.0


def change(m: Any) -> tuple[str, int, int]:
    return (m.campaign_id, m.status, m.revision)


def serve_paused_later(settings: Settings, target: str, log: Path) -> Process:
    args = ["--listen", target, "--database-url", settings.database_url]
    return Process([*args, "--heartbeat-interval", str(HEARTBEAT)], log)


@contextlib.contextmanager
def paused(proc: Process) -> Iterator[float]:
    """The server stopped by SIGSTOP (its connections stay open, silent) until the block ends."""
    proc.proc.send_signal(signal.SIGSTOP)
    try:
        yield time.monotonic()
    finally:
        proc.proc.send_signal(signal.SIGCONT)


async def test_the_watch_takes_a_paused_server_for_dead_and_resumes_once_it_runs(
    settings: Settings, tmp_path: Path, customer: str
) -> None:
    target = f"127.0.0.1:{free_port()}"
    errors = AsyncErrors()
    retry = dataclasses.replace(QUICK, on_error=errors.report)
    proc = serve_paused_later(settings, target, tmp_path / "server.log")
    try:
        await async_wait_serving(target, proc)
        async with (
            AsyncServing(settings) as writer,
            AsyncCampaignClient(target, watch_retry=retry) as client,
            AsyncCampaignClient(writer) as other,
        ):
            a = await other.create_campaign(runnable_campaign(customer))
            reader = AsyncReader(client.watch(customer))
            try:
                first = [await reader.next(), await reader.next()]
                assert [m.kind for m in first] == [W.KIND_SNAPSHOT, W.KIND_SNAPSHOT_END]
                await other.update_campaign_status(customer, a.id, C.STATUS_RUN)
                seen = [await reader.next()]

                with paused(proc) as since:
                    noticed, error = await errors.next(10)
                    # Made while the watched server is paused, through another on the database.
                    meanwhile = AsyncBeside(
                        other.update_campaign_status, customer, a.id, C.STATUS_STOP
                    )
                    await meanwhile.wait(MEANWHILE)
                await meanwhile.result(15)
                seen.append(await reader.next(15))
                b = await other.create_campaign(runnable_campaign(customer))
                seen.append(await reader.next())
            finally:
                assert await reader.close()
    finally:
        proc.kill()

    assert isinstance(error, exceptions.Unavailable)
    assert "no message from the server" in str(error)
    assert noticed - since < NOTICED_WITHIN, f"noticed after {noticed - since:.2f} s"
    assert [change(m) for m in seen] == [
        (a.id, C.STATUS_RUN, 2),
        (a.id, C.STATUS_STOPPING, 3),
        (b.id, C.STATUS_STOP, 4),
    ]
    assert all(m.kind == W.KIND_CHANGE for m in seen)
