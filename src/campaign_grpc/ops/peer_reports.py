"""Calls the server refused or dropped before their handler ran, and connections it closed:
counted, and logged once per peer and reason a minute, with the peer's address.

A flood is thousands of refusals a second: one log line each would be a flood of its own (and
a blocking one), none would leave an operator blind. One line per peer and reason per
interval says who and what; the counters say how much.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable

log = logging.getLogger(__name__)

# Peers remembered for the rate limit; past it the longest-remembered is forgotten, so that a
# scan from many addresses costs a bounded amount of memory (and a few more log lines).
MAX_PEERS = 10_000


def peer_host(peer: str) -> str:
    """The address part of grpc's peer string: ipv4:1.2.3.4:5678 -> 1.2.3.4, ipv6:[::1]:5 -> ::1."""
    kind, _, rest = peer.partition(":")
    if kind not in ("ipv4", "ipv6"):
        return peer
    host = rest.rpartition(":")[0] or rest
    return host.removeprefix("[").removesuffix("]")


class PeerReports:
    def __init__(self, interval: float = 60.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.interval = interval
        self.counts: Counter[tuple[str, str]] = Counter()
        # Each is told (what, reason): what is "refused" (a call) or "closed" (a connection).
        self.listeners: list[Callable[[str, str], None]] = []
        self._clock = clock
        self._logged: dict[tuple[str, str], float] = {}

    def refused(self, reason: str, peer: str, message: str) -> None:
        self._report("refused a call from", "refused", reason, peer, message)

    def closed(self, reason: str, peer: str, message: str) -> None:
        self._report("closed the connection of", "closed", reason, peer, message)

    def _report(self, done: str, what: str, reason: str, peer: str, message: str) -> None:
        self.counts[what, reason] += 1
        for listener in self.listeners:
            listener(what, reason)
        key = (peer_host(peer), reason)
        now = self._clock()
        last = self._logged.get(key)
        if last is not None and now - last < self.interval:
            return
        self._logged.pop(key, None)
        if len(self._logged) >= MAX_PEERS:
            del self._logged[next(iter(self._logged))]
        self._logged[key] = now
        log.warning(
            "%s %s: %s (%s); further ones from this address are counted, not logged, for %g s",
            done,
            peer,
            reason,
            message,
            self.interval,
            extra={"peer": peer, "reason": reason},
        )
