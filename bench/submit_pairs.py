"""Interleaved same-run pairs: in-process ``GroupCommitScheduler.submit`` with 1024 concurrent
callers (``sync`` durability, 4,096 transactions a round) against the asyncio floor of
``bench/test_bench_commit.py`` (1024 coroutines awaiting one future each, resolved in batches),
alternating so that both see the same load. Prints each pair's rates, the share of the floor, the
median and the load average.

Usage: python -m bench.submit_pairs [PAIRS] [--durability sync|memory] [--profile]
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import os
import pstats
import statistics
import tempfile
import time
from pathlib import Path

from hlc_oracle import Clock, CommitOptions, GroupCommitScheduler

from bench.support import submit_all
from bench.test_bench_commit import TXNS, await_resolved_in_batches, transactions

SUBMITTERS = 1024


def floor_rate() -> tuple[float, float]:
    """Transactions per second, and process CPU microseconds per transaction."""
    cpu = time.process_time()
    started = time.perf_counter()
    asyncio.run(await_resolved_in_batches(TXNS, SUBMITTERS))
    seconds = time.perf_counter() - started
    return TXNS / seconds, (time.process_time() - cpu) / TXNS * 1e6


def submit_rate(
    scheduler: GroupCommitScheduler, profile: cProfile.Profile | None
) -> tuple[float, float]:
    """Transactions per second, and process CPU microseconds per transaction (both threads)."""
    txns = transactions(scheduler.clock, TXNS)
    cpu = time.process_time()
    started = time.perf_counter()
    if profile is not None:
        profile.enable()
    asyncio.run(submit_all(scheduler, txns, SUBMITTERS))
    if profile is not None:
        profile.disable()
    seconds = time.perf_counter() - started
    return TXNS / seconds, (time.process_time() - cpu) / TXNS * 1e6


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("pairs", type=int, nargs="?", default=9)
    parser.add_argument("--durability", default="sync", choices=["sync", "memory"])
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()
    profile = cProfile.Profile() if args.profile else None
    shares: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        path = None if args.durability == "memory" else Path(tmp) / "log"
        options = CommitOptions(durability=args.durability)
        with GroupCommitScheduler(path, Clock(node=1), options) as scheduler:
            submit_rate(scheduler, None)  # warm-up
            floor_rate()
            for pair in range(args.pairs):
                floor, floor_cpu = floor_rate()
                submit, submit_cpu = submit_rate(scheduler, profile)
                shares.append(submit / floor)
                print(
                    f"pair {pair}: floor {floor:,.0f}/s ({floor_cpu:.1f} us CPU) "
                    f"submit {submit:,.0f}/s ({submit_cpu:.1f} us CPU) "
                    f"share {submit / floor:.0%} load {os.getloadavg()[0]:.2f}"
                )
    print(
        f"share of the floor: median {statistics.median(shares):.0%}, "
        f"min {min(shares):.0%}, max {max(shares):.0%}"
    )
    if profile is not None:
        pstats.Stats(profile).sort_stats("tottime").print_stats(20)


if __name__ == "__main__":
    main()
