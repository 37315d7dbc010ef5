# Generated from clients/python/src/campaign_grpc_client/_async/retries.py
# by tools/unasync.py (`make unasync`): do not edit. Edit the asyncio source and run
# it again; `make lint` checks that this file is current.
"""One call's tries: invoke it until it succeeds or fails for good, within its deadline."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

import grpc

from .._retry import Attempts, Retry
from ..exceptions import from_grpc_error

T = TypeVar("T")


def call(
    method: str,
    invoke: Callable[[float | None], T],
    *,
    timeout: float | None,
    retry: Retry | None,
    safe: bool,
) -> T:
    """invoke(timeout) until it succeeds or fails for good; raises CampaignServiceError."""
    attempts = Attempts(timeout, retry, safe)
    while True:
        try:
            return invoke(attempts.remaining())
        except grpc.RpcError as exc:
            error = from_grpc_error(exc)
            delay = attempts.delay_after(error, method)
            if delay is None:
                raise error from exc
        time.sleep(delay)
