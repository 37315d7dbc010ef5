"""watch(): a WatchStatus stream that reconnects by itself and delivers each change once.

It keeps the last revision it delivered (every revision the server sends is a point to resume
from: a snapshot item, a snapshot's end, a change or a heartbeat) and, after UNAVAILABLE or
RESOURCE_EXHAUSTED, a lost connection or three heartbeat intervals without any message (a
server paused, a connection a NAT forgot: see _silence), asks again with after_revision set
to it: the server replays the rest from its durable log, a snapshot cut half-way included.
When the server's log does not hold that revision (OUT_OF_RANGE), it starts again from a
snapshot, announced by a SnapshotReset.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import AsyncGenerator, Generator
from dataclasses import dataclass
from types import TracebackType
from typing import Any, TypeAlias

import grpc

from ._channel import Metadata
from ._retry import Retry
from ._silence import ASSUMED_HEARTBEAT_INTERVAL, SILENT_INTERVALS, Watchdog
from .exceptions import (
    CampaignServiceError,
    OutOfRange,
    ResourceExhausted,
    Unavailable,
    from_grpc_error,
)
from .v1 import campaign_pb2 as pb

log = logging.getLogger("campaign_grpc_client")

W = pb.WatchStatusResponse


@dataclass(frozen=True, slots=True)
class SnapshotReset:
    """The watch starts again from a snapshot: drop the state built from earlier messages.

    KIND_SNAPSHOT messages, a KIND_SNAPSHOT_END and changes follow, as on a new watch.
    reason is REVISION_OUT_OF_RANGE: the server's log does not hold revision (older than its
    retention, a new database, or a log that forked from the one revision was received from:
    a standby promoted, a backup restored).
    """

    reason: str
    revision: int


WatchItem: TypeAlias = "pb.WatchStatusResponse | SnapshotReset"


class Resume:
    """Where a watch stands; what to deliver of each message, what to do after each error."""

    def __init__(
        self,
        customer_id: str,
        campaign_id: str,
        after_revision: int,
        heartbeats: bool,
        view: pb.WatchView.ValueType = pb.WATCH_VIEW_STATUS,
        timeline: str = "",
        silent_intervals: int | None = SILENT_INTERVALS,
    ) -> None:
        if silent_intervals is not None and silent_intervals < 1:
            raise ValueError("silent_intervals is a number of intervals, at least 1, or None")
        self._customer_id = customer_id
        self._campaign_id = campaign_id
        self._heartbeats = heartbeats
        self._view = view
        # Every message up to revision has been delivered; timeline is the log's timeline
        # that revision belongs to, passed back with it so that a server on a log that
        # forked since refuses it rather than answer from other changes.
        self.revision = after_revision
        self.timeline = timeline
        self._silent_intervals = silent_intervals
        # Kept across reconnects: a call to a server that stays silent from the start (one
        # still paused) is given up on by the interval the previous stream announced.
        self._heartbeat_interval = ASSUMED_HEARTBEAT_INTERVAL

    def request(self) -> pb.WatchStatusRequest:
        return pb.WatchStatusRequest(
            customer_id=self._customer_id,
            campaign_id=self._campaign_id,
            after_revision=self.revision,
            view=self._view,
            timeline=self.timeline if self.revision else "",
        )

    def accept(self, m: pb.WatchStatusResponse) -> pb.WatchStatusResponse | None:
        """The message to deliver, or None for a duplicate or an unwanted heartbeat."""
        if m.HasField("heartbeat_interval"):
            interval = m.heartbeat_interval.ToTimedelta().total_seconds()
            if interval > 0:
                self._heartbeat_interval = interval
        if m.kind in (W.KIND_SNAPSHOT, W.KIND_CHANGE):
            if m.revision <= self.revision:
                return None
            self.revision, self.timeline = m.revision, m.timeline
        elif m.kind in (W.KIND_SNAPSHOT_END, W.KIND_HEARTBEAT):
            # At the same revision too: a log that forked after it names it in its timeline.
            if m.revision >= self.revision:
                self.revision, self.timeline = m.revision, m.timeline
            if m.kind == W.KIND_HEARTBEAT and not self._heartbeats:
                return None
        return m

    def silence(self) -> float | None:
        """Seconds without a message after which the stream is dead; None: never."""
        if self._silent_intervals is None:
            return None
        return self._silent_intervals * self._heartbeat_interval

    def silent(self, bound: float) -> Unavailable:
        """The error a stream silent for bound seconds ends with: resumed as UNAVAILABLE."""
        log.warning("watch: no message for %.1f s; taking the connection for dead", bound)
        return Unavailable(f"no message from the server for {bound:.1f} s")

    def after(self, error: CampaignServiceError) -> SnapshotReset | None:
        """Before reconnecting: a reset to deliver first, if any. Raises a final error."""
        if isinstance(error, OutOfRange):
            reset = SnapshotReset("REVISION_OUT_OF_RANGE", self.revision)
        elif not isinstance(error, Unavailable | ResourceExhausted):
            raise error
        else:
            return None
        log.warning("watch: %s; starting again from a snapshot", error)
        self.revision, self.timeline = 0, ""
        return reset


def _ended() -> Unavailable:
    return Unavailable("the server ended the stream")


class Watch:
    """The sync watch: iterate it; close() (or leave its with block) to stop it.

    close() may be called from another thread; the iteration then ends.
    """

    def __init__(
        self, stub: Any, resume: Resume, retry: Retry, metadata: Metadata | None = None
    ) -> None:
        self._stub = stub
        self._resume = resume
        self._retry = retry
        self._metadata = metadata
        self._call: Any = None
        self._closed = threading.Event()
        self._items = self._run()

    @property
    def revision(self) -> int:
        """Every change up to this revision has been delivered: resume after it."""
        return self._resume.revision

    @property
    def timeline(self) -> str:
        """The log's timeline of revision: pass both to a later watch()."""
        return self._resume.timeline

    def __iter__(self) -> Watch:
        return self

    def __next__(self) -> WatchItem:
        return next(self._items)

    def close(self) -> None:
        self._closed.set()
        if self._call is not None:
            self._call.cancel()
        with contextlib.suppress(ValueError):  # iterating on another thread: it ends by itself
            self._items.close()

    def __enter__(self) -> Watch:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def _run(self) -> Generator[WatchItem, None, None]:
        watchdog = Watchdog()
        try:
            yield from self._follow(watchdog)
        finally:
            watchdog.stop()

    def _follow(self, watchdog: Watchdog) -> Generator[WatchItem, None, None]:
        delays = None
        failures = 0
        while not self._closed.is_set():
            self._call = call = self._stub.WatchStatus(
                self._resume.request(), metadata=self._metadata
            )
            if self._closed.is_set():  # close() ran between the check and the call
                call.cancel()
                return
            error: CampaignServiceError = _ended()
            messages = iter(call)
            try:
                while True:
                    # Only the wait for the server counts, not the caller's time with an item.
                    bound = self._resume.silence()
                    watchdog.arm(call, bound)
                    try:
                        message = next(messages)
                    except StopIteration:
                        break
                    finally:
                        watchdog.disarm()
                    delays, failures = None, 0
                    item = self._resume.accept(message)
                    if item is not None:
                        yield item
            except grpc.RpcError as exc:
                if self._closed.is_set():
                    return
                if bound is not None and watchdog.cancelled(call):
                    error = self._resume.silent(bound)
                else:
                    error = from_grpc_error(exc)
            finally:
                call.cancel()
            reset = self._resume.after(error)
            if reset is not None:
                yield reset
                continue
            failures += 1
            if self._retry.attempts is not None and failures >= self._retry.attempts:
                raise error
            delays = delays or self._retry.delays()
            delay = next(delays)
            log.info("watch: %s; reconnecting in %.2f s", error, delay)
            if self._retry.on_error is not None:
                self._retry.on_error(error)
            if self._closed.wait(delay):
                return


