"""What the decision log costs etcd, and how long a new leader takes to load it.

- ``decision bytes in etcd``: in process, the scheduler on the etcd decision log (one member,
  pieces of the default 1 MiB cap), fed like a clustered leader at full rate: 8 ``submit_many``
  groups of 1,000 in flight, the transactions of ``hlc-oracle bench --mode commit-batch`` (8 keys,
  half read, ids ``run << 32 | n``). Figures: the growth of etcd's database file (``dbSize``,
  what its quota counts) and of its part in use, per decision, and the piece bytes per decision.
  Nothing is trimmed during the run (retention is longer than it).
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Iterator
from typing import Any

import pytest
from hlc_oracle import Clock, CommitOptions, GroupCommitScheduler
from hlc_oracle.cli.bench import bench_transactions
from hlc_oracle.cluster.decisions import DecisionLog
from hlc_oracle.cluster.etcd import EtcdClient, compare_create_revision, put
from hlc_oracle.cluster.fence import Fence, Term
from hlc_oracle.durable import ExternalDurableStep

from tests.etcd_process import EtcdMember

GROUP, IN_FLIGHT, KEYS = 1_000, 8, 8
DECISIONS = 300_000
SMOKE_DECISIONS = 16_000
RUNS = itertools.count(1)


@pytest.fixture(scope="module")
def capacity_etcd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EtcdMember]:
    with EtcdMember(tmp_path_factory.mktemp("capacity") / "etcd") as member:
        yield member


async def leader_log(client: EtcdClient, prefix: str) -> DecisionLog:
    leader_key = f"{prefix}leader".encode()
    taken = await client.txn([compare_create_revision(leader_key, 0)], [put(leader_key, b"b")])
    return DecisionLog(client, prefix, Fence(client, Term(leader_key, b"b", taken.revision)))


async def decide_at_full_rate(endpoint: str, count: int) -> dict[str, Any]:
    """Decides ``count`` transactions through etcd; the database's growth per decision."""
    client = EtcdClient([endpoint], timeout_s=5.0)
    log = await leader_log(client, f"/hlc-oracle/capacity-{next(RUNS)}/")
    written: list[int] = []

    async def store(seq: int, data: bytes) -> None:
        await log.write(seq, data)
        written.append(len(data))

    step = ExternalDurableStep(store, asyncio.get_running_loop(), max_in_flight=4)
    scheduler = GroupCommitScheduler(
        None, Clock(node=9), CommitOptions(max_batch_size=8192), durable_step=step
    )
    try:
        run_id = time.time_ns() & 0xFFFF_FFFF  # as the CLI picks it
        txns = bench_transactions(run_id, scheduler.clock.now(), count, KEYS)
        groups = [txns[i : i + GROUP] for i in range(0, count, GROUP)]
        before = await client.db_size()
        started = time.perf_counter()

        async def sender() -> None:
            while groups:
                await scheduler.submit_many(groups.pop())

        await asyncio.gather(*(sender() for _ in range(IN_FLIGHT)))
        seconds = time.perf_counter() - started
        after = await client.db_size()
    finally:
        await scheduler.aclose()
        await client.close()
    return {
        "per_second": round(count / seconds),
        "db_bytes_per_decision": round((after.total - before.total) / count, 1),
        "in_use_bytes_per_decision": round((after.in_use - before.in_use) / count, 1),
        "piece_bytes_per_decision": round(sum(written) / count, 1),
        "pieces": len(written),
    }


def test_decision_bytes_in_etcd(benchmark: Any, capacity_etcd: EtcdMember) -> None:
    benchmark.group = "decision bytes in etcd"
    count = SMOKE_DECISIONS if benchmark.disabled else DECISIONS
    figures: dict[str, Any] = {}

    def body() -> None:
        figures.update(asyncio.run(decide_at_full_rate(capacity_etcd.endpoint, count)))

    benchmark.pedantic(body, rounds=1, iterations=1)
    benchmark.extra_info.update(figures)
    benchmark.extra_info["decisions"] = count
