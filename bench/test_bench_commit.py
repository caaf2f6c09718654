"""Group commit beside one-fsync-per-transaction baselines and the raw batched-fsync ceiling.

Every benchmark of a group does the same work per round (``TXNS`` = 4,096 transactions of 8
keys, 4 read and 4 written, or as many records), so the ratio of medians is the inverse
throughput ratio:

- ``commit sync 1024 txns``: in-process ``GroupCommitScheduler.submit`` in ``sync`` durability
  with 1, 64 and 1024 concurrent submitters; baselines: a plain file written with one ``write``
  and one ``fdatasync`` per transaction (the group's baseline), SQLite with one ``INSERT`` and
  ``COMMIT`` per transaction (synchronous=FULL, journal_mode=WAL: a naive transaction log), and
  the raw ceiling, 1,000 records per ``fdatasync`` with no other work; and the asyncio floor,
  1024 coroutines awaiting one future per transaction with nothing else done, the most any
  in-process asyncio submitter could reach on the machine;
- ``commit grpc 256 callers``: ``AsyncOracleClient.commit()`` from 256 concurrent callers
  against a real server (``CommitStream`` with client merging), beside the in-process scheduler
  with 256 submitters (the baseline: what the network and the service add);
- ``commit stream 100000 txns``: ``commit_many`` calls of 100 and 1,000, 8 in flight, against a
  real server and against the empty grpcio service (``bench/echo_server.py``: every transaction
  committed at once, nothing decided), beside the raw ceiling (the baseline); ``extra_info`` has
  each side's server and client CPU per transaction; ``... oracle over echo`` runs the two in
  back-to-back pairs and records the medians of the per-pair ratios.

``extra_info`` holds transactions per second and the submitters' p50/p99 latency (microseconds)
of the median-ish last round; the fsync baseline also records its per-fsync p50.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import sqlite3
import statistics
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hlc_oracle import Clock, CommitOptions, Committed, GroupCommitScheduler, Timestamp, Transaction
from hlc_oracle.client import AsyncOracleClient

from bench.support import (
    ThreadTimes,
    echo_server,
    process_cpu_seconds,
    record_rate,
    submit_all,
    thread_times,
    transaction_of_keys,
)
from tests.support.oracle_process import OracleProcess

TXNS = 4096
RECORD = b"r" * 120  # about the size of one logged commit of 8 keys
IDS = itertools.count(1)


def transactions(clock: Clock, count: int) -> list[Transaction]:
    start = clock.now()
    return [transaction_of_keys(next(IDS), start) for _ in range(count)]


@pytest.fixture(scope="module")
def scheduler(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GroupCommitScheduler]:
    clock = Clock(node=1)
    directory = tmp_path_factory.mktemp("commit-bench") / "log"
    with GroupCommitScheduler(directory, clock, CommitOptions(durability="sync")) as scheduler:
        yield scheduler


def run_scheduler(benchmark: Any, scheduler: GroupCommitScheduler, submitters: int) -> None:
    figures: dict[str, Any] = {}

    def setup() -> tuple[tuple[list[Transaction]], dict[str, Any]]:
        return (transactions(scheduler.clock, TXNS),), {}

    def body(txns: list[Transaction]) -> None:
        started = time.perf_counter()
        figures["latencies"] = asyncio.run(submit_all(scheduler, txns, submitters))
        figures["seconds"] = time.perf_counter() - started

    benchmark.pedantic(body, setup=setup, rounds=3, iterations=1)
    record_rate(benchmark, TXNS, figures["seconds"], figures["latencies"])


@pytest.mark.parametrize("submitters", [1, 64, 1024])
def test_scheduler_sync(benchmark: Any, scheduler: GroupCommitScheduler, submitters: int) -> None:
    benchmark.group = f"commit sync {TXNS} txns"
    run_scheduler(benchmark, scheduler, submitters)


def test_file_fsync_per_transaction(baseline: Any, tmp_path: Path) -> None:
    baseline.group = f"commit sync {TXNS} txns"
    path = tmp_path / "per-record.log"
    figures: dict[str, Any] = {}

    def body() -> None:
        latencies = []
        started = time.perf_counter()
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            for _ in range(TXNS):
                one = time.perf_counter()
                os.write(descriptor, RECORD)
                os.fdatasync(descriptor)
                latencies.append(time.perf_counter() - one)
        finally:
            os.close(descriptor)
        figures["seconds"] = time.perf_counter() - started
        figures["latencies"] = latencies

    baseline.pedantic(body, rounds=2, iterations=1)
    record_rate(baseline, TXNS, figures["seconds"], figures["latencies"])
    baseline.extra_info["fsync_p50_us"] = baseline.extra_info.get("p50_us")


def test_sqlite_insert_commit_per_transaction(benchmark: Any, tmp_path: Path) -> None:
    benchmark.group = f"commit sync {TXNS} txns"
    connection = sqlite3.connect(tmp_path / "txns.db", isolation_level=None)
    connection.execute("PRAGMA journal_mode=WAL")
    connection.execute("PRAGMA synchronous=FULL")
    connection.execute("CREATE TABLE decisions (txn_id INTEGER PRIMARY KEY, record BLOB)")
    figures: dict[str, Any] = {}

    def body() -> None:
        started = time.perf_counter()
        for _ in range(TXNS):
            connection.execute("BEGIN")
            connection.execute(
                "INSERT INTO decisions (txn_id, record) VALUES (?, ?)", (next(IDS), RECORD)
            )
            connection.execute("COMMIT")
        figures["seconds"] = time.perf_counter() - started

    try:
        benchmark.pedantic(body, rounds=2, iterations=1)
    finally:
        connection.close()
    record_rate(benchmark, TXNS, figures["seconds"], [])


def measure_raw_ceiling(bench: Any, path: Path, records: int) -> None:
    """The raw ceiling: ``records`` log-sized records appended to ``path``, 1,000 per
    ``fdatasync``; five rounds, the last one's rate."""
    chunk = RECORD * 1000
    figures: dict[str, Any] = {}

    def body() -> None:
        started = time.perf_counter()
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            written = 0
            while written < records:
                count = min(1000, records - written)
                os.write(descriptor, chunk[: count * len(RECORD)])
                os.fdatasync(descriptor)
                written += count
        finally:
            os.close(descriptor)
        figures["seconds"] = time.perf_counter() - started

    bench.pedantic(body, rounds=5, iterations=1)
    record_rate(bench, records, figures["seconds"], [])


