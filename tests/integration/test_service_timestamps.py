"""Timestamps from the real server: unique, increasing, disjoint ranges, never regressing."""

from __future__ import annotations

import itertools
import json
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from hlc_oracle import Timestamp, TimestampRange
from hlc_oracle.client import OracleClient, OracleNotServingError, RetryPolicy

from tests.support.oracle_process import OracleProcess


def test_many_threads_get_unique_increasing_timestamps(oracle: OracleProcess) -> None:
    threads, per_thread = 8, 250
    with OracleClient(oracle.target) as client:

        def work(_: int) -> list[Timestamp]:
            return [client.get_timestamp() for _ in range(per_thread)]

        with ThreadPoolExecutor(threads) as pool:
            results = list(pool.map(work, range(threads)))
        # Concurrent callers were merged: fewer stream messages than calls.
        assert client.batches < threads * per_thread
    for stamps in results:
        assert all(a < b for a, b in itertools.pairwise(stamps))
    everything = [ts for stamps in results for ts in stamps]
    assert len(set(everything)) == threads * per_thread


def test_ranges_do_not_overlap(oracle: OracleProcess) -> None:
    with OracleClient(oracle.target) as client:

        def work(seed: int) -> list[TimestampRange]:
            return [client.get_timestamps(1 + (seed * 7919 + i * 104729) % 5000) for i in range(40)]

        with ThreadPoolExecutor(4) as pool:
            ranges = [r for batch in pool.map(work, range(4)) for r in batch]
        singles = [client.get_timestamp() for _ in range(20)]
    spans = sorted(
        [(r.first.to_int(), r.last.to_int()) for r in ranges]
        + [(t.to_int(), t.to_int()) for t in singles]
    )
    for (_, last), (first, _) in itertools.pairwise(spans):
        assert last < first
    assert all(len(r) == r.last.to_int() - r.first.to_int() + 1 for r in ranges)


def test_observe_moves_the_oracle_past_the_remote(oracle: OracleProcess) -> None:
    with OracleClient(oracle.target) as client:
        before = client.get_timestamp()
        remote = Timestamp(before.physical + 100_000, 17, 9)  # 100 ms ahead: within max offset
        observed = client.observe(remote)
        after = client.get_timestamp()
    assert observed > remote
    assert after > observed
    assert observed.node == before.node


def test_status_reports_the_node(oracle: OracleProcess) -> None:
    with OracleClient(oracle.target) as client:
        issued = client.get_timestamp()
        status = client.status()
    assert status.serving and status.not_serving_reason == ""
    assert status.role == "standalone"
    assert status.last_timestamp >= issued
    assert status.persisted_window_us > status.last_timestamp.physical
    assert status.max_offset_us == 500_000
    assert status.uptime_seconds > 0
    assert status.version == "0.1.0"
    assert status.max_count == 1_000_000


def _hammer(target: str, stop: threading.Event, seen: list[int]) -> None:
    """Takes timestamps until ``stop`` or until the server dies; records the largest."""
    with OracleClient(target, timeout=2.0) as client:
        deadline = time.monotonic() + 20
        while not stop.is_set() and time.monotonic() < deadline:
            try:
                seen.append(client.get_timestamps(1000).last.to_int())
            except Exception:
                return


def test_kill_9_under_load_and_restart_never_regresses(
    start_oracle: Callable[..., OracleProcess],
) -> None:
    server = start_oracle()
    for _ in range(3):
        stop = threading.Event()
        seen: list[int] = []
        workers = [
            threading.Thread(target=_hammer, args=(server.target, stop, seen)) for _ in range(3)
        ]
        for worker in workers:
            worker.start()
        time.sleep(0.5)
        server.kill()  # mid-load: some answers may be lost, none may be repeated
        stop.set()
        for worker in workers:
            worker.join(timeout=30)
        assert seen, server.log_text()
        server.start()
        with OracleClient(server.target) as client:
            assert client.get_timestamp().to_int() > max(seen)
            assert client.get_timestamps(10).first.to_int() > max(seen)


def test_restart_after_the_clock_stepped_back_waits_out_the_saved_limit(
    start_oracle: Callable[..., OracleProcess], tmp_path: Path
) -> None:
    # A data dir whose saved window is an hour ahead of this machine's clock: as if the node had
    # run with a clock an hour fast that was then stepped back. Serving above the saved limit would
    # hand out timestamps an hour ahead, which every HLC peer refuses: the node waits instead.
    data_dir = tmp_path / "stepped-back"
    data_dir.mkdir()
    future = int(time.time() * 1e6) + 3_600_000_000
    (data_dir / "timestamp-window").write_text(
        json.dumps({"format": 1, "limit_physical_us": future})
    )
    server = start_oracle(data_dir=data_dir, wait_healthy=False)
    with OracleClient(server.target, retry=RetryPolicy(attempts=1)) as client:
        status = client.status()
        with pytest.raises(OracleNotServingError, match=r"hlc-bound: the saved timestamp limit"):
            client.get_timestamp()
    assert not status.serving
    assert "within max_offset/2 (0.250 s)" in status.not_serving_reason
    assert status.persisted_window_us > future
    # Nothing regresses meanwhile: a graceful stop keeps a limit at or above the saved one.
    assert server.stop() == 0
    saved = json.loads((data_dir / "timestamp-window").read_text())["limit_physical_us"]
    assert saved >= future