class AsyncWatch:
    """The asyncio watch: iterate it with async for; aclose() (or its async with) stops it."""

    def __init__(
        self, stub: Any, resume: Resume, retry: Retry, metadata: Metadata | None = None
    ) -> None:
        self._stub = stub
        self._resume = resume
        self._retry = retry
        self._metadata = metadata
        self._call: Any = None
        self._closed = False
        self._items = self._run()

    @property
    def revision(self) -> int:
        """Every change up to this revision has been delivered: resume after it."""
        return self._resume.revision

    @property
    def timeline(self) -> str:
        """The log's timeline of revision: pass both to a later watch()."""
        return self._resume.timeline

    def __aiter__(self) -> AsyncWatch:
        return self

    async def __anext__(self) -> WatchItem:
        return await anext(self._items)

    async def aclose(self) -> None:
        self._closed = True
        if self._call is not None:
            self._call.cancel()
        with contextlib.suppress(RuntimeError):  # iterating in another task: it ends by itself
            await self._items.aclose()

    async def __aenter__(self) -> AsyncWatch:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def _run(self) -> AsyncGenerator[WatchItem, None]:
        delays = None
        failures = 0
        while not self._closed:
            self._call = call = self._stub.WatchStatus(
                self._resume.request(), metadata=self._metadata
            )
            error: CampaignServiceError = _ended()
            try:
                while True:
                    # Only the wait for the server counts, not the caller's time with an item.
                    bound = self._resume.silence()
                    async with asyncio.timeout(bound):
                        message = await call.read()
                    if message is grpc.aio.EOF:
                        break
                    delays, failures = None, 0
                    item = self._resume.accept(message)
                    if item is not None:
                        yield item
            except grpc.RpcError as exc:
                if self._closed:
                    return
                error = from_grpc_error(exc)
            except TimeoutError:
                assert bound is not None
                error = self._resume.silent(bound)
            finally:
                call.cancel()
            reset = self._resume.after(error)
            if reset is not None:
                yield reset
                continue
            failures += 1
            if self._retry.attempts is not None and failures >= self._retry.attempts:
                raise error
            delays = delays or self._retry.delays()
            delay = next(delays)
            log.info("watch: %s; reconnecting in %.2f s", error, delay)
            if self._retry.on_error is not None:
                self._retry.on_error(error)
            await asyncio.sleep(delay)
