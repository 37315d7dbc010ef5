"""The dialer kit: hold leases, keep each campaign's current state, reconcile.

The informer/controller pattern of client-go and controller-runtime, for a dialer:

    class Calls:  # the dialer's own work
        async def dial(self, campaign: WatchStatusResponse) -> None: ...   # start; idempotent
        async def drain(self, campaign_id: str) -> None: ...               # stop; idempotent

    async with AsyncCampaignClient(target, token=...) as client:
        dialer = Dialer(client, Calls(), customer_id=customer)
        await dialer.run()            # until dialer.stop(): drains, lets go, leaves

It is level-triggered: whatever happened, each campaign is brought to what its current state
and this dialer's lease ask for. It dials a campaign while it holds its lease and the
campaign runs; drains it otherwise; confirms a stop it holds once drained, with its fencing
token; lets go of a lease the server asks for once drained. It acts only once the watch has
caught up (after a snapshot, or the heartbeat that ends a replay): never on replayed history.
A confirmation that finds the state moved on (STOP_REVISION_MISMATCH, CAMPAIGN_NOT_STOPPING)
is reconciled again; errors worth retrying are retried with backoff; nothing the server
answers ends run(). One reconcile per campaign at a time, different campaigns side by side.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import secrets
import socket
from typing import Protocol

from ._async.client import AsyncCampaignClient
from ._lease_holder import Held, LeaseHolder
from ._watch import SnapshotReset
from ._work_queue import WorkQueue
from .exceptions import CampaignServiceError, FailedPrecondition, NotFound
from .v1 import campaign_pb2 as pb

log = logging.getLogger("campaign_grpc_client")

W = pb.WatchStatusResponse
C = pb.Campaign

# What a confirmation or a report says when the campaign moved on since the state it acted
# on: reconcile again with the newer state, which the watch brings.
STATE_MOVED_ON = frozenset({"STOP_REVISION_MISMATCH", "CAMPAIGN_NOT_STOPPING"})


class Calls(Protocol):
    """The dialer's own work, which the kit starts and stops."""

    async def dial(self, campaign: pb.WatchStatusResponse) -> None:
        """Start dialing the campaign, or keep dialing it: called again after a change."""

    async def drain(self, campaign_id: str) -> None:
        """Stop starting calls of the campaign and return once its calls have ended."""


def default_holder() -> str:
    """Unique per process and kept across its reconnects."""
    return f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"


