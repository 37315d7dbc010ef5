"""A dialer process of the kit, for the fault harness: it dials nothing, and writes what it
would do as JSON lines, with the wall clock's time in seconds (as the Go dialer process of
tests/go/dialerprocess does).

    python tests/dialer_process.py --target ipv4:127.0.0.1:P1,127.0.0.1:P2 --holder NAME \\
        --log PATH [--capacity N]

Each line: {"t": seconds, "event": "dial" | "drain" | "valid", "campaign": id, "token": n,
"valid_until": seconds}. "valid" lines come with every answered keep-alive. SIGTERM stops it
gracefully (drains, lets go, leaves).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import time
from typing import IO, Any

from campaign_grpc_client import AsyncCampaignClient
from campaign_grpc_client.dialer import Dialer
from campaign_grpc_client.v1 import campaign_pb2 as pb


class LoggedCalls:
    def __init__(self, out: IO[str]) -> None:
        self.out = out
        self.dialer: Dialer | None = None
        self.dialing: set[str] = set()

    def write(self, event: str, **fields: Any) -> None:
        self.out.write(json.dumps({"t": time.time(), "event": event, **fields}) + "\n")
        self.out.flush()

    async def dial(self, campaign: pb.WatchStatusResponse) -> None:
        assert self.dialer is not None
        lease = self.dialer.leases.lease(campaign.campaign_id)
        if campaign.campaign_id not in self.dialing and lease is not None:
            self.dialing.add(campaign.campaign_id)
            self.write(
                "dial",
                campaign=campaign.campaign_id,
                token=lease.fencing_token,
                valid_until=wall(self.dialer.leases.valid_until),
            )

    async def drain(self, campaign_id: str) -> None:
        if campaign_id in self.dialing:
            self.dialing.discard(campaign_id)
            self.write("drain", campaign=campaign_id)


async def main(args: argparse.Namespace, out: IO[str]) -> None:
    calls = LoggedCalls(out)
    async with AsyncCampaignClient(args.target) as client:
        dialer = Dialer(client, calls, holder=args.holder, capacity=args.capacity)
        calls.dialer = dialer
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, lambda: loop.create_task(dialer.stop()))
        reporting = loop.create_task(report_validity(dialer, calls))
        try:
            await dialer.run()
        finally:
            reporting.cancel()
        calls.write("left")


def wall(monotonic: float) -> float:
    return time.time() + (monotonic - time.monotonic())


async def report_validity(dialer: Dialer, calls: LoggedCalls) -> None:
    """The lease's validity as it moves: the harness ends a frozen dialer's intervals there."""
    last = 0.0
    while True:
        await asyncio.sleep(0.1)
        if dialer.leases.valid_until != last:
            last = dialer.leases.valid_until
            calls.write("valid", valid_until=wall(last))


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--target", required=True)
    parser.add_argument("--holder", required=True)
    parser.add_argument("--log", required=True)
    parser.add_argument("--capacity", type=int, default=100)
    arguments = parser.parse_args()
    with open(arguments.log, "a") as log:
        asyncio.run(main(arguments, log))
