"""What the decision log costs etcd, and how long a new leader takes to load it.

- ``decision bytes in etcd``: in process, the scheduler on the etcd decision log (one member,
  pieces of the default 1 MiB cap), fed like a clustered leader at full rate: 8 ``submit_many``
  groups of 1,000 in flight, the transactions of ``hlc-oracle bench --mode commit-batch`` (8 keys,
  half read, ids ``run << 32 | n``). Figures: the growth of etcd's database file (``dbSize``,
  what its quota counts) and of its part in use, per decision, and the piece bytes per decision.
  Nothing is trimmed during the run (retention is longer than it).
- ``takeover with a decision history``: two nodes on one etcd member; 10,000, 300,000 or
  2,000,000 decisions committed through the leader (commit_many of 1,000, 8 in flight); the
  leader killed (kill -9). From the next leader's log: ``won the election`` to ``leading`` (it
  serves), and the background load of the history (``decisions recovered``: seconds).
- ``a new leader's history load``: in process on one etcd member, 1,000,000 decisions in pieces
  of 20 (a ``commit()`` load's batches) or of 1,000, written straight into etcd under one term;
  a second term's promotion, then the seconds from serving to the history loaded, and decisions
  replayed per second; alone, or while the new leader decides fresh commits (8 ``submit_many``
  of 20 in flight, in the same process: the event loop and the GIL shared, as a node serves).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import itertools
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hlc_oracle import (
    MAX_LOGICAL,
    MAX_NODE,
    Clock,
    CommitEngine,
    CommitOptions,
    Committed,
    GroupCommitScheduler,
    Timestamp,
    Transaction,
)
from hlc_oracle.cli.bench import bench_transactions
from hlc_oracle.client import AsyncOracleClient
from hlc_oracle.cluster.decisions import DecisionLog, decision_key
from hlc_oracle.cluster.etcd import EtcdClient, compare_create_revision, put
from hlc_oracle.cluster.fence import Fence, Term
from hlc_oracle.durable import ExternalDurableStep

from tests.support.decision_leader import clustered_group_commit
from tests.support.etcd_process import EtcdMember
from tests.support.oracle_cluster import OracleCluster

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


# --- takeover with a decision history ----------------------------------------------------------

HISTORY_SIZES = (10_000, 300_000, 2_000_000)
SMOKE_HISTORY = 2_000


def log_events(text: str) -> list[dict[str, Any]]:
    events = []
    for line in text.splitlines():
        with contextlib.suppress(ValueError):
            events.append(json.loads(line))
    return events


def event_time(event: dict[str, Any]) -> float:
    return datetime.datetime.fromisoformat(event["ts"].replace("Z", "+00:00")).timestamp()


async def commit_history(targets: list[str], count: int) -> None:
    """``count`` fresh commits through the leader, 8 commit_many calls of 1,000 in flight."""
    run_id = time.time_ns() & 0xFFFF_FFFF
    async with AsyncOracleClient(targets) as client:
        sent = itertools.count(0, GROUP)

        async def sender() -> None:
            while (first := next(sent)) < count:
                start = await client.get_timestamp()
                group = [
                    Transaction((run_id << 32) | n, start, [], [b"%d" % n])
                    for n in range(first + 1, min(first + GROUP, count) + 1)
                ]
                results = await client.commit_many(group)
                assert all(isinstance(r, Committed) for r in results), results[0]

        await asyncio.gather(*(sender() for _ in range(IN_FLIGHT)))


def takeover_after_kill(directory: Path, count: int) -> dict[str, Any]:
    """Two nodes on one etcd member; ``count`` decisions committed; the leader killed: from the
    next leader's log, won the election -> serving ("leading") -> history loaded."""
    with (
        EtcdMember(directory / "etcd") as etcd,
        OracleCluster(directory, etcd.endpoint, size=2, lease_ttl_s=1) as cluster,
    ):
        leader = cluster.wait_for_leader()
        asyncio.run(commit_history(cluster.targets, count))
        leader_id = cluster.nodes.index(leader) + 1
        leader.kill()
        successor = cluster.wait_for_leader(other_than=leader_id, timeout_s=60)
        deadline = time.monotonic() + 120
        while True:
            events = log_events(successor.log_text())
            won = [e for e in events if e.get("message") == "won the election"]
            leading = [e for e in events if e.get("message") == "leading"]
            loaded = [e for e in events if e.get("message") == "decisions recovered"]
            if won and leading and loaded:
                break
            assert time.monotonic() < deadline, "the next leader never loaded its history"
            time.sleep(0.1)
    return {
        "decisions": count,
        "won_to_serving_ms": round((event_time(leading[-1]) - event_time(won[-1])) * 1e3, 1),
        "history_load_s": loaded[-1].get("seconds"),
        "history_commits": loaded[-1].get("commits"),
    }


