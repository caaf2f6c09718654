"""The HLC bound after a crash, standalone: a node restarted at once after a kill -9 hands out
nothing more than max_offset/2 ahead of its physical clock, so a peer Clock with the default max
offset accepts its first timestamps (the cluster's failover tests check the same after a
failover). And the small window that bound requires never turns into refused commits: a commit
that meets the ceiling waits for the window's next save."""

from __future__ import annotations

import asyncio
import signal
import threading
import time
from collections.abc import Callable, Coroutine
from typing import Any

import pytest
from hlc_oracle import Clock, Committed, Timestamp, Transaction
from hlc_oracle.client import (
    AsyncOracleClient,
    OracleClient,
    OracleError,
    OracleNotServingError,
    RetryPolicy,
)

from tests.support.oracle_process import OracleProcess

MAX_OFFSET_US = 500_000
BOUND_US = MAX_OFFSET_US // 2
COMMITS_PER_CALLER = 300


def hand_out_for(target: str, seconds: float) -> Timestamp:
    """Timestamps back to back for ``seconds``; the last one."""
    deadline = time.monotonic() + seconds
    with OracleClient(target) as client:
        last = client.get_timestamp()
        while time.monotonic() < deadline:
            last = client.get_timestamps(100).last
    return last


def first_after_restart(server: OracleProcess) -> tuple[Timestamp, int]:
    """The first timestamp the restarted node hands out, and the wall clock (us) when asked."""
    with OracleClient(server.target) as client:
        sent_us = time.time_ns() // 1000
        return client.get_timestamp(), sent_us


def test_restart_right_after_kill_stays_within_the_bound(
    start_oracle: Callable[..., OracleProcess],
) -> None:
    server = start_oracle()
    before = hand_out_for(server.target, 0.5)
    server.kill()
    server.start()  # at once: the saved window still runs ahead of the clock
    first, sent_us = first_after_restart(server)
    assert first > before
    assert first.physical - sent_us <= BOUND_US
    # What a new user tried: a peer with the default max offset takes it without ClockSkewError.
    Clock(9).update(first)


def test_a_window_larger_than_the_bound_is_waited_out(
    start_oracle: Callable[..., OracleProcess],
) -> None:
    server = start_oracle("--set", "window.size_ms=3000")
    before = hand_out_for(server.target, 0.3)
    server.kill()
    server.wait_healthy = False
    server.start()
    with OracleClient(server.target, retry=RetryPolicy(attempts=1)) as client:
        status = client.status()
        if not status.serving:
            assert "hlc-bound: the saved timestamp limit is" in status.not_serving_reason
            with pytest.raises(OracleNotServingError, match="hlc-bound"):
                client.get_timestamp()
    server.wait_for_health(time.monotonic() + 10)
    first, sent_us = first_after_restart(server)
    assert first > before
    assert first.physical - sent_us <= BOUND_US
    Clock(9).update(first)


def pause_repeatedly(server: OracleProcess, stop: threading.Event) -> None:
    """SIGSTOP for 20 ms every 30 ms, until ``stop`` (at most 2,000 times): the pauses of a loaded
    machine, longer than a 10 ms window, at random points between a raised ceiling and the batch
    retried under it."""
    for _ in range(2000):
        if stop.wait(0.01):
            return
        server.signal(signal.SIGSTOP)
        time.sleep(0.02)
        server.signal(signal.SIGCONT)


def run_while_pausing(server: OracleProcess, load: Callable[[], Coroutine[Any, Any, None]]) -> None:
    """``asyncio.run(load())`` while :func:`pause_repeatedly` pauses ``server``; resumed after."""
    stop = threading.Event()
    pauser = threading.Thread(target=pause_repeatedly, args=(server, stop))
    pauser.start()
    try:
        asyncio.run(load())
    finally:
        stop.set()
        pauser.join()
        server.signal(signal.SIGCONT)


def test_commits_at_the_ceiling_wait_for_the_window_under_pauses(
    start_oracle: Callable[..., OracleProcess],
) -> None:
    """With a 10 ms window and the process paused past it again and again, every commit is
    decided: none is answered with the ceiling's refusal while the window can be saved."""
    server = start_oracle("--set", "window.size_ms=10", "--set", "window.check_interval_ms=5")
    committed: list[Committed] = []
    errors: list[OracleError] = []

    async def load() -> None:
        async with AsyncOracleClient(server.target, timeout=30) as client:
            start = await client.get_timestamp()

            async def caller(worker: int) -> None:
                for sequence in range(COMMITS_PER_CALLER):
                    txn_id = (worker << 32) | sequence
                    key = b"%d/%d" % (worker, sequence)
                    try:
                        outcome = await client.commit(Transaction(txn_id, start, [], [key]))
                    except OracleError as err:
                        errors.append(err)
                        continue
                    assert isinstance(outcome, Committed), outcome
                    committed.append(outcome)

            await asyncio.gather(*(caller(worker) for worker in range(1, 65)))

    run_while_pausing(server, load)
    assert not errors, [(e.code, e.details) for e in errors[:5]]
    assert len(committed) == 64 * COMMITS_PER_CALLER


def test_timestamps_at_the_ceiling_wait_for_the_window_under_pauses(
    start_oracle: Callable[..., OracleProcess],
) -> None:
    """The same for GetTimestamps, with no client retries: no call is refused while the window
    can be saved, and no timestamp is handed out twice."""
    server = start_oracle("--set", "window.size_ms=10", "--set", "window.check_interval_ms=5")
    firsts: list[Timestamp] = []
    errors: list[OracleError] = []

    async def load() -> None:
        async with AsyncOracleClient(
            server.target, timeout=30, retry=RetryPolicy(attempts=1)
        ) as client:

            async def caller() -> None:
                for _ in range(COMMITS_PER_CALLER):
                    try:
                        firsts.append((await client.get_timestamps_unary(10)).first)
                    except OracleError as err:
                        errors.append(err)

            await asyncio.gather(*(caller() for _ in range(16)))

    run_while_pausing(server, load)
    assert not errors, [(e.code, e.details) for e in errors[:5]]
    assert len(set(firsts)) == len(firsts) == 16 * COMMITS_PER_CALLER
