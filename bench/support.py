"""What the benchmarks share, so that every file runs the same loads and takes the same
measurements, and their figures stay comparable:

- a group's members: :func:`bench_for` (the baseline fixture or the plain one);
- the empty grpcio service (``bench/echo_server.py``), the baseline of the service groups and of
  the stream group: :func:`echo_server`;
- same-run comparisons: :func:`timed`, :func:`interleaved_pairs` (``INTERLEAVED_PAIRS`` rounds
  back to back, alternating), :func:`record_median_rate`;
- figures: :func:`percentile`, :func:`record_rate` (a rate and its latencies), :func:`record_gaps`
  (the client-visible gaps of failover rounds), :func:`process_cpu_seconds`, :func:`thread_times`
  (each thread's time on a CPU and waiting for one);
- ``GetTimestamps`` over gRPC: ``GET``, ``ONE``, :func:`aio_channel`, :func:`concurrent_unary`
  (``UNARY_CALLERS`` x ``UNARY_CALLS`` per round in the throughput groups);
- handlers in process, without the transport: :func:`handler_rounds` (``HANDLER_CALLS`` per round),
  :func:`record_us_per_call`;
- commits: :func:`transaction_of_keys`; through the scheduler in process, :func:`submit_all`;
  through the client library, :func:`commit_round` and :func:`measure_commit_rounds`.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from hlc_oracle import Committed, GroupCommitScheduler, Timestamp, Transaction
from hlc_oracle.client import AsyncOracleClient
from hlc_oracle.proto import oracle_pb2 as pb

GET = "/hlc_oracle.v1.TimestampOracle/GetTimestamps"
ONE = pb.GetTimestampsRequest(count=1).SerializeToString()
#: Rounds of a same-run comparison, each a pair: the baseline's round, then the subject's.
INTERLEAVED_PAIRS = 15
#: The unary throughput groups: this many concurrent callers, each making this many calls a round.
UNARY_CALLERS, UNARY_CALLS = 16, 25
#: Handler calls per round of the in-process handler groups.
HANDLER_CALLS = 1000
#: Keys per committed transaction (half read, half written), in every commit group.
KEYS = 8
#: Transaction ids of the commit loads, far from those the scheduler benchmarks use.
IDS = itertools.count(10**12)
#: The gRPC channels :func:`aio_channel` made; a module that closes them after each test does so
#: with the ``close_channels`` fixture (bench/conftest.py).
CHANNELS: list[Any] = []


def bench_for(request: pytest.FixtureRequest, baseline: bool) -> Any:
    """The group's ``baseline`` fixture for its reference member, ``benchmark`` for the others."""
    return request.getfixturevalue("baseline" if baseline else "benchmark")


@contextlib.contextmanager
def echo_server(directory: Path) -> Iterator[tuple[int, str]]:
    """``bench/echo_server.py`` running (its pid and target, on 127.0.0.1), stopped on exit."""
    port_file = directory / "echo-port.json"
    script = Path(__file__).with_name("echo_server.py")
    process = subprocess.Popen([sys.executable, str(script), str(port_file)])
    try:
        deadline = time.monotonic() + 30
        while True:  # the file may be seen before its text is written: read until it parses
            with contextlib.suppress(FileNotFoundError, ValueError):
                port = int(json.loads(port_file.read_text())["port"])
                break
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("echo server did not start")
            time.sleep(0.02)
        yield process.pid, f"127.0.0.1:{port}"
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(10)
        finally:
            process.kill()
            process.wait()


def timed(run: Callable[[], None]) -> float:
    """Seconds one call of ``run`` takes."""
    started = time.perf_counter()
    run()
    return time.perf_counter() - started


def interleaved_pairs(
    baseline: Callable[[], None], subject: Callable[[], None], pairs: int = INTERLEAVED_PAIRS
) -> list[tuple[float, float]]:
    """Seconds of ``pairs`` pairs of rounds, each the baseline's round then the subject's, back
    to back: load that comes and goes on a shared host hits both sides of a pair."""
    return [(timed(baseline), timed(subject)) for _ in range(pairs)]


def record_median_rate(bench: Any, name: str, per_round: int) -> bool:
    """``extra_info[name]``: ``per_round`` over the median round's seconds. False when nothing
    was timed (``--benchmark-disable``: the body ran once)."""
    stats = getattr(bench, "stats", None)
    if stats is None:
        return False
    bench.extra_info[name] = round(per_round / stats.stats.median)
    return True


def record_us_per_call(bench: Any, calls_per_round: int = HANDLER_CALLS) -> bool:
    """``extra_info["us_per_call"]``: the median round's microseconds per call. False when
    nothing was timed."""
    stats = getattr(bench, "stats", None)
    if stats is None:
        return False
    bench.extra_info["us_per_call"] = round(stats.stats.median / calls_per_round * 1e6, 2)
    return True


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(int(fraction * len(ordered)), len(ordered) - 1)] if ordered else 0.0


def record_rate(benchmark: Any, count: int, seconds: float, latencies: list[float]) -> None:
    """``per_second`` of ``count`` operations in ``seconds``; p50 and p99 of ``latencies``."""
    benchmark.extra_info["per_second"] = round(count / seconds)
    if latencies:
        benchmark.extra_info["p50_us"] = round(percentile(latencies, 0.5) * 1e6, 1)
        benchmark.extra_info["p99_us"] = round(percentile(latencies, 0.99) * 1e6, 1)


