"""The client's pauses between attempts are logged at DEBUG (what failed, how long it sleeps)."""

from __future__ import annotations

import asyncio
import logging

import grpc
import pytest
from hlc_oracle.client import RetryPolicy, with_retries
from hlc_oracle.client.errors import OracleUnavailableError


def test_each_pause_between_attempts_is_logged_at_debug(caplog: pytest.LogCaptureFixture) -> None:
    failures = iter(["node a refused", "node b refused"])

    async def call(remaining: float) -> str:
        failure = next(failures, None)
        if failure is not None:
            raise OracleUnavailableError(grpc.StatusCode.UNAVAILABLE, failure)
        return "answered"

    policy = RetryPolicy(attempts=3, initial_backoff_s=0.001, max_backoff_s=0.002)
    with caplog.at_level(logging.DEBUG, logger="hlc_oracle.client"):
        assert asyncio.run(with_retries(policy, call, timeout=5.0)) == "answered"
    pauses = [r for r in caplog.records if r.getMessage() == "retrying after a pause"]
    assert [r.fields["error"] for r in pauses] == ["node a refused", "node b refused"]  # type: ignore[attr-defined]
    assert all(0 < r.fields["pause_s"] <= 0.002 for r in pauses)  # type: ignore[attr-defined]


def test_nothing_is_logged_without_debug(caplog: pytest.LogCaptureFixture) -> None:
    failures = iter(["refused"])

    async def call(remaining: float) -> str:
        if next(failures, None) is not None:
            raise OracleUnavailableError(grpc.StatusCode.UNAVAILABLE, "refused")
        return "answered"

    policy = RetryPolicy(attempts=2, initial_backoff_s=0.001, max_backoff_s=0.001)
    with caplog.at_level(logging.INFO, logger="hlc_oracle.client"):
        assert asyncio.run(with_retries(policy, call, timeout=5.0)) == "answered"
    assert not [r for r in caplog.records if r.name == "hlc_oracle.client"]
