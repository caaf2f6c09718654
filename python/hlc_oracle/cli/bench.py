"""``hlc-oracle bench``: a load generator; throughput and latency percentiles of an oracle."""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
import time
from collections.abc import Sequence
from typing import Any, TextIO

from hlc_oracle import Aborted, Committed, Timestamp, Transaction
from hlc_oracle import config as config_module
from hlc_oracle.cli.exit_codes import EXIT_OK
from hlc_oracle.cli.options import (
    add_client_arguments,
    client_kwargs,
    positive_int,
    positive_seconds,
)
from hlc_oracle.client import AsyncOracleClient, OracleError, OracleOutcomeUnknownError


def add_parser(commands: Any) -> None:
    bench = commands.add_parser(
        "bench", help="load generator: throughput and latency percentiles of an oracle"
    )
    bench.add_argument(
        "--mode",
        choices=("merged", "ranges", "unary", "commit", "commit-batch"),
        default="merged",
        help="merged: concurrent get_timestamp() callers (merged by the client); ranges: "
        "get_timestamps(--count) callers (merged too); unary: one GetTimestamps call of --count "
        "per request; commit: concurrent commit() callers (group commit, --keys keys per "
        "transaction, disjoint); commit-batch: callers each sending commit_many() of --batch "
        "transactions, built before the timing (default %(default)s)",
    )
    bench.add_argument(
        "--batch",
        type=positive_int,
        help="transactions per commit_many() call in commit-batch mode (default 100)",
    )
    bench.add_argument(
        "--keys",
        type=positive_int,
        default=8,
        help="keys per transaction in commit mode (half read), at least 1 (default %(default)s)",
    )
    bench.add_argument(
        "--concurrency", type=positive_int, default=64, help="callers (default %(default)s)"
    )
    bench.add_argument(
        "--count",
        type=positive_int,
        help="timestamps per request in ranges and unary modes (default 1); refused in merged, "
        "commit and commit-batch modes, whose requests are one timestamp, one transaction, or "
        "--batch transactions each",
    )
    bench.add_argument(
        "--requests", type=positive_int, default=100_000, help="calls in all (default %(default)s)"
    )
    bench.add_argument(
        "--duration",
        type=positive_seconds,
        default=30.0,
        help="stop after this many seconds at most, > 0 (default %(default)s); SIGTERM stops "
        "it sooner, with the figures so far",
    )
    bench.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_client_arguments(bench)


class Until:
    """The bench's end: ``--duration`` seconds from now, or a SIGTERM, after which no call is
    started (those in flight finish, and the figures so far are printed, exit 0)."""

    def __init__(self, seconds: float) -> None:
        self.deadline = time.perf_counter() + seconds
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, self.stop)

    def stop(self) -> None:
        self.deadline = time.perf_counter()

    def running(self) -> bool:
        return time.perf_counter() < self.deadline


class ProgressBar:
    """A one-line progress bar on a terminal stream (nothing when disabled)."""

    def __init__(self, total: int, stream: TextIO, enabled: bool) -> None:
        self.total = total
        self.stream = stream
        self.enabled = enabled
        self._last = 0.0

    def update(self, done: int, started: float, force: bool = False) -> None:
        now = time.perf_counter()
        if not self.enabled or (not force and now - self._last < 0.2):
            return
        self._last = now
        fraction = min(done / self.total, 1.0)
        filled = int(fraction * 30)
        rate = done / max(now - started, 1e-9)
        self.stream.write(
            f"\r[{'#' * filled}{'.' * (30 - filled)}] {done}/{self.total} {rate:,.0f} calls/s"
        )
        self.stream.flush()

    def finish(self) -> None:
        if self.enabled:
            self.stream.write("\n")


def percentile(sorted_values: Sequence[float], fraction: float) -> float:
    if not sorted_values:
        return float("nan")
    index = min(int(fraction * len(sorted_values)), len(sorted_values) - 1)
    return sorted_values[index]


def bench_count(args: argparse.Namespace) -> int:
    """``--count`` as the timestamps each call asks for; ``ConfigError`` where it means nothing."""
    if args.count is None:
        return 1
    if args.mode == "commit-batch":
        raise config_module.ConfigError(
            "--count applies to --mode ranges and unary only; commit-batch calls carry --batch "
            "transactions"
        )
    if args.mode in ("merged", "commit"):
        raise config_module.ConfigError(
            f"--count applies to --mode ranges and unary only; each {args.mode} call is one "
            + ("timestamp" if args.mode == "merged" else "transaction")
        )
    if args.count < 1:
        raise config_module.ConfigError(f"--count must be at least 1, got {args.count}")
    return int(args.count)


def bench_batch(args: argparse.Namespace) -> int:
    """``--batch`` as the transactions of one commit_many() call; ``ConfigError`` elsewhere."""
    if args.batch is None:
        return 100
    if args.mode != "commit-batch":
        raise config_module.ConfigError("--batch applies to --mode commit-batch only")
    return int(args.batch)


