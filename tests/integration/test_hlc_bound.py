"""The HLC bound after a crash, standalone: a node restarted at once after a kill -9 hands out
nothing more than max_offset/2 ahead of its physical clock, so a peer Clock with the default max
offset accepts its first timestamps (the cluster's failover tests check the same after a
failover)."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
from hlc_oracle import Clock, Timestamp
from hlc_oracle.client import OracleClient, OracleNotServingError, RetryPolicy

from tests.integration.oracle_process import OracleProcess

MAX_OFFSET_US = 500_000
BOUND_US = MAX_OFFSET_US // 2


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
