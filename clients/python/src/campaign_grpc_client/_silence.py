"""How long a watch waits for the server's next message before it takes the stream for dead.

A server sends something at least every heartbeat interval, and says how long that is on its
SNAPSHOT_END and HEARTBEAT messages. A paused server, or a connection a NAT or a firewall
forgot, sends no RST and no FIN: the call would wait for ever, so the watch cancels it after
a few intervals without any message and resumes as after UNAVAILABLE.
"""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import grpc

# Intervals without a message after which the stream is dead, as the README tells subscribers.
SILENT_INTERVALS = 3
# The server's default heartbeat interval, assumed until a stream announces its own.
ASSUMED_HEARTBEAT_INTERVAL = 10.0


class Watchdog:
    """Cancels the blocking call it was armed for once its deadline passes.

    The blocking iterator of a grpc stream has no timeout of its own. One thread per watch,
    started on the first arm(), sleeps until the deadline; arm() and disarm() only move it,
    so that a busy stream costs a lock per message, not a timer thread.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._call: Any = None
        self._deadline: float | None = None
        self._cancelled: Any = None
        self._stopped = False
        self._thread: threading.Thread | None = None

    def arm(self, call: Any, bound: float | None) -> None:
        """call is cancelled unless disarm() comes within bound seconds (None: never)."""
        if bound is None:
            return
        with self._cond:
            self._call, self._deadline = call, time.monotonic() + bound
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="campaign-watch-silence", daemon=True
                )
                self._thread.start()
            self._cond.notify()

    def read(self, call: Any, bound: float | None) -> Any:
        """call's next message, None at its end; TimeoutError once bound seconds passed first."""
        self.arm(call, bound)
        try:
            return next(call)
        except StopIteration:
            return None
        except grpc.RpcError as exc:
            if self.cancelled(call):
                raise TimeoutError(f"no message for {bound} s") from exc
            raise
        finally:
            self.disarm()

    def disarm(self) -> None:
        with self._cond:
            self._call, self._deadline = None, None

    def cancelled(self, call: Any) -> bool:
        """Whether call ended because this watchdog cancelled it."""
        with self._cond:
            return self._cancelled is call

    def stop(self) -> None:
        with self._cond:
            self._stopped = True
            self._call, self._deadline = None, None
            self._cond.notify()

    def _run(self) -> None:
        while (call := self._expired()) is not None:
            call.cancel()

    def _expired(self) -> Any:
        """Waits for the deadline to pass: the call it was armed for; None once stopped."""
        with self._cond:
            while not self._stopped:
                if self._deadline is None:
                    self._cond.wait()
                elif (left := self._deadline - time.monotonic()) > 0:
                    self._cond.wait(left)
                else:
                    self._cancelled = call = self._call
                    self._call, self._deadline = None, None
                    return call
            return None


class AsyncWatchdog:
    """Watchdog's asyncio twin: asyncio.timeout bounds each read, so no thread is needed."""

    async def read(self, call: Any, bound: float | None) -> Any:
        """call's next message, None at its end; TimeoutError once bound seconds passed first."""
        async with asyncio.timeout(bound):
            message = await call.read()
        return None if message is grpc.aio.EOF else message

    def stop(self) -> None:
        """Nothing to stop: each timeout ends with its read."""
