"""What a program holding many of the extension's objects pays the cyclic collector: builds N live
transactions (a ``Timestamp`` and a ``Committed`` answer each, as a client keeps them, in two lists:
a tuple holding a GC-type object stays tracked even when that object is not), timing the build's
process CPU (the collections it meets included), then times full ``gc.collect()`` calls with all
of them alive. Prints the load average beside the figures.

Usage: python -m bench.live_objects_gc [N] [--collections K]
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import time

from hlc_oracle import Committed, Timestamp, Transaction


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("n", type=int, nargs="?", default=1_000_000)
    parser.add_argument("--collections", type=int, default=5)
    args = parser.parse_args()
    gc.collect()
    collections_before = sum(s["collections"] for s in gc.get_stats())
    cpu = time.process_time()
    txns, answers = [], []
    for i in range(args.n):
        start = Timestamp(1_700_000_000_000_000, i % 1000, 1)
        txns.append(Transaction(i, start, [b"r%d" % (i % 64)], [b"w"]))
        answers.append(Committed(i, start))
    build_us = (time.process_time() - cpu) / args.n * 1e6
    collections = sum(s["collections"] for s in gc.get_stats()) - collections_before
    full = []
    for _ in range(args.collections):
        started = time.perf_counter()
        gc.collect()
        full.append((time.perf_counter() - started) * 1e3)
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    print(
        f"{args.n:,} live transactions: build {build_us:.3f} us CPU each ({collections} "
        f"collections met); full gc.collect() median {statistics.median(full):.1f} ms "
        f"(min {min(full):.1f}); tracked objects {len(gc.get_objects()):,}; load {load}"
    )
    assert len(txns) == len(answers) == args.n


if __name__ == "__main__":
    main()
