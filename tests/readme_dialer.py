"""The Python dialer of docs/dialer.md, as printed there (between the README markers),
run as a process by tests/e2e/test_readme_dialer_e2e.py. Its telephony only writes what it
starts and stops.

    python tests/readme_dialer.py TARGET HOLDER LOG
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys
import time

# README: dialer
from campaign_grpc_client import AsyncCampaignClient, WatchStatusResponse
from campaign_grpc_client.dialer import Dialer


class Calls:
    """What this dialer does; the kit decides when."""

    def __init__(self, telephony: Telephony) -> None:
        self.telephony = telephony

    async def dial(self, campaign: WatchStatusResponse) -> None:
        # Called while this dialer holds the campaign's lease and the campaign runs: again
        # after each of its changes, so it must be idempotent.
        await self.telephony.start(campaign.customer_id, campaign.campaign_id)

    async def drain(self, campaign_id: str) -> None:
        # Stop placing calls, and return once the calls in progress have ended: the kit
        # then confirms the drain (or lets go of the lease) with its fencing token.
        await self.telephony.stop_and_wait(campaign_id)


async def run_dialer(target: str, token: str | None, holder: str, telephony: Telephony) -> None:
    async with AsyncCampaignClient(target, token=token) as client:
        dialer = Dialer(client, Calls(telephony), holder=holder, capacity=200)
        telephony.on_list_done = dialer.report_outdial_exhausted  # sent with the fencing token
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, lambda: loop.create_task(dialer.stop()))
        await dialer.run()  # returns once stop() has drained, let go of every lease and left


# end README


class Telephony:
    """Dials nothing: writes each start and stop as a JSON line."""

    def __init__(self, log_path: str) -> None:
        self._log = open(log_path, "a")  # noqa: SIM115 - for the process's life
        self.on_list_done = None
        self.running: set[str] = set()

    def _write(self, event: str, campaign_id: str) -> None:
        line = {"t": time.monotonic(), "event": event, "campaign": campaign_id}
        self._log.write(json.dumps(line) + "\n")
        self._log.flush()

    async def start(self, customer_id: str, campaign_id: str) -> None:
        if campaign_id not in self.running:
            self.running.add(campaign_id)
            self._write("start", campaign_id)

    async def stop_and_wait(self, campaign_id: str) -> None:
        if campaign_id in self.running:
            await asyncio.sleep(0.2)  # the calls in progress end
            self.running.discard(campaign_id)
            self._write("stop", campaign_id)


if __name__ == "__main__":
    target, holder, log_path = sys.argv[1:4]
    asyncio.run(run_dialer(target, None, holder, Telephony(log_path)))
