"""Group commit in clustered mode: decisions written to etcd, one fenced txn per piece.

- ``cluster commit 256 callers``: ``AsyncOracleClient.commit()`` from 256 concurrent callers (8
  keys per transaction, no conflicts), the same as ``commit grpc 256 callers`` in
  ``test_bench_commit.py``: a standalone node with its local commit log in ``sync`` durability
  (the baseline), a clustered leader (a one-node cluster) on one etcd member, on a three-member
  etcd in memory (``tests/support/etcd_process.py``), and on three members with their data on
  disk. Every etcd member runs on this machine with ``--election-timeout 100``.
- ``cluster commit latency c=1``: one caller committing back to back; p50 and p99 per mode.
- ``cluster commit after kill -9``: three nodes on one etcd member, lease TTL 1 s, commit load from
  four threads given all three targets (``tests/support/grpc_commit_load.py``'s
  ``GrpcCommitLoad``); per round, milliseconds from the leader's kill -9 to the first commit
  acknowledged after it by another node (its commit timestamp's node id). Figures, not timings:
  the benchmark's own time is one pass.
- ``cluster failover under commit load``: three nodes on one etcd member, lease TTL 3 s (the
  default; neither gap waits for it), ``retained`` decisions committed first (10,000 / 300,000 /
  2,000,000, kept in etcd by the default retention); then the client library's commit load
  (``tests/support/client_commit_load.py``: eight ``commit()`` callers, two
  ``commit_many(100)`` callers and a ``commit_unary()``/``abort()`` caller, one client given all
  three targets) through 10 graceful handovers (SIGTERM of the leader) and 10 kill -9 of the
  leader. A round's gap, measured by the client as ``cluster failover`` does for timestamps:
  the longest time between two consecutive answered commit calls from the last answer before
  the event to well after the next leader's first fresh commit, i.e. the old leader's last
  answer to the next leader's first (node by node is not possible: a resubmitted id the next
  leader answers keeps the commit timestamp, and node id, of the leader that decided it).
  Beside it, new work: a client of its own starting a fresh ``commit()`` every 10 ms whatever
  the earlier ones wait for (``fresh`` gaps: the next leader's first answer to new work).
  ``extra_info`` holds every gap, each next leader's takeover from its log ("won the election"
  to "leading"), the seconds its decision history took to load behind it and the decisions
  replayed, and the failed commit calls by error kind (an unknown outcome counted per
  transaction; the target is none but ``OracleOutcomeUnknownError``). A round in which
  leadership had moved on its own before the event (``moved_before_event``: a starved host) is
  run again; a next leader whose term ended before its history was in has no takeover figure
  (``term_ended_before_history``). ``error_samples``: the first distinct failed calls.
  ``<event>_rounds``: where each round's gap went (``round_breakdown``: the answers around it,
  the node logs' records and the client's pauses, in ms from the event).
  ``HLC_BENCH_FAILOVER_ROUNDS`` runs fewer rounds (a short look).
  Figures, not timings: the benchmark's own time is one pass.
- ``cluster decision piece size``: in process, the scheduler on the etcd decision log (one
  member) with pieces capped at 16 KiB to 1 MiB, 2048 submitters: decided transactions/s.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import datetime
import gc
import itertools
import json
import logging
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hlc_oracle import (
    Aborted,
    Clock,
    CommitOptions,
    Committed,
    GroupCommitScheduler,
    Transaction,
)
from hlc_oracle.client import AsyncOracleClient
from hlc_oracle.cluster.decisions import DecisionLog
from hlc_oracle.cluster.etcd import EtcdClient, compare_create_revision, put
from hlc_oracle.cluster.fence import Fence, Term
from hlc_oracle.durable import ExternalDurableStep

from bench.support import (
    IDS,
    bench_for,
    measure_commit_rounds,
    percentile,
    record_gaps,
    submit_all,
    transaction_of_keys,
)
from tests.support.client_commit_load import ClientCommitLoad
from tests.support.etcd_process import EtcdCluster, EtcdMember
from tests.support.grpc_commit_load import GrpcCommitLoad
from tests.support.oracle_cluster import LeaderClient, OracleCluster
from tests.support.oracle_process import OracleProcess

CALLERS, PER_CALLER = 256, 20
#: The standalone baseline; a one-node cluster on one etcd member, on three (in memory), and on
#: three keeping their data on disk (etcd's own fsyncs included).
MODES = ["standalone", "etcd1", "etcd3", "etcd3-disk"]
LATENCY_COMMITS = 300
KILL_ROUNDS = 10
PIECE_BYTES = (16 << 10, 64 << 10, 256 << 10, 1 << 20)
PIECE_TXNS, PIECE_SUBMITTERS = 20_000, 2048


@pytest.fixture(scope="module")
def commit_targets(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """A standalone node, a one-node cluster on one etcd member, one on three members."""
    directory = tmp_path_factory.mktemp("cluster-commit")
    with (
        EtcdMember(directory / "etcd1") as etcd1,
        EtcdCluster(directory / "etcd3") as etcd3,
        EtcdCluster(directory / "etcd3-disk", on_disk=True) as etcd3_disk,
        OracleProcess(directory / "standalone") as standalone,
        OracleCluster(directory / "on-etcd1", etcd1.endpoint, size=1, lease_ttl_s=3) as one,
        OracleCluster(directory / "on-etcd3", etcd3.endpoints_flag, size=1, lease_ttl_s=3) as three,
        OracleCluster(
            directory / "on-etcd3-disk", etcd3_disk.endpoints_flag, size=1, lease_ttl_s=3
        ) as three_on_disk,
    ):
        yield {
            "standalone": standalone.target,
            "etcd1": one.wait_for_leader().target,
            "etcd3": three.wait_for_leader().target,
            "etcd3-disk": three_on_disk.wait_for_leader().target,
        }


@pytest.mark.parametrize("mode", MODES)
def test_commit_256_callers(
    request: pytest.FixtureRequest, commit_targets: dict[str, str], mode: str
) -> None:
    bench = bench_for(request, mode == "standalone")
    bench.group = "cluster commit 256 callers"
    # The smoke run (make test) only checks that the path works: a short burst.
    callers, per_caller = (32, 2) if bench.disabled else (CALLERS, PER_CALLER)
    measure_commit_rounds(bench, commit_targets[mode], callers, per_caller)


@pytest.mark.parametrize("mode", MODES)
def test_commit_latency_one_caller(
    request: pytest.FixtureRequest, commit_targets: dict[str, str], mode: str
) -> None:
    bench = bench_for(request, mode == "standalone")
    bench.group = "cluster commit latency c=1"
    commits = 20 if bench.disabled else LATENCY_COMMITS
    latencies = measure_commit_rounds(bench, commit_targets[mode], 1, commits, rounds=1)
    bench.extra_info["p99_ms"] = round(percentile(latencies, 0.99) * 1e3, 2)


def first_commit_gaps(directory: Path, etcd: EtcdMember, rounds: int) -> list[float]:
    """Milliseconds from each kill -9 of the leader to the first commit acknowledged after it."""
    gaps: list[float] = []
    with OracleCluster(directory, etcd.endpoint, lease_ttl_s=1) as cluster:
        client = LeaderClient(cluster.targets)
        commits = GrpcCommitLoad(client)
        try:
            with commits.running():
                for _ in range(rounds):
                    leader = cluster.wait_for_leader()
                    leader_id = cluster.nodes.index(leader) + 1
                    time.sleep(0.5)  # steady load before the kill
                    killed_at = time.monotonic_ns()
                    leader.kill()
                    cluster.wait_for_leader(other_than=leader_id)
                    deadline = time.monotonic() + 10
                    while time.monotonic() < deadline:
                        # Decided by another node than the killed one (its answers in flight
                        # may still arrive just after the kill).
                        with commits.lock:
                            after = [
                                d.after_ns
                                for d in commits.decided
                                if d.after_ns > killed_at
                                and d.result.HasField("commit_ts")
                                and d.result.commit_ts.node != leader_id
                            ]
                        if after:
                            gaps.append((min(after) - killed_at) / 1e6)
                            break
                        time.sleep(0.01)
                    leader.start()
        finally:
            client.close()
    return gaps


def test_first_commit_after_kill(benchmark: Any, tmp_path: Path) -> None:
    benchmark.group = "cluster commit after kill -9"
    rounds = 1 if benchmark.disabled else KILL_ROUNDS
    gaps: list[float] = []
    with EtcdMember(tmp_path / "etcd") as etcd:
        benchmark.pedantic(
            lambda: gaps.extend(first_commit_gaps(tmp_path, etcd, rounds)), rounds=1, iterations=1
        )
    assert len(gaps) == rounds, gaps
    record_gaps(benchmark, gaps)


#: Decisions in etcd before the failover rounds; the smoke run (make bench-smoke) keeps a few.
RETAINED = (10_000, 300_000, 2_000_000)
SMOKE_RETAINED = 1_000
RETAIN_BATCH, RETAIN_IN_FLIGHT, RETAIN_TIMEOUT_S = 5_000, 4, 600
#: The default lease: a killed leader is deposed as soon as its address refuses connections, and
#: a handover does not wait for the lease, so neither gap depends on it; a 1 s lease on a
#: starved host ends terms on its own, between the rounds' events.
FAILOVER_LEASE_TTL_S = 3
#: New work beside the closed loop: a fresh commit() every 10 ms from a client of its own.
ARRIVAL_INTERVAL_S = 0.01
#: The failover events, in the order run; ``HLC_BENCH_FAILOVER_EVENTS`` (comma-separated, e.g.
#: ``sigterm``) runs only some of them, to look at one event's rounds.
FAILOVER_EVENTS = ("sigterm", "kill -9")


def failover_rounds() -> int:
    """Rounds of each event: ``KILL_ROUNDS``, or ``HLC_BENCH_FAILOVER_ROUNDS`` (a short look)."""
    return int(os.environ.get("HLC_BENCH_FAILOVER_ROUNDS", KILL_ROUNDS))


def failover_events() -> tuple[str, ...]:
    chosen = os.environ.get("HLC_BENCH_FAILOVER_EVENTS")
    if not chosen:
        return FAILOVER_EVENTS
    events = tuple(event.strip() for event in chosen.split(","))
    unknown = [event for event in events if event not in FAILOVER_EVENTS]
    assert not unknown, f"HLC_BENCH_FAILOVER_EVENTS: {unknown} not in {FAILOVER_EVENTS}"
    return events


def retain_decisions(targets: list[str], count: int) -> int:
    """Has ``count`` transactions (one key each) decided through ``targets``' leader, as
    ``commit_many`` calls in flight together, each batch on a fresh start timestamp; a batch's
    refused transactions (an overloaded scheduler) go again. How many were decided."""

    async def run() -> int:
        async with AsyncOracleClient(targets, timeout=60.0) as client:
            decided = 0
            deadline = time.monotonic() + RETAIN_TIMEOUT_S

            async def sender() -> None:
                nonlocal decided
                while decided < count:
                    assert time.monotonic() < deadline, f"{decided} of {count} decided"
                    start = await client.get_timestamp()
                    ids = [next(IDS) for _ in range(RETAIN_BATCH)]
                    batch = [Transaction(i, start, [], [b"kept/%d" % i]) for i in ids]
                    results = await client.commit_many(batch)
                    decided += sum(isinstance(result, Committed | Aborted) for result in results)

            await asyncio.gather(*(sender() for _ in range(RETAIN_IN_FLIGHT)))
            return decided

    return asyncio.run(run())


def answered_by(
    load: ClientCommitLoad, node_id: int | None, after_ns: int, other_than: int = 0
) -> int:
    """When (monotonic ns) the load's first committed answer after ``after_ns`` came from node
    ``node_id`` (None: any node but ``other_than``); waits for it (bounded)."""
    deadline = time.monotonic() + 20
    while True:
        found = [
            t
            for t, node in load.answers_after(after_ns)
            if (node == node_id if node_id is not None else node != other_than)
        ]
        if found:
            return min(found)
        assert time.monotonic() < deadline, (
            f"no commit answered by node {node_id or f'other than {other_than}'}: "
            f"{load.errors_by_kind()} {load.errors[:3]}"
        )
        time.sleep(0.01)


def takeover(node: OracleProcess) -> tuple[float, float, int] | None:
    """From ``node``'s log, its latest takeover: milliseconds from "won the election" to
    "leading" (serving), then the seconds its decision history took to load in the background
    and the decisions it replayed (waits for that record, bounded). None when the term ended
    ("stepped down": a starved host) before its history was in."""
    deadline = time.monotonic() + 180  # a history of millions, on a starved host
    while True:
        records = [json.loads(line) for line in node.log_text().splitlines() if line[:1] == "{"]
        won = max(i for i, record in enumerate(records) if record["message"] == "won the election")
        after = records[won:]
        leading = next((r for r in after if r["message"] == "leading"), None)
        loaded = next((r for r in after if r["message"] == "decisions recovered"), None)
        if leading is not None and loaded is not None:
            break
        if any(r["message"] == "stepped down" for r in after):
            return None
        assert time.monotonic() < deadline, after
        time.sleep(0.1)
    milliseconds = (_log_time(leading) - _log_time(records[won])) * 1e3
    return milliseconds, float(loaded["seconds"]), int(loaded["commits"]) + int(loaded["aborts"])


def _log_time(record: dict[str, Any]) -> float:
    return datetime.datetime.fromisoformat(record["ts"].replace("Z", "+00:00")).timestamp()


class RetryPauses(logging.Handler):
    """The client's pauses between attempts (its DEBUG records): wall time, seconds, and why."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.pauses: list[tuple[float, float, str]] = []

    def emit(self, record: logging.LogRecord) -> None:
        fields = getattr(record, "fields", {})
        self.pauses.append((record.created, fields.get("pause_s", 0.0), fields.get("error", "")))