def record_gaps(benchmark: Any, gaps: list[float], prefix: str = "") -> None:
    """Every round's gap (milliseconds), their maximum and median, under ``prefix``."""
    benchmark.extra_info[f"{prefix}gaps_ms"] = [round(gap, 1) for gap in gaps]
    benchmark.extra_info[f"{prefix}max_gap_ms"] = round(max(gaps), 1)
    benchmark.extra_info[f"{prefix}median_gap_ms"] = round(statistics.median(gaps), 1)


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU of process ``pid`` so far (from /proc, in clock ticks)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class ThreadTimes:
    """Seconds one thread spent on a CPU, and runnable but waiting for one (the kernel's
    ``/proc/PID/task/TID/schedstat``, in nanoseconds: finer than :func:`process_cpu_seconds`'s
    clock ticks)."""

    running: float
    waiting: float

    def __sub__(self, before: ThreadTimes) -> ThreadTimes:
        return ThreadTimes(self.running - before.running, self.waiting - before.waiting)


def thread_times(pid: int) -> dict[int, ThreadTimes]:
    """Every live thread of process ``pid``, by thread id (the main thread's is ``pid``)."""
    times: dict[int, ThreadTimes] = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            running, waiting, _ = (task / "schedstat").read_text().split()
        except (FileNotFoundError, ProcessLookupError):
            continue  # the thread ended meanwhile
        times[int(task.name)] = ThreadTimes(int(running) / 1e9, int(waiting) / 1e9)
    return times


def aio_channel(loop: asyncio.AbstractEventLoop, target: str) -> Any:
    """A grpc.aio channel bound to ``loop`` (it must be made while that loop runs)."""

    async def make() -> Any:
        return grpc.aio.insecure_channel(target)

    channel = loop.run_until_complete(make())
    CHANNELS.append(channel)
    return channel


def concurrent_unary(
    loop: asyncio.AbstractEventLoop,
    target: str,
    payload: bytes = ONE,
    callers: int = UNARY_CALLERS,
    calls: int = UNARY_CALLS,
) -> Callable[[], None]:
    """One round: ``callers`` coroutines each making ``calls`` raw ``GetTimestamps`` calls of
    ``payload`` back to back, on one channel. The first round (connect, warm up) runs here."""
    call = aio_channel(loop, target).unary_unary(GET)

    async def caller() -> None:
        for _ in range(calls):
            await call(payload, timeout=10)

    async def burst() -> None:
        await asyncio.gather(*(caller() for _ in range(callers)))

    loop.run_until_complete(burst())  # connect and warm up
    return lambda: loop.run_until_complete(burst())


def handler_rounds(
    loop: asyncio.AbstractEventLoop, handler: Callable[[bytes, Any], Awaitable[bytes]]
) -> Callable[[], None]:
    """One round: ``HANDLER_CALLS`` calls of a ``GetTimestamps(1)`` handler, in process."""

    async def calls() -> None:
        for _ in range(HANDLER_CALLS):
            await handler(ONE, None)

    return lambda: loop.run_until_complete(calls())


def transaction_of_keys(txn_id: int, start: Timestamp, prefix: bytes = b"") -> Transaction:
    """A transaction of ``KEYS`` keys of its own (``<prefix><id>/<n>``): it conflicts with
    nothing."""
    keys = [b"%s%d/%d" % (prefix, txn_id, k) for k in range(KEYS)]
    return Transaction(txn_id, start, keys[: KEYS // 2], keys[KEYS // 2 :])


async def submit_all(
    scheduler: GroupCommitScheduler, txns: list[Transaction], submitters: int
) -> list[float]:
    """``submitters`` coroutines share the transactions, each submitting its next one when the
    last is decided; returns each submit's latency."""
    latencies: list[float] = []
    queue = iter(txns)

    async def submitter() -> None:
        for txn in queue:
            started = time.perf_counter()
            outcome = await scheduler.submit(txn)
            latencies.append(time.perf_counter() - started)
            assert isinstance(outcome, Committed)

    await asyncio.gather(*(submitter() for _ in range(submitters)))
    return latencies


def commit_round(target: str, callers: int, per_caller: int) -> tuple[float, list[float]]:
    """Seconds for ``callers`` x ``per_caller`` commits through one ``AsyncOracleClient``, each
    caller waiting for its commit's answer before the next, and each commit's latency."""

    async def run() -> tuple[float, list[float]]:
        client = AsyncOracleClient(target)
        try:
            start = await client.get_timestamp()
            batches = [
                [transaction_of_keys(next(IDS), start, b"c") for _ in range(per_caller)]
                for _ in range(callers)
            ]
            latencies: list[float] = []

            async def caller(txns: list[Transaction]) -> None:
                for txn in txns:
                    began = time.perf_counter()
                    assert isinstance(await client.commit(txn), Committed)
                    latencies.append(time.perf_counter() - began)

            started = time.perf_counter()
            await asyncio.gather(*(caller(batch) for batch in batches))
            return time.perf_counter() - started, latencies
        finally:
            await client.close()

    return asyncio.run(run())


def measure_commit_rounds(
    bench: Any, target: str, callers: int, per_caller: int, rounds: int = 3
) -> list[float]:
    """``rounds`` rounds of :func:`commit_round`, timed; records the last round's rate and
    latencies (:func:`record_rate`) and returns its latencies."""
    figures: dict[str, Any] = {}

    def body() -> None:
        figures["seconds"], figures["latencies"] = commit_round(target, callers, per_caller)

    bench.pedantic(body, rounds=rounds, iterations=1)
    record_rate(bench, callers * per_caller, figures["seconds"], figures["latencies"])
    latencies: list[float] = figures["latencies"]
    return latencies
