"""The observers of every call kept here: the access log and the count of unary calls."""

from __future__ import annotations

import asyncio
import logging

from .call import Call

access_log = logging.getLogger("campaign_grpc.access")


class AccessLog:
    """One log line per call: method, status code, duration."""

    def started(self, call: Call) -> None:
        pass

    def finished(self, call: Call, code: str, seconds: float) -> None:
        if access_log.isEnabledFor(logging.INFO):
            ms = seconds * 1000
            access_log.info(
                "%s %s %.2fms",
                call.method,
                code,
                ms,
                extra={"method": call.method, "code": code, "duration_ms": round(ms, 3)},
            )


class UnaryCallsInFlight:
    """Counts unary calls from their start (before their request has arrived) until their
    status has gone out, so that shutdown cancels none whose answer is still being sent.
    Admission (admission.py) decides which of them may run."""

    def __init__(self) -> None:
        self.count = 0
        self._idle = asyncio.Event()
        self._idle.set()

    def started(self, call: Call) -> None:
        if call.kind == "unary":
            self.count += 1
            self._idle.clear()

    def finished(self, call: Call, code: str, seconds: float) -> None:
        pass

    def done(self, call: Call) -> None:
        if call.kind == "unary":
            self.count -= 1
            if self.count == 0:
                self._idle.set()

    async def wait_idle(self) -> None:
        await self._idle.wait()