@contextlib.contextmanager
def retry_pauses() -> Iterator[RetryPauses]:
    client_log = logging.getLogger("hlc_oracle.client")
    handler, level = RetryPauses(), client_log.level
    client_log.addHandler(handler)
    client_log.setLevel(logging.DEBUG)
    try:
        yield handler
    finally:
        client_log.removeHandler(handler)
        client_log.setLevel(level)


#: Node log records placed on a round's time line (the first of each after the event).
OLD_LEADER_RECORDS = {
    "shutting down": "signal",
    "resigned": "resigned",
    "stepped down": "stepped_down",
    "handed over": "handed_over",
    "stopped": "stopped",
}


def round_breakdown(
    load: ClientCommitLoad,
    pauses: RetryPauses,
    old: OracleProcess,
    successor: OracleProcess,
    others: list[OracleProcess],
    at_ns: int,
    at_wall: float,
    before_ns: int,
) -> dict[str, Any]:
    """Where one round's gap went, in milliseconds from the event: the two answers around the
    largest gap (``last_answer``, ``first_answer`` and who decided it), the old leader's log
    (:data:`OLD_LEADER_RECORDS`), the successor's ("won", "leading"), the ``others``' (a dead
    leader deposed), and the client's pauses between attempts inside the gap (count, total, the
    last one's end, why). Node logs have millisecond times."""
    times = load.answered[bisect.bisect_left(load.answered, before_ns) :]
    a, b = max(itertools.pairwise(times), key=lambda pair: pair[1] - pair[0])

    def ms(t_ns: int) -> float:
        return round((t_ns - at_ns) / 1e6, 1)

    def wall_ms(t: float) -> float:
        return round((t - at_wall) * 1e3, 1)

    answers = load.answers_after(b - 1)
    row: dict[str, Any] = {
        "last_answer": ms(a),
        "first_answer": ms(b),
        "first_by": answers[0][1] if answers and answers[0][0] == b else None,
    }
    for node, names in ((old, OLD_LEADER_RECORDS), (successor, None)):
        records = [json.loads(line) for line in node.log_text().splitlines() if line[:1] == "{"]
        after = [r for r in records if _log_time(r) >= at_wall - 0.002]
        if names is None:
            won = [i for i, r in enumerate(after) if r["message"] == "won the election"]
            after = after[won[-1] :] if won else []
            names = {"won the election": "won", "leading": "leading"}
        for message, name in names.items():
            found = next((r for r in after if r["message"] == message), None)
            if found is not None:
                row[name] = wall_ms(_log_time(found))
    for node in others:
        records = [json.loads(line) for line in node.log_text().splitlines() if line[:1] == "{"]
        for r in records:
            if r["message"].startswith("leader unreachable") and _log_time(r) >= at_wall:
                seen = wall_ms(_log_time(r))
                row["deposed"] = min(row.get("deposed", seen), seen)
    a_wall, b_wall = at_wall + (a - at_ns) / 1e9, at_wall + (b - at_ns) / 1e9
    inside = [p for p in pauses.pauses if a_wall <= p[0] <= b_wall]
    row["pauses"] = len(inside)
    row["paused_ms"] = round(sum(p[1] for p in inside) * 1e3, 1)
    if inside:
        row["last_pause_end"] = wall_ms(max(p[0] + p[1] for p in inside))
        row["pause_errors"] = sorted({p[2][:80] for p in inside})[:3]
    return row