def test_raw_ceiling_1000_records_per_fsync(benchmark: Any, tmp_path: Path) -> None:
    benchmark.group = f"commit sync {TXNS} txns"
    measure_raw_ceiling(benchmark, tmp_path / "batched.log", TXNS)


async def await_resolved_in_batches(count: int, submitters: int) -> list[float]:
    """The floor for any in-process asyncio submitter: ``submitters`` coroutines share ``count``
    awaits of one future each, resolved in batches by one callback on the loop, as the scheduler's
    writer does, with no checks, no log, no thread and no clock."""
    loop = asyncio.get_running_loop()
    pending: list[asyncio.Future[None]] = []
    latencies: list[float] = []

    def resolve() -> None:
        batch = pending[:]
        pending.clear()
        for future in batch:
            future.set_result(None)

    queue = iter(range(count))

    async def submitter() -> None:
        for _ in queue:
            started = time.perf_counter()
            future = loop.create_future()
            if not pending:
                loop.call_soon(resolve)
            pending.append(future)
            await future
            latencies.append(time.perf_counter() - started)

    await asyncio.gather(*(submitter() for _ in range(submitters)))
    return latencies


def test_asyncio_await_floor_1024(benchmark: Any) -> None:
    benchmark.group = f"commit sync {TXNS} txns"
    figures: dict[str, Any] = {}

    def body() -> None:
        started = time.perf_counter()
        figures["latencies"] = asyncio.run(await_resolved_in_batches(TXNS, 1024))
        figures["seconds"] = time.perf_counter() - started

    benchmark.pedantic(body, rounds=3, iterations=1)
    record_rate(benchmark, TXNS, figures["seconds"], figures["latencies"])


