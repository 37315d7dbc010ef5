"""Writers that keep a ledger of every write the server acknowledged, and the check that a
fault lost none of them.

Each campaign has a single writer, which takes it through a fixed cycle of writes, one at a
time: its version alone says what it must look like and which transitions it logged. After
a fault the stored version is the last acknowledged one, or one more when the write that
failed without an answer landed all the same.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Callable
from dataclasses import dataclass, field

import grpc
from google.protobuf import field_mask_pb2

from campaign_grpc_client.v1 import campaign_pb2 as pb
from campaign_grpc_client.v1 import campaign_pb2_grpc
from e2e_helpers import details_of, set_status
from factories import new_id, runnable_campaign

C = pb.Campaign
Code = grpc.StatusCode
Stub = campaign_pb2_grpc.CampaignServiceStub

# The writes after the create, over and over: each changes the name or the status, so that
# two consecutive versions never look alike.
CYCLE = ("rename", "run", "stop", "rename", "force_stop")
STATUS_AFTER = {"run": C.STATUS_RUN, "stop": C.STATUS_STOPPING, "force_stop": C.STATUS_STOP}


def step_of(version: int) -> str:
    """The write that makes the given version of a campaign."""
    return "create" if version == 1 else CYCLE[(version - 2) % len(CYCLE)]


def state_at(version: int) -> tuple[str, int]:
    """The name and status of a campaign after its first `version` writes."""
    name, status = "v1", C.STATUS_STOP
    for v in range(2, version + 1):
        step = step_of(v)
        if step == "rename":
            name = f"v{v}"
        else:
            status = STATUS_AFTER[step]
    return name, status


def logged_statuses(version: int) -> list[int]:
    """The status after each event a campaign's first `version` writes logged, in order:
    every write logs one, a rename with the status unchanged."""
    statuses: list[int] = []
    for v in range(1, version + 1):
        step = step_of(v)
        if step == "create":
            statuses.append(C.STATUS_STOP)
        elif step == "rename":
            statuses.append(statuses[-1])
        else:
            statuses.append(STATUS_AFTER[step])
    return statuses


@dataclass
class Owned:
    """A campaign and what its writer knows of it."""

    customer_id: str
    id: str
    version: int = 0  # acknowledged; 0: not created yet
    etag: str = ""
    # A write failed without a clear answer: it may have landed.
    in_doubt: bool = False


@dataclass
class Ledger:
    campaigns: list[Owned] = field(default_factory=list)
    acknowledged: int = 0
    landed_unacknowledged: int = 0
    # (code, ErrorInfo reason) of every failed write
    failures: collections.Counter[tuple[str, str]] = field(default_factory=collections.Counter)

    @property
    def transitions(self) -> int:
        return sum(len(logged_statuses(c.version)) for c in self.campaigns)


def _matches(campaign: pb.Campaign, version: int) -> bool:
    return (campaign.name, campaign.status) == state_at(version)


async def write_next(stub: Stub, c: Owned) -> pb.Campaign:
    """Makes the campaign's next version; raises the call's error."""
    version = c.version + 1
    step = step_of(version)
    if step == "create":
        draft = runnable_campaign(c.customer_id, id=c.id, name="v1")
        response = await stub.CreateCampaign(pb.CreateCampaignRequest(campaign=draft), timeout=10)
        return response.campaign
    if step == "rename":
        changes = pb.Campaign(customer_id=c.customer_id, id=c.id, name=f"v{version}", etag=c.etag)
        updated = await stub.UpdateCampaign(
            pb.UpdateCampaignRequest(
                campaign=changes, update_mask=field_mask_pb2.FieldMask(paths=["name"])
            ),
            timeout=10,
        )
        return updated.campaign
    requested = C.STATUS_RUN if step == "run" else C.STATUS_STOP
    return await set_status(stub, c.customer_id, c.id, requested, force=step == "force_stop")


async def settle(stub: Stub, c: Owned, ledger: Ledger) -> None:
    """Reads the campaign back and checks it holds every acknowledged write: exactly the last
    acknowledged version, or, when a write is in doubt, possibly the one after it."""
    try:
        response = await stub.GetCampaign(
            pb.GetCampaignRequest(customer_id=c.customer_id, id=c.id), timeout=10
        )
    except grpc.aio.AioRpcError as err:
        if err.code() != Code.NOT_FOUND:
            raise
        assert c.version == 0, f"acknowledged campaign {c.id} (version {c.version}) is lost"
        c.in_doubt = False
        return
    found = response.campaign
    if found.etag == c.etag:
        assert _matches(found, c.version), (c, found)
    else:
        assert c.in_doubt, f"campaign {c.id} changed without an acknowledged write: {found}"
        assert _matches(found, c.version + 1), f"campaign {c.id} is neither {c} nor the next"
        c.version += 1
        c.etag = found.etag
        ledger.landed_unacknowledged += 1
    c.in_doubt = False


# The calls a fault may fail, with the reasons they may give: every other error fails the test.
Expected = Callable[[grpc.aio.AioRpcError], bool]


async def write_until(
    stub: Stub,
    ledger: Ledger,
    mine: list[Owned],
    customer_id: str,
    *,
    stop: asyncio.Event,
    expected: Expected,
    keep_going: bool,
    per_campaign: int = 8,
    at_most: int = 5_000,
    retry_delay: float = 0.05,
) -> None:
    """Writes to its own campaigns in turn, opening a new one every per_campaign writes, until
    stop is set or at_most writes were tried. On an expected failure the write is in doubt:
    with keep_going the campaign is settled (read back) once the server answers again, and
    writing goes on; without, the writer ends."""
    for attempt in range(at_most):
        if stop.is_set():
            return
        if attempt % per_campaign == 0 or not mine:
            mine.append(Owned(customer_id, new_id()))
            ledger.campaigns.append(mine[-1])
        c = mine[attempt % len(mine)]
        try:
            if c.in_doubt:
                await settle(stub, c, ledger)
            written = await write_next(stub, c)
        except grpc.aio.AioRpcError as err:
            if not expected(err):
                raise
            ledger.failures[(err.code().name, reason_of(err))] += 1
            c.in_doubt = True
            if not keep_going:
                return
            await asyncio.sleep(retry_delay)
            continue
        assert _matches(written, c.version + 1), (c, written)
        c.version += 1
        c.etag = written.etag
        ledger.acknowledged += 1


def reason_of(err: grpc.aio.AioRpcError) -> str:
    """The ErrorInfo reason of a failure, or "" when it carries none (the transport's own)."""
    try:
        return details_of(err).info.reason
    except AssertionError:
        return ""
