"""Interleaved same-run pairs: in-process ``GroupCommitScheduler.submit`` with 1024 concurrent
callers (``sync`` durability, 4,096 transactions a round) against the asyncio floor of
``bench/test_bench_commit.py`` (1024 coroutines awaiting one future each, resolved in batches),
alternating so that both see the same load; each round starts after a full collection (outside
the timed region), so that a round does not pay for a full collection the garbage of the rounds
before it triggers (one pair in seven did, on either side). Prints each pair's rates, process
CPU per transaction (and, for submit, the event loop's and the writer thread's, from
``/proc/self/task/*/schedstat``), the share of the floor, the median and the load average.

Usage: python -m bench.submit_pairs [PAIRS] [--durability sync|memory] [--profile]
       python -m bench.submit_pairs --only floor|submit [--rounds N] [--durability ...]

``--only`` runs N (1 to 7) rounds of one side after a warm-up round, untimed, with the
transactions of 8 rounds built before whatever N: for instruction counts, which the host's load
does not move. Per thread, the difference between two round counts is what the rounds cost, e.g.
for 1 and 4 rounds, divided by 3 x 4,096::

    valgrind --tool=callgrind --separate-threads=yes \
        python -m bench.submit_pairs --only submit --rounds 4 --durability memory
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import gc
import os
import pstats
import statistics
import tempfile
import threading
import time
from pathlib import Path

from hlc_oracle import Clock, CommitOptions, GroupCommitScheduler

from bench.support import submit_all
from bench.test_bench_commit import TXNS, await_resolved_in_batches, transactions

SUBMITTERS = 1024


def thread_cpu_ns(native_id: int) -> int:
    """CPU time of one thread of this process, in nanoseconds (the scheduler's own count: finer
    than the clock ticks of ``/proc/.../stat``)."""
    return int(Path(f"/proc/self/task/{native_id}/schedstat").read_text().split()[0])


def writer_thread_id(scheduler: GroupCommitScheduler) -> int:
    """The native id of the scheduler's writer thread (a bench may look inside)."""
    native_id = scheduler._thread.native_id
    assert native_id is not None  # started in the constructor
    return native_id


def floor_rate() -> tuple[float, float]:
    """Transactions per second, and process CPU microseconds per transaction."""
    gc.collect()
    cpu = time.process_time()
    started = time.perf_counter()
    asyncio.run(await_resolved_in_batches(TXNS, SUBMITTERS))
    seconds = time.perf_counter() - started
    return TXNS / seconds, (time.process_time() - cpu) / TXNS * 1e6


def submit_rate(
    scheduler: GroupCommitScheduler, writer: int, profile: cProfile.Profile | None
) -> tuple[float, float, float, float]:
    """Transactions per second, and CPU microseconds per transaction: the process's (both
    threads), the event loop's (this thread) and the writer thread's (``writer``, its id)."""
    txns = transactions(scheduler.clock, TXNS)
    loop = threading.get_native_id()
    gc.collect()
    cpu = time.process_time()
    loop_ns, writer_ns = thread_cpu_ns(loop), thread_cpu_ns(writer)
    started = time.perf_counter()
    if profile is not None:
        profile.enable()
    asyncio.run(submit_all(scheduler, txns, SUBMITTERS))
    if profile is not None:
        profile.disable()
    seconds = time.perf_counter() - started
    return (
        TXNS / seconds,
        (time.process_time() - cpu) / TXNS * 1e6,
        (thread_cpu_ns(loop) - loop_ns) / TXNS / 1e3,
        (thread_cpu_ns(writer) - writer_ns) / TXNS / 1e3,
    )


#: Rounds of transactions ``--only`` builds whatever the round count, so that two counts'
#: difference holds no building.
BUILT_ROUNDS = 8


def rounds_of_one_side(side: str, rounds: int, durability: str) -> None:
    """``rounds`` rounds of the floor or of submit after a warm-up round, nothing timed."""
    if not 1 <= rounds < BUILT_ROUNDS:
        raise SystemExit(f"--rounds must be in 1..{BUILT_ROUNDS - 1}, got {rounds}")
    with tempfile.TemporaryDirectory() as tmp:
        path = None if durability == "memory" else Path(tmp) / "log"
        options = CommitOptions(durability=durability)
        with GroupCommitScheduler(path, Clock(node=1), options) as scheduler:
            batches = [transactions(scheduler.clock, TXNS) for _ in range(BUILT_ROUNDS)]
            for txns in batches[: rounds + 1]:
                if side == "floor":
                    asyncio.run(await_resolved_in_batches(TXNS, SUBMITTERS))
                else:
                    asyncio.run(submit_all(scheduler, txns, SUBMITTERS))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("pairs", type=int, nargs="?", default=9)
    parser.add_argument("--durability", default="sync", choices=["sync", "memory"])
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--only", choices=["floor", "submit"])
    parser.add_argument("--rounds", type=int, default=4)
    args = parser.parse_args()
    if args.only is not None:
        rounds_of_one_side(args.only, args.rounds, args.durability)
        return
    profile = cProfile.Profile() if args.profile else None
    shares: list[float] = []
    cpu_shares: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        path = None if args.durability == "memory" else Path(tmp) / "log"
        options = CommitOptions(durability=args.durability)
        with GroupCommitScheduler(path, Clock(node=1), options) as scheduler:
            writer = writer_thread_id(scheduler)
            submit_rate(scheduler, writer, None)  # warm-up
            floor_rate()
            for pair in range(args.pairs):
                floor, floor_cpu = floor_rate()
                submit, submit_cpu, loop_cpu, writer_cpu = submit_rate(scheduler, writer, profile)
                shares.append(submit / floor)
                cpu_shares.append(floor_cpu / submit_cpu)
                print(
                    f"pair {pair}: floor {floor:,.0f}/s ({floor_cpu:.1f} us CPU) "
                    f"submit {submit:,.0f}/s ({submit_cpu:.1f} us CPU: loop {loop_cpu:.1f}, "
                    f"writer {writer_cpu:.1f}) share {submit / floor:.0%}, by CPU "
                    f"{floor_cpu / submit_cpu:.0%} load {os.getloadavg()[0]:.2f}"
                )
    for name, values in (("share of the floor", shares), ("by CPU", cpu_shares)):
        print(
            f"{name}: median {statistics.median(values):.0%}, "
            f"min {min(values):.0%}, max {max(values):.0%}"
        )
    if profile is not None:
        pstats.Stats(profile).sort_stats("tottime").print_stats(20)


if __name__ == "__main__":
    main()