@contextlib.contextmanager
def unfrozen_at_end() -> Iterator[None]:
    """Whatever ``gc.freeze()`` left out of the garbage collections is collected as usual again
    at the end."""
    try:
        yield
    finally:
        gc.unfreeze()


def commit_failover_gaps(
    directory: Path, etcd: EtcdMember, retained: int, rounds: int
) -> dict[str, Any]:
    """Per event (``sigterm``, ``kill -9``), milliseconds from the old leader's last answer to
    the next leader's first, for ``rounds`` rounds each under the client's commit load; with the
    decisions retained before and the failed calls by kind. A round in which another node
    answered between the round's start and the event (leadership had moved on its own: a
    starved host) is counted apart and run again, up to ``rounds`` more."""
    figures: dict[str, Any] = {"moved_before_event": 0, "term_ended_before_history": 0}
    for event in failover_events():
        figures[event], figures[f"{event} takeover"], figures[f"{event} fresh"] = [], [], []
        figures[f"{event} rounds"] = []
    with OracleCluster(
        directory,
        etcd.endpoint,
        lease_ttl_s=FAILOVER_LEASE_TTL_S,
        extra_args=("--cluster-name", directory.name),
    ) as cluster:
        figures["retained"] = retain_decisions(cluster.targets, retained)
        with (
            ClientCommitLoad(
                cluster.targets, batch=100, arrival_interval_s=ARRIVAL_INTERVAL_S
            ) as load,
            unfrozen_at_end(),
            retry_pauses() as pauses,
        ):
            load.run()
            for event in failover_events():
                for _ in range(2 * rounds):
                    if len(figures[event]) == rounds:
                        break
                    leader = cluster.wait_for_leader(timeout_s=60)
                    leader_id = cluster.nodes.index(leader) + 1
                    began = answered_by(load, leader_id, time.monotonic_ns())
                    # What the load kept so far is left out of every later garbage collection:
                    # a full collection scans every object the process tracks, the load's
                    # hundreds of thousands of decisions included, and stops the load's
                    # callers meanwhile (0.1 to 1.8 s here, measured as failover gaps).
                    gc.freeze()
                    time.sleep(0.5)  # steady load before the event
                    at, at_wall = time.monotonic_ns(), time.time()
                    if event == "sigterm":
                        leader.signal(signal.SIGTERM)
                    else:
                        leader.kill()
                    successor = cluster.wait_for_leader(timeout_s=60, other_than=leader_id)
                    answered_by(load, None, at, other_than=leader_id)
                    deadline = time.monotonic() + 30
                    # New work answered (the answers are in time order: the last one tells).
                    while not load.arrivals_answered or load.arrivals_answered[-1] <= at:
                        assert time.monotonic() < deadline, "no new work answered"
                        time.sleep(0.01)
                    time.sleep(0.3)  # answers after the next leader's first
                    answers = load.answers_after(began - 1)
                    if any(t <= at and node != leader_id for t, node in answers):
                        figures["moved_before_event"] += 1
                    else:
                        before = load.last_answered(at)
                        assert before is not None
                        figures[event].append(load.largest_gap_ms(before))
                        row = round_breakdown(
                            load,
                            pauses,
                            leader,
                            successor,
                            [node for node in cluster.nodes if node is not leader],
                            at,
                            at_wall,
                            before,
                        )
                        figures[f"{event} rounds"].append(row)
                        print(f"{event} gap {figures[event][-1]:.1f} ms: {row}", flush=True)
                        before = load.last_answered(at, arrivals=True)
                        assert before is not None
                        figures[f"{event} fresh"].append(load.largest_gap_ms(before, arrivals=True))
                        took = takeover(successor)
                        if took is None:
                            figures["term_ended_before_history"] += 1
                        else:
                            figures[f"{event} takeover"].append(took)
                    leader.stop()
                    leader.start()
            load.pause()
        figures["decided"] = len(load.decided)
        figures["errors"] = load.errors_by_kind()
        figures["error_samples"] = sorted({f"{type(e).__name__}: {e}"[:300] for e in load.errors})[
            :5
        ]
    return figures


