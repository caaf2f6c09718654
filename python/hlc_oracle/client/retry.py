"""How the client retries: :class:`RetryPolicy` and :func:`with_retries`.

A call has one deadline, its timeout, and every attempt runs inside it: no call takes longer
than its timeout, however many attempts it makes. Attempts wait for the channel to be ready
(gRPC's wait-for-ready) instead of failing fast while a node is down, so a call made during an
outage is sent as soon as the node is reachable again (the channel's reconnect cadence is in
:mod:`hlc_oracle.client.channel`). What is retried: ``UNAVAILABLE`` (unreachable, or not serving
for now) and a connection lost mid-call; commits and aborts are retried with the same transaction
id, which is safe because a decided id returns its first decision. Between attempts the client
sleeps a short backoff with jitter.

A commit or abort whose answer was lost in some attempt (:func:`~hlc_oracle.client.errors.
outcome_in_doubt`) and that no later attempt answered ends as
:class:`~hlc_oracle.client.errors.OracleOutcomeUnknownError`; one that was only refused (nothing
decided) ends with the refusal. ``CommitStream`` messages go through the same rule, per
transaction (:mod:`hlc_oracle.client.pending_commits`).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import math
import random
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import TypeVar

import grpc

from hlc_oracle.client.errors import (
    OracleError,
    OracleOutcomeUnknownError,
    OracleTimeoutError,
    OracleUnavailableError,
    error_from_rpc,
    is_retryable,
    no_answer_within,
    outcome_in_doubt,
)

T = TypeVar("T")

#: A pause between attempts is logged at DEBUG (what failed, how long the call sleeps).
log = logging.getLogger("hlc_oracle.client")


@dataclass(frozen=True)
class RetryPolicy:
    """Retries within a call's timeout: at most ``attempts`` tries, sleeping ``initial_backoff_s``
    between the first two, doubling up to ``max_backoff_s``, each sleep with up to 50% random
    jitter. The short cap keeps a node that comes back (or starts serving) answered promptly."""

    attempts: int = 5
    initial_backoff_s: float = 0.02
    max_backoff_s: float = 0.1

    def __post_init__(self) -> None:
        if not isinstance(self.attempts, int) or self.attempts < 1:
            raise ValueError(f"attempts must be an int of at least 1, got {self.attempts!r}")
        if not 0 <= self.initial_backoff_s <= self.max_backoff_s:
            raise ValueError(
                "backoffs must satisfy 0 <= initial_backoff_s <= max_backoff_s, got "
                f"{self.initial_backoff_s} and {self.max_backoff_s}"
            )

    @classmethod
    def until_deadline(cls, timeout: float) -> RetryPolicy:
        """The default for a client of several nodes: as many attempts as fit in ``timeout``, so
        the deadline, not a count, ends a call. Moving between nodes fails fast (a dead node
        refuses at once), and a failover lasts up to the leader's lease TTL (3 s by default),
        far longer than five attempts of 20 to 100 ms."""
        shortest_sleep = cls.initial_backoff_s / 2  # the first backoff with the most jitter
        return cls(attempts=max(cls.attempts, math.ceil(timeout / shortest_sleep) + 1))

    def delays(self) -> Iterator[float]:
        """The sleeps between attempts, made as they are needed: a call that ends at its first
        attempt (the common case) draws none, though :meth:`until_deadline` allows thousands."""
        delay = self.initial_backoff_s
        for _ in range(self.attempts - 1):
            yield delay * (0.5 + random.random() / 2)
            delay = min(delay * 2, self.max_backoff_s)


async def with_retries(
    policy: RetryPolicy,
    call: Callable[[float], Awaitable[T]],
    timeout: float,
    *,
    changes_state: bool = False,
    connected: Callable[[], bool] | None = None,
) -> T:
    """``await call(remaining_seconds)``, retried as the module says, all within ``timeout``.

    gRPC failures become :class:`OracleError`. ``changes_state`` (commit, abort): when an
    attempt's answer was lost (:func:`~hlc_oracle.client.errors.outcome_in_doubt`) and no later
    attempt got one, the error is :class:`OracleOutcomeUnknownError`. ``connected`` tells a node
    that never answered (the channel is not ready at the deadline:
    :class:`OracleUnavailableError`) from one that is reachable but slow
    (:class:`OracleTimeoutError`).
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    lost: OracleError | None = None
    for delay in itertools.chain(policy.delays(), (None,)):
        error: OracleError
        remaining = deadline - loop.time()
        if remaining <= 0:
            error = OracleTimeoutError(grpc.StatusCode.DEADLINE_EXCEEDED, no_answer_within(timeout))
        else:
            try:
                return await call(remaining)
            except grpc.RpcError as err:
                error = error_from_rpc(err)
            except OracleError as err:
                error = err
        if outcome_in_doubt(error):
            lost = error
        if not is_retryable(error) or delay is None or loop.time() + delay >= deadline:
            raise _final_error(error, lost, changes_state, timeout, connected) from None
        if log.isEnabledFor(logging.DEBUG):
            log.debug(
                "retrying after a pause",
                extra={"fields": {"pause_s": round(delay, 4), "error": error.details}},
            )
        await asyncio.sleep(delay)
    raise AssertionError("unreachable")  # pragma: no cover


def _final_error(
    error: OracleError,
    lost: OracleError | None,
    changes_state: bool,
    timeout: float,
    connected: Callable[[], bool] | None,
) -> OracleError:
    gave_up = is_retryable(error) or isinstance(error, OracleTimeoutError)
    if lost is not None and changes_state and gave_up:
        return OracleOutcomeUnknownError(
            grpc.StatusCode.UNAVAILABLE,
            f"{lost.details}; retrying the same transaction id got {no_answer_within(timeout)} "
            f"(last: {error.details}), so its outcome is unknown: resubmit the same transaction "
            "id (a decided id returns its first decision) or ask transaction_status(id)",
        )
    if (
        isinstance(error, OracleTimeoutError)
        and error.refusal is None
        and connected is not None
        and not connected()
    ):
        return OracleUnavailableError(
            grpc.StatusCode.UNAVAILABLE, f"could not connect within {timeout} s"
        )
    return error
