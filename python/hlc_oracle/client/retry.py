"""How the client retries: :class:`RetryPolicy` and :func:`with_retries`.

A policy is attempts and a backoff (exponential, capped, with jitter); ``with_retries`` runs a
call under it, retrying ``UNAVAILABLE`` and turning gRPC failures into :class:`OracleError`.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

import grpc

from hlc_oracle.client.errors import OracleUnavailableError, error_from_rpc

T = TypeVar("T")


@dataclass(frozen=True)
class RetryPolicy:
    """Retries of ``UNAVAILABLE``: ``attempts`` tries in all, sleeping ``initial_backoff_s``,
    doubling up to ``max_backoff_s``, each sleep with up to 50% random jitter."""

    attempts: int = 5
    initial_backoff_s: float = 0.05
    max_backoff_s: float = 1.0

    def delays(self) -> list[float]:
        delay = self.initial_backoff_s
        result = []
        for _ in range(self.attempts - 1):
            result.append(delay * (0.5 + random.random() / 2))
            delay = min(delay * 2, self.max_backoff_s)
        return result


async def with_retries(policy: RetryPolicy, call: Callable[[], Awaitable[T]]) -> T:
    """``await call()``, retried on ``UNAVAILABLE``; gRPC failures become :class:`OracleError`."""
    for delay in [*policy.delays(), None]:
        try:
            return await call()
        except grpc.RpcError as err:
            error = error_from_rpc(err)
        except OracleUnavailableError as err:
            error = err
        if not isinstance(error, OracleUnavailableError) or delay is None:
            raise error
        await asyncio.sleep(delay)
    raise AssertionError("unreachable")  # pragma: no cover
