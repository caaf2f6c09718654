"""RateLimitedLog: the first record at once, repeats at most once per interval with the count
left out, and at once again after the condition cleared."""

from __future__ import annotations

import logging

import pytest
from hlc_oracle.cluster.reachability import EtcdReachability
from hlc_oracle.log_rate import RateLimitedLog


class Tick:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_repeats_are_limited_in_rate_and_counted(caplog: pytest.LogCaptureFixture) -> None:
    tick = Tick()
    limited = RateLimitedLog(logging.getLogger("hlc_oracle.test"), interval_s=10, monotonic=tick)
    with caplog.at_level(logging.WARNING, logger="hlc_oracle.test"):
        # (seconds from the start, logged?): one per 10 s, whatever the rate of occurrences.
        table = [(0, True), (0.5, False), (1, False), (9.9, False), (10, True), (15, False)]
        for at, logged in table:
            tick.now = 100.0 + at
            assert limited.warning("keepalive", "lease keepalive failed", {"n": at}) == logged
        # Another kind has its own limit.
        assert limited.warning("election", "etcd call failed", {})
        assert not limited.clear("never")
        # The condition clears: the next occurrence goes out at once, with no count.
        assert limited.clear("keepalive")
        tick.now = 116.0
        assert limited.warning("keepalive", "lease keepalive failed", {"n": 16})
    records = [r for r in caplog.records if r.getMessage() == "lease keepalive failed"]
    assert [r.fields for r in records] == [  # type: ignore[attr-defined]
        {"n": 0},
        {"n": 10, "repeated": 3},
        {"n": 16},
    ]


def test_etcd_reachability_says_lost_once_and_back_once(caplog: pytest.LogCaptureFixture) -> None:
    tick = Tick()
    reach = EtcdReachability("127.0.0.1:2379", monotonic=tick)
    with caplog.at_level(logging.INFO, logger="hlc_oracle.cluster.etcd"):
        reach.answered()  # reachable all along: nothing to say
        for call in ("txn", "lease keepalive", "txn"):
            reach.failed(call, "DEADLINE_EXCEEDED")
        tick.now += 4.5
        reach.answered()
        reach.answered()
    assert [(r.levelname, r.getMessage()) for r in caplog.records] == [
        ("WARNING", "etcd unreachable"),
        ("INFO", "etcd reachable again"),
    ]
    assert caplog.records[0].fields["call"] == "txn"  # type: ignore[attr-defined]
    assert caplog.records[1].fields == {  # type: ignore[attr-defined]
        "etcd": "127.0.0.1:2379",
        "away_s": 4.5,
        "failed_calls": 3,
    }