@pytest.mark.parametrize("count", HISTORY_SIZES)
def test_takeover_with_a_decision_history(benchmark: Any, tmp_path: Path, count: int) -> None:
    benchmark.group = "takeover with a decision history"
    if benchmark.disabled and count != HISTORY_SIZES[0]:
        pytest.skip("one size is enough for the smoke run")
    size = SMOKE_HISTORY if benchmark.disabled else count
    figures: dict[str, Any] = {}
    benchmark.pedantic(
        lambda: figures.update(takeover_after_kill(tmp_path, size)), rounds=1, iterations=1
    )
    benchmark.extra_info.update(figures)


# --- a new leader's history load ---------------------------------------------------------------

LOADED_DECISIONS = 1_000_000
SMOKE_LOADED_DECISIONS = 4_000
#: Decisions per piece: a commit() load's small batches, and commit_many(1,000)'s.
PIECE_SIZES = (20, 1_000)


def history_pieces(count: int, per_piece: int) -> tuple[int, list[tuple[int, bytes]]]:
    """An earlier leader's pieces of ``count`` fresh commits, ``per_piece`` a batch, made by an
    engine in process; and a window limit above them."""
    clock = Clock(node=1)
    engine = CommitEngine(None, clock, durability="external")
    pieces: list[tuple[int, bytes]] = []
    for first in range(1, count + 1, per_piece):
        start = clock.now()
        ids = range(first, min(first + per_piece, count + 1))
        ticket, written, _ = engine.decide([Transaction(i, start, [], [b"%d" % i]) for i in ids])
        engine.confirm(ticket)
        pieces.extend(written)
    return clock.last().physical + 1_000, pieces


async def fresh_commits(
    scheduler: GroupCommitScheduler, clock: Clock, first_id: int, stop: asyncio.Event
) -> int:
    """8 callers of ``submit_many`` of 20 fresh transactions until ``stop``: the decisions."""
    ids = itertools.count(first_id)
    decided = 0

    async def caller() -> None:
        nonlocal decided
        while not stop.is_set():
            start = clock.now()
            group = [Transaction(i, start, [], [b"f%d" % i]) for i in itertools.islice(ids, 20)]
            results = await scheduler.submit_many(group)
            assert all(isinstance(r, Committed) for r in results), results[0]
            decided += len(group)

    await asyncio.gather(*(caller() for _ in range(IN_FLIGHT)))
    return decided


async def load_history(
    endpoint: str, count: int, per_piece: int, beside: bool = False
) -> dict[str, Any]:
    """The pieces written straight into etcd (100 keys a txn) under one term, then a second
    term's promotion: seconds from ``promote`` returning (serving) to the history loaded;
    ``beside``: with fresh commits decided meanwhile (:func:`fresh_commits`), as a new leader
    serves its clients."""
    client = EtcdClient([endpoint], timeout_s=5.0)
    prefix = f"/hlc-oracle/history-{next(RUNS)}/"
    leader_key = f"{prefix}leader".encode()
    try:
        first = await leader_log(client, prefix)
        window_limit, pieces = history_pieces(count, per_piece)
        for i in range(0, len(pieces), 100):
            chunk = pieces[i : i + 100]
            await client.txn(
                [], [put(decision_key(prefix, first.epoch, seq), data) for seq, data in chunk]
            )
        await client.delete(leader_key)
        taken = await client.txn([compare_create_revision(leader_key, 0)], [put(leader_key, b"c")])
        fence = Fence(client, Term(leader_key, b"c", taken.revision))
        clock = Clock(node=2, floor=Timestamp(window_limit, MAX_LOGICAL, MAX_NODE))
        group_commit, installed, _ = clustered_group_commit(client, clock, prefix)
        await group_commit.promote(fence, window_limit)
        started = time.perf_counter()
        stop = asyncio.Event()
        scheduler = installed[-1]
        assert scheduler is not None
        load = asyncio.ensure_future(
            fresh_commits(scheduler, clock, count + 1, stop) if beside else asyncio.sleep(0, 0)
        )
        while group_commit.history_loading:
            assert time.perf_counter() - started < 300, "the history never loaded"
            await asyncio.sleep(0.002)
        seconds = time.perf_counter() - started
        stop.set()
        fresh = await load
        await group_commit.close()
    finally:
        await client.close()
    return {
        "pieces": len(pieces),
        "history_load_s": round(seconds, 3),
        "decisions_per_second": round(count / seconds),
        "fresh_decided_per_second": round(fresh / seconds),
    }


@pytest.mark.parametrize("beside", [False, True], ids=["alone", "serving"])
@pytest.mark.parametrize("per_piece", PIECE_SIZES)
def test_a_new_leaders_history_load(
    benchmark: Any, capacity_etcd: EtcdMember, per_piece: int, beside: bool
) -> None:
    """The history load's speed (``history_load_s``, from serving), alone or beside fresh
    commits (``fresh_decided_per_second``)."""
    benchmark.group = "a new leader's history load"
    count = SMOKE_LOADED_DECISIONS if benchmark.disabled else LOADED_DECISIONS
    figures: dict[str, Any] = {}

    def body() -> None:
        figures.update(asyncio.run(load_history(capacity_etcd.endpoint, count, per_piece, beside)))

    benchmark.pedantic(body, rounds=1, iterations=1)
    benchmark.extra_info.update(figures)
    benchmark.extra_info["decisions"] = count
