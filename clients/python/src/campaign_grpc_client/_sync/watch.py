# Generated from clients/python/src/campaign_grpc_client/_async/watch.py
# by tools/unasync.py (`make unasync`): do not edit. Edit the asyncio source and run
# it again; `make lint` checks that this file is current.
"""Watch: the blocking stream of watch(), which reconnects by itself (see _watch)."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Generator
from types import TracebackType
from typing import Any

import grpc

from .._backends import Event
from .._channel import Metadata
from .._retry import Retry
from .._silence import Watchdog
from .._watch import Resume, WatchItem
from ..exceptions import CampaignServiceError, Unavailable, from_grpc_error

log = logging.getLogger("campaign_grpc_client")


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
        self._closed = Event()
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
        # One generator, not a loop around another: closing it cancels the call at once.
        watchdog = Watchdog()
        try:
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
                try:
                    while True:
                        # Only the wait for the server counts, not the caller's time with an item.
                        bound = self._resume.silence()
                        message = watchdog.read(call, bound)
                        if message is None:
                            break
                        delays, failures = None, 0
                        item = self._resume.accept(message)
                        if item is not None:
                            yield item
                except grpc.RpcError as exc:
                    if self._closed.is_set():
                        return
                    error = from_grpc_error(exc)
                except TimeoutError:
                    if self._closed.is_set():
                        return
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
                if self._closed.wait(delay):
                    return
        finally:
            watchdog.stop()