# ---- over gRPC ----------------------------------------------------------------------------------

GRPC_TXNS = 256 * 20


@pytest.fixture(scope="module")
def oracle(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OracleProcess]:
    with OracleProcess(tmp_path_factory.mktemp("commit-grpc") / "data") as server:
        yield server


def test_grpc_commit_stream_256_callers(benchmark: Any, oracle: OracleProcess) -> None:
    benchmark.group = "commit grpc 256 callers"
    loop = asyncio.new_event_loop()
    client = loop.run_until_complete(_client(oracle.target))
    start = loop.run_until_complete(_first_timestamp(client))
    figures: dict[str, Any] = {}

    async def round_of_commits() -> list[float]:
        latencies: list[float] = []
        queue = iter(range(GRPC_TXNS))

        async def caller() -> None:
            for _ in queue:
                txn = transaction_of_keys(next(IDS), start, b"g")
                began = time.perf_counter()
                outcome = await client.commit(txn)
                latencies.append(time.perf_counter() - began)
                assert isinstance(outcome, Committed)

        await asyncio.gather(*(caller() for _ in range(256)))
        return latencies

    def body() -> None:
        started = time.perf_counter()
        figures["latencies"] = loop.run_until_complete(round_of_commits())
        figures["seconds"] = time.perf_counter() - started

    try:
        benchmark.pedantic(body, rounds=3, iterations=1)
    finally:
        loop.run_until_complete(client.close())
        loop.close()
    record_rate(benchmark, GRPC_TXNS, figures["seconds"], figures["latencies"])


async def _client(target: str) -> AsyncOracleClient:
    return AsyncOracleClient(target)


async def _first_timestamp(client: AsyncOracleClient) -> Timestamp:
    return await client.get_timestamp()


def test_in_process_256_submitters(baseline: Any, scheduler: GroupCommitScheduler) -> None:
    baseline.group = "commit grpc 256 callers"
    figures: dict[str, Any] = {}

    def setup() -> tuple[tuple[list[Transaction]], dict[str, Any]]:
        return (transactions(scheduler.clock, GRPC_TXNS),), {}

    def body(txns: list[Transaction]) -> None:
        started = time.perf_counter()
        figures["latencies"] = asyncio.run(submit_all(scheduler, txns, 256))
        figures["seconds"] = time.perf_counter() - started

    baseline.pedantic(body, setup=setup, rounds=3, iterations=1)
    record_rate(baseline, GRPC_TXNS, figures["seconds"], figures["latencies"])


# ---- CommitStream, bytes in and bytes out (batched commits end to end in Rust) -------------------

STREAM_TXNS = 100_000
STREAM_IN_FLIGHT = 8
#: The server of "today's code" (before the bytes path), for the same-run comparison of merged
#: ``commit()``: a tree whose ``python/`` holds that version's package and compiled core (see
#: bench/HISTORY.md, "Group commit at volume"). Unset: that comparison is skipped.
OLD_TREE = os.environ.get("HLC_BENCH_OLD_TREE")


def server_pid(server: OracleProcess) -> int:
    assert server.process is not None
    return server.process.pid


def stream_batches(txns: list[Transaction], per_message: int) -> list[list[Transaction]]:
    """``txns`` in lists of ``per_message``. Made before the timed region, like the
    transactions: slicing the caller's list is the caller's work, not the client's."""
    return [txns[start : start + per_message] for start in range(0, len(txns), per_message)]


async def stream_round(target: str, batches: list[list[Transaction]]) -> int:
    """One client process, one ``CommitStream``: each of ``batches`` (see
    :func:`stream_batches`) in one ``commit_many`` call, ``STREAM_IN_FLIGHT`` calls in flight
    (``commit_many`` encodes each call's batch with ``encode_commit_request`` and merges the
    calls that wait into shared messages, so ``per_message`` is the size of a call, and messages
    on the wire are larger; its results decode lazily, and the count builds none). Returns the
    committed count. ``batches`` is left as it
    is: the caller frees its transactions after the timed region, as it made them before it
    (freeing 100,000 transactions of 8 keys costs about 0.15 µs each, the caller's cost, not the
    client's)."""
    committed = 0
    queue = iter(batches)
    async with AsyncOracleClient(target, timeout=60.0) as client:

        async def sender() -> None:
            nonlocal committed
            for batch in queue:
                results = await client.commit_many(batch)
                committed += results.committed  # counted in Rust: no result object is built

        await asyncio.gather(*(sender() for _ in range(STREAM_IN_FLIGHT)))
    return committed


