"""What a watch stream sends, before it becomes a message: its kinds of item."""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass

from ..domain.types import Campaign, CampaignState, Event


class Kind(enum.IntEnum):
    SNAPSHOT = 1
    SNAPSHOT_END = 2
    CHANGE = 3
    HEARTBEAT = 4


@dataclass(slots=True, frozen=True)
class Item:
    kind: Kind
    revision: int
    # A snapshot item: the campaign's state (the status view) or the whole campaign (full).
    state: CampaignState | None = None
    campaign: Campaign | None = None
    # A change; with full, sent with the campaign as of its revision (event.campaign).
    event: Event | None = None
    full: bool = False
    # On SNAPSHOT_END and HEARTBEAT: seconds between heartbeats, so that a client can tell a
    # quiet stream from a dead one.
    heartbeat_interval: float = 0.0
    # The item as the stream sends it, made once for every stream that receives it (the
    # hub's encode); None for what only one stream sends, a snapshot or a replay.
    payload: bytes | None = None
    # The log's timeline its revision belongs to (see storage.timelines); "" when unknown.
    timeline: str = ""


Encode = Callable[[Item], bytes]
