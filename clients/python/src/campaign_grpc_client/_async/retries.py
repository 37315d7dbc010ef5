"""One call's tries: invoke it until it succeeds or fails for good, within its deadline."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

import grpc

from .._retry import Attempts, Retry
from ..exceptions import from_grpc_error

T = TypeVar("T")


async def call_async(
    method: str,
    invoke: Callable[[float | None], Awaitable[T]],
    *,
    timeout: float | None,
    retry: Retry | None,
    safe: bool,
) -> T:
    """invoke(timeout) until it succeeds or fails for good; raises CampaignServiceError."""
    attempts = Attempts(timeout, retry, safe)
    while True:
        try:
            return await invoke(attempts.remaining())
        except grpc.RpcError as exc:
            error = from_grpc_error(exc)
            delay = attempts.delay_after(error, method)
            if delay is None:
                raise error from exc
        await asyncio.sleep(delay)