def stream_transactions(start: Timestamp, count: int) -> list[Transaction]:
    return [transaction_of_keys(next(IDS), start, b"s") for _ in range(count)]


@pytest.fixture(scope="module")
def stream_oracle(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OracleProcess]:
    # A message of 1,000 transactions of 8 keys is about 80 KB: over the 64 KiB default.
    with OracleProcess(
        tmp_path_factory.mktemp("commit-stream") / "data", "--max-message-bytes", str(4 << 20)
    ) as server:
        yield server


@pytest.fixture(scope="module")
def stream_echo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, str]]:
    """The empty grpcio service (``bench/echo_server.py``): its ``CommitStream`` answers every
    transaction committed at once, with no engine, no log and no fsync (its pid and target)."""
    with echo_server(tmp_path_factory.mktemp("commit-stream-echo")) as pid_and_target:
        yield pid_and_target


@dataclass(frozen=True)
class StreamRound:
    """One round of :func:`stream_round`: its seconds, the server's and the client's CPU seconds
    (the whole server process; the client process while the round ran), and the server's
    threads over the round (:func:`thread_times`)."""

    seconds: float
    server_cpu: float
    client_cpu: float
    threads: dict[int, ThreadTimes]
    server_pid: int

    @property
    def loop(self) -> ThreadTimes:
        """The server's main thread: its event loop (grpc.aio, the handlers)."""
        return self.threads.get(self.server_pid, ThreadTimes(0.0, 0.0))

    @property
    def others(self) -> list[ThreadTimes]:
        """The server's other threads, busiest first (the oracle's first is its group-commit
        writer; the rest are gRPC's)."""
        others = [times for tid, times in self.threads.items() if tid != self.server_pid]
        return sorted(others, key=lambda times: times.running, reverse=True)


def timed_stream_round(pid: int, target: str, batches: list[list[Transaction]]) -> StreamRound:
    threads_before = thread_times(pid)
    server_before = process_cpu_seconds(pid)
    client_before = time.process_time()
    started = time.perf_counter()
    committed = asyncio.run(stream_round(target, batches))
    seconds = time.perf_counter() - started
    server_cpu = process_cpu_seconds(pid) - server_before
    client_cpu = time.process_time() - client_before
    threads = {
        tid: times - threads_before.get(tid, ThreadTimes(0.0, 0.0))
        for tid, times in thread_times(pid).items()
    }
    assert committed == sum(len(batch) for batch in batches)
    return StreamRound(seconds, server_cpu, client_cpu, threads, pid)


def thread_figures(round_: StreamRound, writer: bool) -> dict[str, float]:
    """Where the server's CPU went in ``round_``, per transaction: its event loop, its
    group-commit writer (``writer``: the oracle; the echo has none) and its other threads
    (gRPC's); and the writer's shares of the round's wall time: on a CPU, waiting for one, and
    asleep (its ``fdatasync``, and waiting for the next message)."""
    per_txn = 1e6 / STREAM_TXNS
    others = round_.others
    figures = {"loop_cpu_us_per_txn": round(round_.loop.running * per_txn, 3)}
    if writer and others:
        busiest, others = others[0], others[1:]
        figures["writer_cpu_us_per_txn"] = round(busiest.running * per_txn, 3)
        figures["writer_running_share"] = round(busiest.running / round_.seconds, 3)
        figures["writer_waiting_for_cpu_share"] = round(busiest.waiting / round_.seconds, 3)
        figures["writer_asleep_share"] = round(
            1 - (busiest.running + busiest.waiting) / round_.seconds, 3
        )
    figures["other_threads_cpu_us_per_txn"] = round(sum(t.running for t in others) * per_txn, 3)
    return figures


