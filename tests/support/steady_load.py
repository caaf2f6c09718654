"""Steady commit load beside timestamp calls, against one node, and what it saw.

``run_steady_load(target, seconds)`` keeps ``calls_in_flight`` ``commit_many`` calls of
``per_call`` fresh transactions in flight from one asyncio client (each call's start timestamp
taken just before it), while a thread beside it takes one timestamp every 50 ms (and, on a
clustered node, reads the status every second for the epoch). Used by the clustered-load
regression test and benchmark: a leader that freezes under load shows slow timestamp calls, a
second epoch, or refused batches.
"""

from __future__ import annotations

import asyncio
import itertools
import statistics
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from hlc_oracle import Aborted, Committed, Timestamp, Transaction
from hlc_oracle.client import AsyncOracleClient, OracleClient

TIMESTAMP_EVERY_S = 0.05
STATUS_EVERY_S = 1.0
#: Client deadlines far past the lease TTL: a frozen leader shows as a slow call, not a timeout.
CLIENT_TIMEOUT_S = 30.0
KEYS = 4
#: Pause after a failed call before the next (a node that refuses at once must not spin this).
ERROR_PAUSE_S = 0.05
IDS = itertools.count(1)


@dataclass
class LoadFigures:
    seconds: float = 0.0
    decided: int = 0
    batches: int = 0
    #: Batches that raised, and transactions answered with an error instead of a decision.
    batch_errors: list[str] = field(default_factory=list)
    refused: int = 0
    timestamp_latencies: list[float] = field(default_factory=list)
    timestamp_errors: list[str] = field(default_factory=list)
    epochs: set[int] = field(default_factory=set)

    def summary(self) -> dict[str, Any]:
        latencies = self.timestamp_latencies
        return {
            "per_second": round(self.decided / self.seconds) if self.seconds else 0,
            "decided": self.decided,
            "batches": self.batches,
            "batch_errors": len(self.batch_errors),
            "first_batch_errors": self.batch_errors[:3],
            "refused": self.refused,
            "timestamp_calls": len(latencies),
            "timestamp_errors": len(self.timestamp_errors),
            "timestamp_p50_ms": round(statistics.median(latencies) * 1e3, 2) if latencies else 0,
            "timestamp_p99_ms": (
                round(statistics.quantiles(latencies, n=100, method="inclusive")[98] * 1e3, 2)
                if len(latencies) > 1
                else 0
            ),
            "timestamp_max_ms": round(max(latencies, default=0.0) * 1e3, 2),
            "epochs": sorted(self.epochs),
        }


def fresh_transactions(start: Timestamp, count: int) -> list[Transaction]:
    made = []
    for _ in range(count):
        txn_id = next(IDS)
        keys = [b"l%d/%d" % (txn_id, k) for k in range(KEYS)]
        made.append(Transaction(txn_id, start, keys[: KEYS // 2], keys[KEYS // 2 :]))
    return made


def timestamps_beside(target: str, until: float, figures: LoadFigures, clustered: bool) -> None:
    """One timestamp every 50 ms (and a status every second) until ``until``."""
    with OracleClient(target, timeout=CLIENT_TIMEOUT_S) as client:
        next_status = 0.0
        while (now := time.monotonic()) < until:
            began = time.perf_counter()
            try:
                client.get_timestamp()
            except Exception as err:
                figures.timestamp_errors.append(f"{type(err).__name__}: {err}")
            figures.timestamp_latencies.append(time.perf_counter() - began)
            if clustered and now >= next_status:
                next_status = now + STATUS_EVERY_S
                try:
                    figures.epochs.add(client.status().epoch)
                except Exception as err:
                    figures.timestamp_errors.append(f"status: {type(err).__name__}: {err}")
            time.sleep(max(0.0, began + TIMESTAMP_EVERY_S - time.perf_counter()))


async def commits_in_flight(
    target: str, until: float, figures: LoadFigures, calls_in_flight: int, per_call: int
) -> None:
    async with AsyncOracleClient(target, timeout=CLIENT_TIMEOUT_S) as client:

        async def caller() -> None:
            while time.monotonic() < until:
                try:
                    start = await client.get_timestamp()
                    answers = await client.commit_many(fresh_transactions(start, per_call))
                except Exception as err:
                    figures.batch_errors.append(f"{type(err).__name__}: {err}")
                    await asyncio.sleep(ERROR_PAUSE_S)
                    continue
                figures.batches += 1
                decided = sum(isinstance(a, Committed | Aborted) for a in answers)
                figures.decided += decided
                if decided != len(answers):
                    figures.refused += len(answers) - decided
                    figures.batch_errors.append(
                        next(
                            f"{type(a).__name__}: {a}" for a in answers if isinstance(a, Exception)
                        )
                    )

        await asyncio.gather(*(caller() for _ in range(calls_in_flight)))


def run_steady_load(
    target: str,
    seconds: float,
    *,
    clustered: bool,
    calls_in_flight: int = 8,
    per_call: int = 1_000,
    into: LoadFigures | None = None,
) -> LoadFigures:
    """Runs the load on ``target`` for ``seconds`` (plus the last calls' answers); the figures
    are added to ``into`` when given (a run in several slices)."""
    figures = into if into is not None else LoadFigures()
    started = time.monotonic()
    until = started + seconds
    beside = threading.Thread(
        target=timestamps_beside, args=(target, until, figures, clustered), daemon=True
    )
    beside.start()
    asyncio.run(commits_in_flight(target, until, figures, calls_in_flight, per_call))
    figures.seconds += time.monotonic() - started
    beside.join(CLIENT_TIMEOUT_S + 5)
    return figures