def bench_transactions(run_id: int, start: Timestamp, count: int, keys: int) -> list[Transaction]:
    """``count`` transactions with ids unique to this run; each reads and writes its own keys,
    so all of them commit and the figure is the group commit's, not the conflict rate's."""
    reads = keys // 2
    transactions = []
    for n in range(1, count + 1):
        txn_id = (run_id << 32) | n
        names = [b"%d/%d" % (txn_id, k) for k in range(max(keys, reads + 1))]
        transactions.append(Transaction(txn_id, start, names[:reads], names[reads:]))
    return transactions


class Outcomes:
    """What a run's calls ended with besides success: aborted transactions (in the commit
    modes; a transaction that started under a previous leader and reached the next undecided is
    aborted as too old), transactions whose outcome is unknown, and errors by kind (the error's
    class), each counted per transaction in the commit modes and per call otherwise. The run
    goes on after each: a failover costs figures, not the run."""

    def __init__(self) -> None:
        self.aborted = 0
        self.unknown_outcomes = 0
        self.errors: dict[str, int] = {}

    def failed(self, error: Exception, count: int = 1) -> None:
        if isinstance(error, OracleOutcomeUnknownError):
            self.unknown_outcomes += count
        kind = type(error).__name__
        self.errors[kind] = self.errors.get(kind, 0) + count

    def figures(self) -> dict[str, Any]:
        return {
            "aborted": self.aborted,
            "unknown_outcomes": self.unknown_outcomes,
            "errors": dict(sorted(self.errors.items())),
        }


def latency_figures(latencies: list[float]) -> dict[str, float | None]:
    latencies.sort()
    return {
        name: round(percentile(latencies, q) * 1e6, 1) if latencies else None
        for name, q in (("p50", 0.5), ("p90", 0.9), ("p99", 0.99), ("max", 1.0))
    }