def fresh_stream_batches(target: str, per_message: int) -> list[list[Transaction]]:
    # A fresh snapshot per round: the detector forgets keys past max_keys, and a start below
    # its low watermark is aborted as too old.
    start = asyncio.run(_timestamp_of(target))
    return stream_batches(stream_transactions(start, STREAM_TXNS), per_message)


def measure_stream(
    benchmark: Any, pid: int, target: str, per_message: int, writer: bool = True
) -> None:
    """Three rounds of ``STREAM_TXNS`` in calls of ``per_message``; the last round's rate, CPU
    per transaction and server threads (:func:`thread_figures`)."""
    figures: list[StreamRound] = []

    def setup() -> tuple[tuple[list[list[Transaction]]], dict[str, Any]]:
        return (fresh_stream_batches(target, per_message),), {}

    def body(batches: list[list[Transaction]]) -> None:
        figures.append(timed_stream_round(pid, target, batches))

    benchmark.pedantic(body, setup=setup, rounds=3, iterations=1)
    last = figures[-1]
    record_rate(benchmark, STREAM_TXNS, last.seconds, [])
    benchmark.extra_info["server_cpu_us_per_txn"] = round(last.server_cpu / STREAM_TXNS * 1e6, 2)
    benchmark.extra_info["client_cpu_us_per_txn"] = round(last.client_cpu / STREAM_TXNS * 1e6, 2)
    benchmark.extra_info.update(thread_figures(last, writer))


@pytest.mark.parametrize("per_message", [100, 1000])
def test_grpc_commit_stream_messages(
    benchmark: Any, stream_oracle: OracleProcess, per_message: int
) -> None:
    benchmark.group = f"commit stream {STREAM_TXNS} txns"
    measure_stream(benchmark, server_pid(stream_oracle), stream_oracle.target, per_message)


#: Rounds of ``STREAM_TXNS`` that take a server past its default bounds (1,000,000 retained
#: decisions, 1,000,000 remembered keys) before :func:`test_grpc_commit_stream_steady` measures.
STEADY_WARM_ROUNDS = 11


@pytest.fixture(scope="module")
def steady_oracle(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OracleProcess]:
    """A server of its own for :func:`test_grpc_commit_stream_steady`, so that the other stream
    benches keep measuring a server whose tables are still filling."""
    with OracleProcess(
        tmp_path_factory.mktemp("commit-stream-steady") / "data",
        "--max-message-bytes",
        str(4 << 20),
    ) as server:
        yield server


def test_grpc_commit_stream_steady(benchmark: Any, steady_oracle: OracleProcess) -> None:
    """Calls of 1,000 against a server past both of its default bounds: its decisions index
    forgets one decision and its conflict table evicts keys for each new one, the steady state
    of a server that has run a while. The rounds of :func:`test_grpc_commit_stream_messages`
    (100,000 decisions on a fresh server) never get there. ``STEADY_WARM_ROUNDS`` rounds first
    (one in the smoke run)."""
    benchmark.group = f"commit stream {STREAM_TXNS} txns"
    target = steady_oracle.target
    for _ in range(1 if benchmark.disabled else STEADY_WARM_ROUNDS):
        batches = fresh_stream_batches(target, 1000)
        assert asyncio.run(stream_round(target, batches)) == STREAM_TXNS
    benchmark.extra_info["decided_before"] = (
        1 if benchmark.disabled else STEADY_WARM_ROUNDS
    ) * STREAM_TXNS
    measure_stream(benchmark, server_pid(steady_oracle), target, 1000)


@pytest.mark.parametrize("per_message", [100, 1000])
def test_grpc_commit_stream_echo_messages(
    benchmark: Any, stream_echo: tuple[int, str], per_message: int
) -> None:
    """The same rounds against the empty grpcio service: what grpcio and the client cost on
    this machine with nothing decided and nothing made durable, the floor of the stream path."""
    benchmark.group = f"commit stream {STREAM_TXNS} txns"
    measure_stream(benchmark, *stream_echo, per_message, writer=False)