@pytest.mark.parametrize("retained", RETAINED)
def test_failover_under_commit_load(benchmark: Any, tmp_path: Path, retained: int) -> None:
    benchmark.group = "cluster failover under commit load"
    rounds = 1 if benchmark.disabled else failover_rounds()
    keep = SMOKE_RETAINED if benchmark.disabled else retained
    figures: dict[str, Any] = {}
    with EtcdMember(tmp_path / "etcd") as etcd:
        benchmark.pedantic(
            lambda: figures.update(commit_failover_gaps(tmp_path, etcd, keep, rounds)),
            rounds=1,
            iterations=1,
        )
    for event in failover_events():
        gaps = figures[event]
        assert len(gaps) == rounds, figures
        name = event.replace(" ", "").replace("-", "")
        record_gaps(benchmark, gaps, f"{name}_")
        fresh = figures[f"{event} fresh"]
        record_gaps(benchmark, fresh, f"{name}_fresh_")
        takeovers = figures[f"{event} takeover"]
        benchmark.extra_info[f"{name}_takeover_ms"] = [round(ms) for ms, _, _ in takeovers]
        benchmark.extra_info[f"{name}_history_s"] = [seconds for _, seconds, _ in takeovers]
        benchmark.extra_info[f"{name}_replayed"] = [replayed for _, _, replayed in takeovers]
        benchmark.extra_info[f"{name}_rounds"] = figures[f"{event} rounds"]
    benchmark.extra_info["moved_before_event"] = figures["moved_before_event"]
    benchmark.extra_info["retained"] = figures["retained"]
    benchmark.extra_info["decided_under_load"] = figures["decided"]
    benchmark.extra_info["errors"] = figures["errors"]
    benchmark.extra_info["error_samples"] = figures["error_samples"]
    benchmark.extra_info["term_ended_before_history"] = figures["term_ended_before_history"]


