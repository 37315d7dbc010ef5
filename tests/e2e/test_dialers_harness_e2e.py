"""Several dialer processes of the kits against real servers (SQLite; PostgreSQL with two
replicas), under faults: kill -9 of a dialer, SIGSTOP of one past its ttl then SIGCONT, a
dialer joining and one leaving while an operator stops and starts campaigns, a replica
killed. Dialers a and b run the Python kit, c and d the Go kit. Each dialer writes what it
dials; the checker finds, for every campaign, no moment two dialers dialed it, no stretch
without a dialer longer than ttl + 1 s while it ran, and fencing tokens that grow from one
holder to the next."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import pytest

from campaign_grpc_client.v1 import campaign_pb2 as pb
from campaign_grpc_client.v1 import campaign_pb2_grpc
from dial_intervals import Stretch, longest_gap, overlaps, stretches, tokens_grow
from e2e_helpers import (
    Process,
    details_of,
    eventually,
    free_port,
    running_campaign,
    wait_serving,
)
from toolchains import BUILD, go_build_env, run

C = pb.Campaign
TTL = 2.0
DIALER = Path(__file__).resolve().parents[1] / "dialer_process.py"
# The dialers of the Go kit; the others are Python's. Go's grpc.Dial takes one address: each
# is given the replica that stays up.
GO_DIALERS = {"c", "d"}


@pytest.fixture(scope="module")
def go_dialer() -> Path:
    """tests/go/dialerprocess, built once."""
    binary = BUILD / "go-dialer"
    run(
        ["go", "build", "-o", str(binary), "campaign-grpc/tests/go/dialerprocess"],
        env=go_build_env(),
        timeout=600,
    )
    return binary


pytestmark = pytest.mark.timeout(240)


@dataclass
class DialerProcess:
    name: str
    log: Path
    proc: subprocess.Popen[bytes]
    died_at: float | None = None

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait(5)
        self.died_at = time.time()


@dataclass
class Harness:
    tmp: Path
    targets: list[str]
    stub: campaign_pb2_grpc.CampaignServiceStub
    customer: str
    go_dialer: Path
    dialers: dict[str, DialerProcess] = field(default_factory=dict)

    def start(self, name: str, target: str) -> DialerProcess:
        log = self.tmp / f"{name}.jsonl"
        with (self.tmp / f"{name}.err").open("wb") as stderr:
            proc = subprocess.Popen(
                [
                    sys.executable,
                    str(DIALER),
                    "--target",
                    target,
                    "--holder",
                    name,
                    "--log",
                    str(log),
                ],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=stderr,
            )
        self.dialers[name] = d = DialerProcess(name, log, proc)
        return d

    def stretches(self) -> list[Stretch]:
        now = time.time()
        out: list[Stretch] = []
        for d in self.dialers.values():
            out += stretches(d.name, d.log, d.died_at, now)
        return out

    def dialing(self, campaign_id: str) -> list[str]:
        now = time.time()
        return [s.dialer for s in self.stretches() if s.campaign_id == campaign_id and s.end >= now]

    async def each_dialed_once(self, ids: list[str], by: set[str] | None = None) -> bool:
        for campaign_id in ids:
            holders = self.dialing(campaign_id)
            if len(holders) != 1 or (by is not None and holders[0] not in by):
                return False
        return True

    def close(self) -> None:
        for d in self.dialers.values():
            if d.proc.poll() is None:
                d.proc.kill()
                d.proc.wait(5)


async def operate(
    stub: campaign_pb2_grpc.CampaignServiceStub, customer: str, ids: list[str]
) -> None:
    """An operator who stops campaigns (the dialers confirm the drains) and starts them again."""
    while True:
        for campaign_id in ids:
            with contextlib.suppress(grpc.aio.AioRpcError):
                await stub.UpdateCampaignStatus(
                    pb.UpdateCampaignStatusRequest(
                        customer_id=customer, id=campaign_id, status=C.STATUS_STOP
                    ),
                    timeout=5,
                )
                await asyncio.sleep(1.0)
                await stub.UpdateCampaignStatus(
                    pb.UpdateCampaignStatusRequest(
                        customer_id=customer, id=campaign_id, status=C.STATUS_RUN
                    ),
                    timeout=5,
                )
            await asyncio.sleep(0.5)


async def run_drill(h: Harness, kill_replica: Process | None) -> None:
    stub, customer = h.stub, h.customer
    ids = []
    for _ in range(12):
        ids.append((await running_campaign(stub, customer)).id)
    stable, toggled = ids[:9], ids[9:]
    t = h.targets
    # b, which lives to the end, prefers replica 0, which is killed last: it goes on through
    # replica 1 with its leases.
    for name, first in (("a", 1), ("b", 0), ("c", 0)):
        h.start(name, _both(t, first))
    await eventually(lambda: h.each_dialed_once(stable), within=20)
    began = time.time()
    operator = asyncio.create_task(operate(stub, customer, toggled))
    try:
        # kill -9: its campaigns go to the others within ttl + 1 s.
        h.dialers["a"].kill()
        await eventually(lambda: h.each_dialed_once(stable, {"b", "c"}), within=TTL + 5)
        # A dialer joins under load: campaigns move to it, drained first.
        h.start("d", _both(t, 1))
        await eventually(lambda: _holds_some(h, stable, "d"), within=15)
        # Frozen past its ttl: its campaigns move; back, it stops dialing and is fenced.
        frozen = h.dialers["b"]
        held_by_b = [s for s in h.stretches() if s.dialer == "b" and s.end >= time.time()]
        frozen.proc.send_signal(signal.SIGSTOP)
        await asyncio.sleep(TTL + 1.5)
        await eventually(lambda: h.each_dialed_once(stable, {"c", "d"}), within=TTL + 5)
        frozen.proc.send_signal(signal.SIGCONT)
        for s in held_by_b:
            refused = details_of(
                await _fails(
                    stub.ReportOutdialExhausted(
                        pb.ReportOutdialExhaustedRequest(
                            customer_id=customer, id=s.campaign_id, fencing_token=s.token
                        ),
                        timeout=10,
                    )
                )
            )
            assert refused.info.reason == "LEASE_NOT_HELD"
        await eventually(lambda: h.each_dialed_once(stable), within=15)
        # One leaves (SIGTERM): it drains and lets go; the others take its campaigns.
        h.dialers["c"].proc.send_signal(signal.SIGTERM)
        assert h.dialers["c"].proc.wait(15) == 0
        h.dialers["c"].died_at = time.time()
        await eventually(lambda: h.each_dialed_once(stable, {"b", "d"}), within=TTL + 5)
        if kill_replica is not None:
            kill_replica.proc.kill()
            kill_replica.proc.wait(5)
            await asyncio.sleep(TTL + 1)
            await eventually(lambda: h.each_dialed_once(stable, {"b", "d"}), within=TTL + 5)
        ended = time.time()
    finally:
        operator.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await operator
    found = h.stretches()
    assert overlaps(found) == []
    assert tokens_grow(found)
    gaps = {c: longest_gap(found, c, began, ended) for c in stable}
    assert max(gaps.values()) < TTL + 1, gaps


def _both(targets: list[str], first: int) -> str:
    """Every replica, the first-th first (pick_first: the others when it is gone)."""
    first %= len(targets)
    return "ipv4:" + ",".join(targets[first:] + targets[:first])


async def _holds_some(h: Harness, ids: list[str], name: str) -> bool:
    return await h.each_dialed_once(ids) and any(h.dialing(i) == [name] for i in ids)


async def _fails(call: object) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await call  # type: ignore[misc]
    assert raised.value.code() == grpc.StatusCode.FAILED_PRECONDITION, raised.value
    return raised.value


def _serve_args(target: str, database_url: str) -> list[str]:
    return [
        "--listen", target, "--database-url", database_url, "--lease-ttl", str(TTL),
        "--heartbeat-interval", "0.5", "--event-poll-interval", "0.1",
        "--stop-grace", "60", "--shutdown-grace", "2",
    ]  # fmt: skip


async def test_dialers_on_sqlite_never_overlap_under_faults(
    tmp_path: Path,
    sqlite_url: str,
    spawn: Callable[..., Process],
    customer: str,
    go_dialer: Path,
) -> None:
    target = f"127.0.0.1:{free_port()}"
    server = spawn(*_serve_args(target, sqlite_url))
    await wait_serving(target, server)
    async with grpc.aio.insecure_channel(target) as channel:
        stub = campaign_pb2_grpc.CampaignServiceStub(channel)
        h = Harness(tmp_path, [target], stub, customer, go_dialer)
        try:
            await run_drill(h, None)
        finally:
            h.close()


async def test_dialers_on_two_postgresql_replicas_never_overlap_under_faults(
    tmp_path: Path,
    postgres_url: str,
    spawn: Callable[..., Process],
    customer: str,
    go_dialer: Path,
) -> None:
    targets = [f"127.0.0.1:{free_port()}" for _ in range(2)]
    replicas = [spawn(*_serve_args(t, postgres_url)) for t in targets]
    for t, r in zip(targets, replicas, strict=True):
        await wait_serving(t, r, within=30)
    async with grpc.aio.insecure_channel(targets[1]) as channel:
        stub = campaign_pb2_grpc.CampaignServiceStub(channel)
        h = Harness(tmp_path, targets, stub, customer, go_dialer)
        try:
            await run_drill(h, replicas[0])
        finally:
            h.close()