async def run_bench(args: argparse.Namespace) -> dict[str, Any]:
    """Runs the load; returns calls, timestamps, seconds, throughput and latency percentiles."""
    if args.mode == "commit-batch":
        return await run_commit_batches(args)
    count = bench_count(args)
    bench_batch(args)
    if args.concurrency < 1 or args.requests < 1:
        raise config_module.ConfigError("--concurrency and --requests must be at least 1")
    if not args.duration > 0 or args.duration == float("inf"):
        raise config_module.ConfigError(
            f"--duration must be a finite number of seconds above 0, got {args.duration}"
        )
    latencies: list[float] = []
    issued = 0
    outcomes = Outcomes()
    until = Until(args.duration)
    progress = ProgressBar(args.requests, sys.stderr, not args.no_progress and sys.stderr.isatty())
    async with AsyncOracleClient(args.target, **client_kwargs(args)) as client:
        await client.status()  # fail fast, and open the connection outside the timing

        # Commit mode: ids unique to this run; every transaction reads and writes its own keys,
        # so all of them commit and the figure is the group commit's, not the conflict rate's.
        run_id = time.time_ns() & 0xFFFF_FFFF
        start = await client.get_timestamp() if args.mode == "commit" else None
        reads = max(args.keys // 2, 0)
        writes = max(args.keys - reads, 1)

        async def call() -> bool:
            """One call of the mode; whether it succeeded (a committed transaction)."""
            nonlocal issued, start
            issued += 1
            if args.mode == "merged":
                await client.get_timestamp()
            elif args.mode == "commit":
                assert start is not None
                txn_id = (run_id << 32) | issued
                keys = [b"%d/%d" % (txn_id, k) for k in range(reads + writes)]
                outcome = await client.commit(
                    Transaction(txn_id, start, keys[:reads], keys[reads:])
                )
                if isinstance(outcome, Aborted):
                    # Started under a leader that is gone: later transactions start anew.
                    outcomes.aborted += 1
                    start = await client.get_timestamp()
                    return False
            elif args.mode == "ranges":
                await client.get_timestamps(count)
            else:
                await client.get_timestamps_unary(count)
            return True

        async def caller() -> None:
            while issued < args.requests and until.running():
                started = time.perf_counter()
                try:
                    if not await call():
                        continue
                except OracleError as err:
                    # Counted apart, not as a latency; a commit whose connection was lost and
                    # whose retries ran out is neither committed nor failed as far as we know.
                    outcomes.failed(err)
                    continue
                latencies.append(time.perf_counter() - started)
                progress.update(len(latencies), begin)

        begin = time.perf_counter()
        await asyncio.gather(*(caller() for _ in range(args.concurrency)))
        elapsed = time.perf_counter() - begin
        progress.update(len(latencies), begin, force=True)
        progress.finish()
        batches = client.commit_batches if args.mode == "commit" else client.batches
    return {
        "mode": args.mode,
        "concurrency": args.concurrency,
        "calls": len(latencies),
        "timestamps": len(latencies) * count,
        "seconds": round(elapsed, 3),
        "calls_per_second": round(len(latencies) / elapsed),
        "timestamps_per_second": round(len(latencies) * count / elapsed),
        "merged_requests": batches,
        **outcomes.figures(),
        "latency_us": latency_figures(latencies),
    }


def restarted(batch: list[Transaction], start: Timestamp) -> list[Transaction]:
    """``batch`` with ``start`` as every transaction's start timestamp."""
    return [Transaction(t.txn_id, start, t.read_set, t.write_set) for t in batch]


async def run_commit_batches(args: argparse.Namespace) -> dict[str, Any]:
    """Commit-batch mode: ``--concurrency`` callers each sending ``commit_many`` of ``--batch``
    transactions (so that many messages in flight); latencies are per call."""
    batch = bench_batch(args)
    bench_count(args)
    latencies: list[float] = []
    batches_sent = 0
    transactions_done = 0
    outcomes = Outcomes()
    until = Until(args.duration)
    progress = ProgressBar(args.requests, sys.stderr, not args.no_progress and sys.stderr.isatty())
    async with AsyncOracleClient(args.target, **client_kwargs(args)) as client:
        await client.status()  # fail fast, and open the connection outside the timing
        start = await client.get_timestamp()
        transactions = bench_transactions(
            time.time_ns() & 0xFFFF_FFFF, start, args.requests, args.keys
        )
        batches = [transactions[i : i + batch] for i in range(0, len(transactions), batch)]
        batches.reverse()  # popped from the end, so sent in id order

        async def caller() -> None:
            nonlocal batches_sent, transactions_done, start
            while batches and until.running():
                sent = batches.pop()
                if sent[0].start_ts != start:  # built before a failover aborted their start
                    sent = restarted(sent, start)
                batches_sent += 1
                started = time.perf_counter()
                try:
                    results = await client.commit_many(sent)
                except OracleError as err:
                    outcomes.failed(err, len(sent))  # counted apart, not as a latency
                    continue
                latencies.append(time.perf_counter() - started)
                committed = 0
                for result in results:
                    if isinstance(result, Committed):
                        committed += 1
                    elif isinstance(result, Aborted):
                        outcomes.aborted += 1
                    else:
                        outcomes.failed(result)
                if committed < len(results) and sent[0].start_ts == start:
                    # Started under a leader that is gone: later batches start anew.
                    start = await client.get_timestamp()
                transactions_done += committed
                progress.update(transactions_done, begin)

        begin = time.perf_counter()
        await asyncio.gather(*(caller() for _ in range(args.concurrency)))
        elapsed = time.perf_counter() - begin
        progress.update(transactions_done, begin, force=True)
        progress.finish()
    return {
        "mode": args.mode,
        "concurrency": args.concurrency,
        "batch": batch,
        "calls": transactions_done,
        "batches": batches_sent,
        **outcomes.figures(),
        "seconds": round(elapsed, 3),
        "calls_per_second": round(transactions_done / elapsed),
        "latency_us": latency_figures(latencies),
    }


def print_outcomes(result: dict[str, Any]) -> None:
    unit = "transactions" if result["mode"].startswith("commit") else "calls"
    if unit == "transactions":
        print(
            f"{result['aborted']} transactions aborted (started under a previous leader); "
            f"{result['unknown_outcomes']} transactions with an unknown outcome (connection "
            "lost, retries spent; ask transaction_status for each)"
        )
    errors = result["errors"]
    if errors:
        kinds = ", ".join(f"{kind} {count}" for kind, count in errors.items())
        print(f"{sum(errors.values())} {unit} failed: {kinds}")


def run(args: argparse.Namespace) -> int:
    result = asyncio.run(run_bench(args))
    latency = result["latency_us"]
    if result["mode"] == "commit-batch":
        print(
            f"{result['calls']} committed transactions in {result['seconds']} s: "
            f"{result['calls_per_second']:,} commits/s "
            f"({result['batches']} commit_many calls of {result['batch']}, "
            f"{result['concurrency']} in flight)"
        )
        print_outcomes(result)
        print(
            f"latency us per call: p50 {latency['p50']}  p90 {latency['p90']}  "
            f"p99 {latency['p99']}  max {latency['max']}"
        )
        print(json.dumps(result))
        return EXIT_OK
    if result["mode"] == "commit":
        print(
            f"{result['calls']} committed transactions in {result['seconds']} s: "
            f"{result['calls_per_second']:,} commits/s "
            f"({result['merged_requests']} CommitStream messages)"
        )
    else:
        print(
            f"{result['calls']} calls ({result['timestamps']} timestamps) in "
            f"{result['seconds']} s: {result['calls_per_second']:,} calls/s, "
            f"{result['timestamps_per_second']:,} timestamps/s"
        )
    print_outcomes(result)
    print(
        f"latency us: p50 {latency['p50']}  p90 {latency['p90']}  p99 {latency['p99']}  "
        f"max {latency['max']}"
    )
    print(json.dumps(result))
    return EXIT_OK