async def decide_through_etcd(endpoint: str, piece_bytes: int, count: int) -> tuple[float, int]:
    """Seconds to decide ``count`` transactions in process on the etcd decision log, and the
    pieces written."""
    client = EtcdClient([endpoint], timeout_s=2.0)
    prefix = f"/hlc-oracle/bench-{piece_bytes}-{next(IDS)}/"
    leader_key = f"{prefix}leader".encode()
    taken = await client.txn([compare_create_revision(leader_key, 0)], [put(leader_key, b"b")])
    term = Term(leader_key, b"b", taken.revision)
    log = DecisionLog(client, prefix, Fence(client, term))
    step = ExternalDurableStep(
        log.write,
        asyncio.get_running_loop(),
        max_in_flight=4,
        max_batch_bytes=piece_bytes,
        first_batch_seq=await log.newest_seq() + 1,
    )
    options = CommitOptions(max_batch_size=8192)
    scheduler = GroupCommitScheduler(None, Clock(node=9), options, durable_step=step)
    try:
        start = scheduler.clock.now()
        txns = [transaction_of_keys(next(IDS), start, b"c") for _ in range(count)]
        started = time.perf_counter()
        await submit_all(scheduler, txns, PIECE_SUBMITTERS)
        seconds = time.perf_counter() - started
        pieces = await log.newest_seq()
    finally:
        await scheduler.aclose()
        await client.close()
    return seconds, pieces


@pytest.fixture(scope="module")
def piece_etcd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EtcdMember]:
    with EtcdMember(tmp_path_factory.mktemp("piece") / "etcd") as member:
        yield member


@pytest.mark.parametrize("piece_bytes", PIECE_BYTES)
def test_decision_piece_size(benchmark: Any, piece_etcd: EtcdMember, piece_bytes: int) -> None:
    benchmark.group = "cluster decision piece size"
    if piece_bytes == PIECE_BYTES[-1]:
        benchmark.extra_info["baseline"] = True
    count = 2_000 if benchmark.disabled else PIECE_TXNS
    figures: dict[str, Any] = {}

    def body() -> None:
        figures["seconds"], figures["pieces"] = asyncio.run(
            decide_through_etcd(piece_etcd.endpoint, piece_bytes, count)
        )

    benchmark.pedantic(body, rounds=3, iterations=1)
    benchmark.extra_info["per_second"] = round(count / figures["seconds"])
    benchmark.extra_info["pieces"] = figures["pieces"]
