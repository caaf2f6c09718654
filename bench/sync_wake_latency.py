"""One batch at a time through ``LocalDurableStep`` (``sync`` durability, pipelined syncs): the
time from ``decide`` to the batch's answer, and that time minus the batch's own ``fdatasync``
(from ``CommitEngine.sync_timings``): what the hand-over to the sync thread and back costs.
``--busy`` runs a second thread that spins in Python meanwhile, holding the GIL. Compare two
builds by running this once with each on ``PYTHONPATH`` (alternating).

Usage: python -m bench.sync_wake_latency [BATCHES] [--busy]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import threading
import time

from hlc_oracle import Clock, CommitOptions, Transaction
from hlc_oracle.durable import LocalDurableStep, Request


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("batches", type=int, nargs="?", default=300)
    parser.add_argument("--busy", action="store_true", help="another thread spins in Python")
    args = parser.parse_args()
    step = LocalDurableStep()
    clock = Clock(node=1)
    with tempfile.TemporaryDirectory(prefix="sync-wake-") as data:
        engine = step.open_engine(data, clock, CommitOptions())
        stop = threading.Event()

        def spin() -> None:
            while not stop.is_set():
                sum(range(200))

        spinner = threading.Thread(target=spin, daemon=True)
        if args.busy:
            spinner.start()
        answered = threading.Event()
        round_trips: list[float] = []
        beyond_sync: list[float] = []
        synced_ns = 0
        try:
            for batch in range(args.batches):
                txns: list[Request] = [
                    Transaction(batch * 100 + i + 1, clock.now(), [], [b"k%d" % (batch * 100 + i)])
                    for i in range(100)
                ]
                answered.clear()
                started = time.perf_counter()
                step.decide(engine, [txns], lambda _answers: answered.set())
                answered.wait()
                took = time.perf_counter() - started
                timings = engine.sync_timings()
                total_ns = timings[1] if timings is not None else 0
                round_trips.append(took)
                beyond_sync.append(took - (total_ns - synced_ns) / 1e9)
                synced_ns = total_ns
        finally:
            stop.set()
            step.drain(engine, 5.0)
            engine.close()
    p95 = statistics.quantiles(beyond_sync, n=20)[18]
    print(
        f"busy={args.busy} load {os.getloadavg()[0]:.2f}: round trip median "
        f"{statistics.median(round_trips) * 1e3:.3f} ms; minus its fdatasync median "
        f"{statistics.median(beyond_sync) * 1e3:.3f} ms, p95 {p95 * 1e3:.3f} ms"
    )


if __name__ == "__main__":
    main()
