"""watch(): a WatchStatus stream that reconnects by itself and delivers each change once.

It keeps the last revision it delivered (every revision the server sends is a point to resume
from: a snapshot item, a snapshot's end, a change or a heartbeat) and, after UNAVAILABLE or
RESOURCE_EXHAUSTED, a lost connection or three heartbeat intervals without any message (a
server paused, a connection a NAT forgot: see _silence), asks again with after_revision set
to it: the server replays the rest from its durable log, a snapshot cut half-way included.
When the server's log does not hold that revision (OUT_OF_RANGE), it starts again from a
snapshot, announced by a SnapshotReset.

Resume is that bookkeeping; the streams that use it are AsyncWatch (_async/watch.py) and
Watch, generated from it into _sync/watch.py.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TypeAlias

from ._silence import ASSUMED_HEARTBEAT_INTERVAL, SILENT_INTERVALS
from .exceptions import CampaignServiceError, OutOfRange, ResourceExhausted, Unavailable
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