#: Pairs of rounds (echo, then oracle) of the stream's same-run comparison.
STREAM_PAIRS = int(os.environ.get("HLC_BENCH_STREAM_PAIRS", "8"))


def test_grpc_commit_stream_oracle_over_echo(
    benchmark: Any, stream_oracle: OracleProcess, stream_echo: tuple[int, str]
) -> None:
    """Calls of 1,000 against the empty grpcio service and against the oracle, in
    ``STREAM_PAIRS`` back-to-back pairs of rounds (load that comes and goes hits both sides of a
    pair): ``extra_info`` has each side's median rate, CPU per transaction and server threads
    (:func:`thread_figures`), and the medians of the per-pair ratios oracle/echo (time, server
    CPU, client CPU): what the oracle adds over grpcio's floor."""
    benchmark.group = f"commit stream {STREAM_TXNS} txns, oracle over echo"
    pairs = 1 if benchmark.disabled else STREAM_PAIRS
    sides = {"echo": stream_echo, "oracle": (server_pid(stream_oracle), stream_oracle.target)}
    rounds: dict[str, list[StreamRound]] = {"echo": [], "oracle": []}

    def body() -> None:
        for _ in range(pairs):
            for side, (pid, target) in sides.items():
                batches = fresh_stream_batches(target, 1000)
                rounds[side].append(timed_stream_round(pid, target, batches))

    benchmark.pedantic(body, rounds=1, iterations=1)
    per_txn = 1e6 / STREAM_TXNS
    for side, measured in rounds.items():
        info = benchmark.extra_info
        info[f"{side}_per_second"] = round(
            STREAM_TXNS / statistics.median(r.seconds for r in measured)
        )
        info[f"{side}_server_cpu_us_per_txn"] = round(
            statistics.median(r.server_cpu for r in measured) * per_txn, 2
        )
        info[f"{side}_client_cpu_us_per_txn"] = round(
            statistics.median(r.client_cpu for r in measured) * per_txn, 2
        )
        threads = [thread_figures(r, writer=side == "oracle") for r in measured]
        for name in threads[0]:
            info[f"{side}_{name}"] = round(statistics.median(f[name] for f in threads), 3)
    for name in ("seconds", "server_cpu", "client_cpu"):
        ratios = [
            getattr(oracle, name) / max(getattr(echo, name), 1e-9)
            for echo, oracle in zip(rounds["echo"], rounds["oracle"], strict=True)
        ]
        benchmark.extra_info[f"oracle_over_echo_{name}"] = round(statistics.median(ratios), 3)
    benchmark.extra_info["load_average"] = os.getloadavg()[0]


def test_raw_ceiling_stream_group(baseline: Any, tmp_path: Path) -> None:
    """The raw ceiling (1,000 records per ``fdatasync``) for as many records as the stream
    benchmarks commit, in their group."""
    baseline.group = f"commit stream {STREAM_TXNS} txns"
    measure_raw_ceiling(baseline, tmp_path / "batched.log", STREAM_TXNS)


async def _timestamp_of(target: str) -> Timestamp:
    client = AsyncOracleClient(target)
    try:
        return await client.get_timestamp()
    finally:
        await client.close()


@pytest.fixture(scope="module")
def old_oracle(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OracleProcess]:
    if OLD_TREE is None:
        pytest.skip("HLC_BENCH_OLD_TREE is not set: no server of today's code to compare with")
    env = {"PYTHONPATH": str(Path(OLD_TREE) / "python")}
    with OracleProcess(
        tmp_path_factory.mktemp("commit-old") / "data", "--max-message-bytes", str(4 << 20), env=env
    ) as server:
        yield server