class Dialer:
    def __init__(
        self,
        client: AsyncCampaignClient,
        calls: Calls,
        *,
        customer_id: str = "",
        holder: str | None = None,
        capacity: int = 100,
        workers: int = 8,
    ) -> None:
        self._client = client
        self._calls = calls
        self._customer_id = customer_id
        self._workers = workers
        self._queue = WorkQueue()
        self._state: dict[str, pb.WatchStatusResponse] = {}
        self._dialing: set[str] = set()
        self._failures: dict[str, int] = {}
        self._caught_up = False
        self._stopping = False
        self.leases = LeaseHolder(
            client.stub,
            holder=holder or default_holder(),
            customer_id=customer_id,
            capacity=capacity,
            metadata=client.metadata,
            retry=client.watch_retry,
            on_change=self._queue.add,
        )
        self.caught_up = asyncio.Event()

    @property
    def holder(self) -> str:
        return self.leases.holder

    @property
    def dialing(self) -> frozenset[str]:
        return frozenset(self._dialing)

    async def report_outdial_exhausted(self, customer_id: str, campaign_id: str) -> pb.Campaign:
        """The campaign's list is done: reported with this dialer's fencing token."""
        lease = self.leases.lease(campaign_id)
        token = lease.fencing_token if lease is not None else 0
        return await self._client.report_outdial_exhausted(
            customer_id, campaign_id, fencing_token=token
        )

    async def run(self) -> None:
        tasks = [
            asyncio.create_task(self.leases.run(), name="dialer-leases"),
            asyncio.create_task(self._inform(), name="dialer-watch"),
            *(
                asyncio.create_task(self._work(), name=f"dialer-worker-{i}")
                for i in range(self._workers)
            ),
        ]
        try:
            # The leases' task ends once stop() has let everything go, or when another
            # process took the session over (with the same holder): what it still dials
            # is drained then.
            await tasks[0]
            for campaign_id in list(self._dialing):
                await self._calls.drain(campaign_id)
                self._dialing.discard(campaign_id)
        finally:
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            self._queue.close()

    async def stop(self) -> None:
        """Drains what it dials, lets its leases go, and leaves: run() returns."""
        self._stopping = True
        for campaign_id in list(self._dialing):
            await self._calls.drain(campaign_id)
            self._dialing.discard(campaign_id)
        for campaign_id in self.leases.held():
            self.leases.release(campaign_id)
        await self.leases.leave()

    # -- the informer --------------------------------------------------------------------

    def _reconnecting(self, error: CampaignServiceError) -> None:
        # What a resumed stream sends first is history: wait for its heartbeat.
        self._caught_up = False

    async def _inform(self) -> None:
        retry = dataclasses.replace(self._client.watch_retry, on_error=self._reconnecting)
        async with self._client.watch(self._customer_id, heartbeats=True, retry=retry) as watch:
            async for item in watch:
                if isinstance(item, SnapshotReset):
                    self._caught_up = False
                    stale = list(self._state)
                    self._state.clear()
                    for campaign_id in stale:
                        self._queue.add(campaign_id)
                    continue
                if item.kind in (W.KIND_SNAPSHOT, W.KIND_CHANGE):
                    if item.deleted:
                        self._state.pop(item.campaign_id, None)
                    else:
                        self._state[item.campaign_id] = item
                    if self._caught_up:
                        self._queue.add(item.campaign_id)
                elif item.kind in (W.KIND_SNAPSHOT_END, W.KIND_HEARTBEAT) and not self._caught_up:
                    self._caught_up = True
                    self.caught_up.set()
                    for campaign_id in {*self._state, *self._dialing, *self.leases.held()}:
                        self._queue.add(campaign_id)

    # -- reconciling ---------------------------------------------------------------------

    async def _work(self) -> None:
        while True:
            campaign_id = await self._queue.get()
            try:
                await self._reconcile_once(campaign_id)
            finally:
                self._queue.done(campaign_id)

    async def _reconcile_once(self, campaign_id: str) -> None:
        try:
            await self._reconcile(campaign_id)
        except FailedPrecondition as refused:
            if refused.reason == "LEASE_NOT_HELD":
                self.leases.forget(campaign_id)
                self._queue.add(campaign_id)
            elif refused.reason in STATE_MOVED_ON:
                self._retry_later(campaign_id, refused)
            else:
                self._retry_later(campaign_id, refused)
        except NotFound:
            self._state.pop(campaign_id, None)
            self._queue.add(campaign_id)
        except CampaignServiceError as error:
            self._retry_later(campaign_id, error)
        except Exception:
            # The dialer's own code failed: keep going, and try this campaign again later.
            log.exception("reconcile of campaign %s failed", campaign_id)
            self._retry_later(campaign_id, None)
        else:
            self._failures.pop(campaign_id, None)

    def _retry_later(self, campaign_id: str, error: CampaignServiceError | None) -> None:
        failures = self._failures[campaign_id] = self._failures.get(campaign_id, 0) + 1
        delay = min(5.0, 0.05 * 2 ** min(failures, 10))
        log.info("campaign %s: %s; reconciling again in %.2f s", campaign_id, error, delay)
        self._queue.add_after(campaign_id, delay)

    async def _reconcile(self, campaign_id: str) -> None:
        if not self._caught_up:
            return  # the heartbeat that ends the replay queues every campaign
        state = self._state.get(campaign_id)
        lease = None if self._stopping else self.leases.lease(campaign_id)
        if lease is not None and not lease.release_requested and _runs(state):
            assert state is not None
            await self._calls.dial(state)
            self._dialing.add(campaign_id)
            return
        if campaign_id in self._dialing:
            await self._calls.drain(campaign_id)
            self._dialing.discard(campaign_id)
        if lease is None:
            return
        if state is not None and state.status == C.STATUS_STOPPING:
            await self._confirm(state, lease)
        if lease.release_requested:
            self.leases.release(campaign_id)

    async def _confirm(self, state: pb.WatchStatusResponse, lease: Held) -> None:
        await self._client.confirm_drained(
            state.customer_id,
            state.campaign_id,
            state.stop_revision,
            fencing_token=lease.fencing_token,
        )


def _runs(state: pb.WatchStatusResponse | None) -> bool:
    return state is not None and state.status == C.STATUS_RUN and not state.deleted
