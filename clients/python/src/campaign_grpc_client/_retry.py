"""Retries with jittered exponential backoff, within one deadline.

The loops that use it are _async/retries.py and its generated blocking twin.
"""

from __future__ import annotations

import enum
import logging
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Literal, TypeAlias

from .exceptions import CampaignServiceError, Unavailable

log = logging.getLogger("campaign_grpc_client")

# Each call's deadline in seconds, retries included, unless the client or the call says other.
DEFAULT_TIMEOUT = 10.0


class _Default(enum.Enum):
    DEFAULT = enum.auto()


DEFAULT = _Default.DEFAULT
"""Stands for the client's own setting (timeout, retry) in a call's arguments."""

Default: TypeAlias = Literal[_Default.DEFAULT]


@dataclass(frozen=True)
class Retry:
    """When and how often a call is tried again.

    Only calls that are safe to repeat are retried, and only after UNAVAILABLE. Delay n is
    drawn uniformly from [0, min(maximum, initial * multiplier**n)] ("full jitter"), so that
    clients that failed together do not come back together.
    """

    initial: float = 0.1
    maximum: float = 2.0
    multiplier: float = 2.0
    # Tries in all (a watch: reconnects in a row that fail); None: until the deadline.
    attempts: int | None = None
    # Called with each error that is about to be retried (a watch: each reconnect).
    on_error: Callable[[CampaignServiceError], None] | None = None

    def delays(self) -> Iterator[float]:
        cap = self.initial
        while True:
            yield random.uniform(0.0, cap)
            cap = min(cap * self.multiplier, self.maximum)


DEFAULT_RETRY = Retry()
# A watch reconnects until it is closed, waiting at most 5 s between tries.
WATCH_RETRY = Retry(maximum=5.0)

# The channel's own reconnect backoff (1 s growing to 120 s by default) would keep a call
# failing fast long after a restarted server is back: keep it as short as the retries.
CHANNEL_OPTIONS = [
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 2000),
]


def retryable(error: CampaignServiceError) -> bool:
    return isinstance(error, Unavailable)


class Attempts:
    """The bookkeeping shared by the sync and async loops."""

    def __init__(self, timeout: float | None, retry: Retry | None, safe: bool) -> None:
        self.deadline = None if timeout is None else time.monotonic() + timeout
        self.retry = retry if safe else None
        self._delays = retry.delays() if retry is not None else iter(())
        self.count = 0

    def remaining(self) -> float | None:
        self.count += 1
        return None if self.deadline is None else max(0.0, self.deadline - time.monotonic())

    def delay_after(self, error: CampaignServiceError, method: str) -> float | None:
        """How long to wait before the next try; None when the error is final."""
        retry = self.retry
        if retry is None or not retryable(error):
            return None
        if retry.attempts is not None and self.count >= retry.attempts:
            return None
        delay = next(self._delays)
        if self.deadline is not None and time.monotonic() + delay >= self.deadline:
            return None
        log.info("%s: %s; retry %d in %.2f s", method, error, self.count, delay)
        if retry.on_error is not None:
            retry.on_error(error)
        return delay