def test_grpc_merged_commit_256_callers_new_vs_old_server(
    benchmark: Any, stream_oracle: OracleProcess, old_oracle: OracleProcess
) -> None:
    """The client's merged ``commit()`` (256 callers, ``GRPC_TXNS`` per round) against this
    server and against a server of the code before the bytes path, in back-to-back pairs of rounds
    (load that comes and goes hits both sides of a pair alike): ``extra_info`` has the median of
    the per-pair time ratios new/old (below 1: the new server is faster) and both rates."""
    benchmark.group = "commit grpc 256 callers, new vs old server"
    pairs = 1 if benchmark.disabled else 8
    loop = asyncio.new_event_loop()
    clients = {
        "new": loop.run_until_complete(_client(stream_oracle.target)),
        "old": loop.run_until_complete(_client(old_oracle.target)),
    }
    seconds: dict[str, list[float]] = {"new": [], "old": []}

    async def round_of_commits(client: AsyncOracleClient) -> float:
        start = await client.get_timestamp()
        queue = iter(range(GRPC_TXNS))

        async def caller() -> None:
            for _ in queue:
                txn = transaction_of_keys(next(IDS), start, b"m")
                assert isinstance(await client.commit(txn), Committed)

        started = time.perf_counter()
        await asyncio.gather(*(caller() for _ in range(256)))
        return time.perf_counter() - started

    def body() -> None:
        for _ in range(pairs):
            for version in ("old", "new"):
                seconds[version].append(loop.run_until_complete(round_of_commits(clients[version])))

    try:
        benchmark.pedantic(body, rounds=1, iterations=1)
    finally:
        for client in clients.values():
            loop.run_until_complete(client.close())
        loop.close()
    ratios = [new / old for new, old in zip(seconds["new"], seconds["old"], strict=True)]
    benchmark.extra_info["interleaved_ratio_new_over_old"] = round(statistics.median(ratios), 3)
    for version, times in seconds.items():
        benchmark.extra_info[f"{version}_per_second"] = round(GRPC_TXNS / statistics.median(times))


MEMORY_SECONDS = float(os.environ.get("HLC_BENCH_MEMORY_SECONDS", "60"))


def resident_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def test_grpc_commit_stream_memory_sustained(benchmark: Any, stream_oracle: OracleProcess) -> None:
    """Messages of 1,000 at full rate for ``MEMORY_SECONDS`` (2 s in the smoke run): the server's
    resident memory after the first 10 s and at the end (``max_keys`` and
    ``retained_decisions`` bound it)."""
    benchmark.group = "commit stream memory"
    seconds = 2.0 if benchmark.disabled else MEMORY_SECONDS
    pid = server_pid(stream_oracle)
    figures: dict[str, Any] = {"samples": []}

    async def sustained() -> int:
        committed = 0
        started = time.perf_counter()
        while (elapsed := time.perf_counter() - started) < seconds:
            figures["samples"].append((round(elapsed, 1), resident_bytes(pid)))
            start = await _timestamp_of(stream_oracle.target)
            txns = stream_transactions(start, 20_000)
            committed += await stream_round(stream_oracle.target, stream_batches(txns, 1000))
        figures["samples"].append((round(time.perf_counter() - started, 1), resident_bytes(pid)))
        return committed

    def body() -> None:
        started = time.perf_counter()
        figures["committed"] = asyncio.run(sustained())
        figures["seconds"] = time.perf_counter() - started

    benchmark.pedantic(body, rounds=1, iterations=1)
    samples = figures["samples"]
    after_10s = next((rss for at, rss in samples if at >= 10.0), samples[0][1])
    end = samples[-1][1]
    record_rate(benchmark, figures["committed"], figures["seconds"], [])
    benchmark.extra_info["rss_start_mb"] = round(samples[0][1] / 2**20, 1)
    benchmark.extra_info["rss_10s_mb"] = round(after_10s / 2**20, 1)
    benchmark.extra_info["rss_end_mb"] = round(end / 2**20, 1)
    benchmark.extra_info["rss_max_mb"] = round(max(rss for _, rss in samples) / 2**20, 1)
    benchmark.extra_info["rss_end_over_10s"] = round(end / after_10s, 3)
    # The first sample at or after each 10 s mark: where the growth stops.
    series: dict[int, float] = {}
    for at, rss in samples:
        series.setdefault(int(at // 10) * 10, round(rss / 2**20, 1))
    benchmark.extra_info["rss_every_10s_mb"] = list(series.values())
