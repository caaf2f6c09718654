"""The client library against the real server: retries on UNAVAILABLE, timeouts, async use."""

from __future__ import annotations

import asyncio
import signal
import threading
import time
from collections.abc import Callable

import grpc
import pytest
from hlc_oracle import Timestamp
from hlc_oracle.client import (
    AsyncOracleClient,
    OracleClient,
    OracleTimeoutError,
    OracleUnavailableError,
    RetryPolicy,
)
from hlc_oracle.local_cluster import free_port

from tests.support.oracle_process import OracleProcess
from tests.support.waiting import wait_for


def test_retries_with_backoff_until_the_server_is_up(
    start_oracle: Callable[..., OracleProcess],
) -> None:
    port = free_port()
    patient = RetryPolicy(attempts=30, initial_backoff_s=0.05, max_backoff_s=0.4)
    results: list[object] = []
    # The timeout bounds the whole call: within it the call waits for the server to come up.
    with OracleClient(f"127.0.0.1:{port}", retry=patient, timeout=20) as client:
        caller = threading.Thread(target=lambda: results.append(client.get_timestamps(5)))
        caller.start()
        time.sleep(0.5)  # the first attempts find nothing listening
        assert not results
        start_oracle("--listen", f"127.0.0.1:{port}")
        caller.join(timeout=30)
        assert len(results) == 1 and len(results[0]) == 5  # type: ignore[arg-type]
        assert isinstance(client.get_timestamp(), Timestamp)
    hasty = RetryPolicy(attempts=2, initial_backoff_s=0.01)
    with OracleClient(f"127.0.0.1:{free_port()}", retry=hasty, timeout=1) as nobody:
        started = time.monotonic()
        with pytest.raises(OracleUnavailableError):
            nobody.get_timestamp()
        assert time.monotonic() - started < 10


def test_timeouts_on_a_stalled_server(start_oracle: Callable[..., OracleProcess]) -> None:
    server = start_oracle()
    with OracleClient(server.target, timeout=0.5, retry=RetryPolicy(attempts=1)) as client:
        before = client.get_timestamp()
        server.signal(signal.SIGSTOP)
        try:
            with pytest.raises(OracleTimeoutError):
                client.get_timestamps_unary(1)
            with pytest.raises(OracleTimeoutError):
                client.get_timestamp()  # the merged stream path has its own timeout
            with pytest.raises(OracleTimeoutError):
                client.get_timestamps(3)
        finally:
            server.signal(signal.SIGCONT)
        # After the stall the client recovers (a new stream) and time still moves forward. The
        # resumed server may first need longer than the client's 0.5 s on a loaded host: the
        # outcome asserted is that the same client gets a timestamp again, within a bounded wait.
        after: list[Timestamp] = []

        def answered() -> bool:
            try:
                after.append(client.get_timestamp())
            except OracleTimeoutError:
                return False
            return True

        wait_for(answered, 30, pause_s=0.1)
        assert after[0] > before


def test_a_call_queued_behind_a_stalled_fetch_fails_within_its_own_timeout(
    start_oracle: Callable[..., OracleProcess],
) -> None:
    """The wait behind the merged fetch in flight counts toward a call's timeout: with the
    server stopped (SIGSTOP) under a fetch made with a long timeout, a call queued behind it
    with a short timeout fails as a timed-out call does (``DEADLINE_EXCEEDED``, never sent) well
    before the fetch's own deadline; the fetch is answered once the server resumes."""
    server = start_oracle()
    fetch_timeout_s = 30.0

    async def scenario() -> None:
        async with AsyncOracleClient(server.target, timeout=fetch_timeout_s) as client:
            before = await client.get_timestamp()
            server.signal(signal.SIGSTOP)
            try:
                in_flight = asyncio.ensure_future(client.get_timestamp())
                for _ in range(2000):
                    if client.batches == 2:
                        break
                    await asyncio.sleep(0.005)
                assert client.batches == 2, "the fetch never went out"
                client.timeout = 0.5  # the queued call's timeout
                began = time.monotonic()
                with pytest.raises(OracleTimeoutError, match="never sent") as raised:
                    await asyncio.wait_for(client.get_timestamp(), fetch_timeout_s)
                took = time.monotonic() - began
                assert raised.value.code is grpc.StatusCode.DEADLINE_EXCEEDED
                assert took < fetch_timeout_s / 3, f"took {took:.2f} s, past its timeout"
                assert client.batches == 2
                assert not in_flight.done()
            finally:
                server.signal(signal.SIGCONT)
            assert await asyncio.wait_for(in_flight, 2 * fetch_timeout_s) > before

    asyncio.run(scenario())


def test_async_client_merges_concurrent_callers(oracle: OracleProcess) -> None:
    async def main() -> tuple[list[Timestamp], int]:
        async with AsyncOracleClient(oracle.target) as client:
            stamps = await asyncio.gather(*(client.get_timestamp() for _ in range(500)))
            observed = await client.observe(stamps[-1])
            assert observed > max(stamps)
            status = await client.status()
            assert status.last_timestamp >= observed
            return list(stamps), client.batches

    stamps, batches = asyncio.run(main())
    assert len(set(stamps)) == 500
    assert stamps == sorted(stamps)  # split back in arrival order
    assert batches <= 3  # 500 callers arriving together: one message (or very few)


def test_client_argument_errors(oracle: OracleProcess) -> None:
    with OracleClient(oracle.target) as client:
        with pytest.raises(TypeError, match="count must be an int"):
            client.get_timestamps("3")  # type: ignore[arg-type]
        with pytest.raises(ValueError, match=r"count must be in 1\.\.2\*\*32-1"):
            client.get_timestamps(2**32)
        with pytest.raises(TypeError, match="remote must be a Timestamp"):
            client.observe(5)  # type: ignore[arg-type]
        with pytest.raises(ValueError, match=r"count must be in 1\.\.2"):
            client.get_timestamps(0)
        assert len(client.get_timestamps(2)) == 2
        assert len(client.get_timestamps_unary(2)) == 2


def test_a_burst_of_calls_on_a_new_connection_is_served(oracle: OracleProcess) -> None:
    # grpcio refuses part of a burst of more than about a thousand calls opened at once on a new
    # connection; the client queues its unary calls (max_concurrent_calls) so all are answered.
    async def main() -> list[object]:
        async with AsyncOracleClient(oracle.target) as client:
            return list(
                await asyncio.gather(
                    *(client.status() for _ in range(3000)), return_exceptions=True
                )
            )

    results = asyncio.run(main())
    assert not [r for r in results if isinstance(r, BaseException)]
