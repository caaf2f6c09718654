"""The client library's commits across leader changes, on real nodes and a real etcd.

A node that refuses a transaction without deciding it (a follower, a leader taking over or
shutting down) makes the client send it again, with the same id, to the next leader: in a unary
call's status, and inside a ``CommitStream`` answer, where only the refused transactions of the
message go again. Only a lost answer may end a call as ``OracleOutcomeUnknownError``.

Lease TTL 1 s (etcd runs with --election-timeout 100); client timeout 20 s, far above any
failover here, so a call ends with an error only when something is wrong.
"""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
from collections.abc import Callable
from pathlib import Path

from hlc_oracle import Aborted, Committed, Transaction
from hlc_oracle.client import AsyncOracleClient, CommitManyResults, OracleClient

from tests.support.client_commit_load import CLIENT_TIMEOUT_S, ClientCommitLoad
from tests.support.commands import CLI, command_start_up_seconds
from tests.support.etcd_process import EtcdMember
from tests.support.oracle_cluster import OracleCluster, fetch_metrics, metric_value
from tests.support.oracle_process import OracleProcess
from tests.support.waiting import wait_for

LEASE_TTL_S = 1
REFUSED = 'hlc_oracle_transactions_total{outcome="refused"}'
COMMITTED = 'hlc_oracle_transactions_total{outcome="committed"}'


def refused(node: OracleProcess) -> float:
    """Transactions ``node`` refused so far (the counter shows once it counted one)."""
    metrics = fetch_metrics(node)
    return metric_value(metrics, REFUSED) if REFUSED in metrics else 0.0


def test_transactions_a_follower_refuses_go_to_the_leader(etcd: EtcdMember, tmp_path: Path) -> None:
    """Every commit call sent first to a follower: its refusal (inside the ``CommitStream``
    answer, or the unary call's status) sends the transactions on to the leader, the same ids."""
    with OracleCluster(
        tmp_path, etcd.endpoint, size=2, lease_ttl_s=LEASE_TTL_S, extra_args=("--metrics-port", "0")
    ) as cluster:
        leader = cluster.wait_for_leader()
        (follower,) = [node for node in cluster.nodes if node is not leader]
        targets = [follower.target, leader.target]
        with OracleClient(targets, timeout=CLIENT_TIMEOUT_S) as client:
            start = client.get_timestamp()
        batch = [Transaction(100 + n, start, [], [b"batch/%d" % n]) for n in range(50)]
        calls: list[tuple[str, Callable[[OracleClient], object]]] = [
            ("commit_many", lambda c: c.commit_many(batch)),
            ("commit", lambda c: c.commit(Transaction(200, start, [], [b"one"]))),
            ("commit_unary", lambda c: c.commit_unary(Transaction(201, start, [], [b"two"]))),
            ("abort", lambda c: c.abort(202)),
        ]
        for name, call in calls:
            refused_before = refused(follower)
            # A fresh client starts on the follower, the first target.
            with OracleClient(targets, timeout=CLIENT_TIMEOUT_S) as client:
                outcome = call(client)
            if name == "commit_many":
                assert isinstance(outcome, CommitManyResults)
                assert all(isinstance(result, Committed) for result in outcome), outcome
                assert [result.txn_id for result in outcome] == [txn.txn_id for txn in batch]
            elif name == "abort":
                assert outcome == Aborted(202, "requested")
            else:
                assert isinstance(outcome, Committed), (name, outcome)
            if name in ("commit_many", "commit"):  # the stream answers' refusals are counted
                assert refused(follower) > refused_before, name


def test_commit_callers_ride_through_failovers(etcd: EtcdMember, tmp_path: Path) -> None:
    """Eight ``commit()`` callers, two ``commit_many()`` callers and a unary caller through four
    failovers (SIGTERM, kill -9, twice each): no error but an unknown outcome; after them every
    acknowledged decision reads back the same, and a resubmission gets it again."""
    with OracleCluster(tmp_path, etcd.endpoint, lease_ttl_s=LEASE_TTL_S) as cluster:
        with ClientCommitLoad(cluster.targets) as load:
            epoch = 0
            for how in (signal.SIGTERM, signal.SIGKILL, signal.SIGTERM, signal.SIGKILL):
                leader = cluster.wait_for_leader(after_epoch=epoch)
                leader_id = cluster.nodes.index(leader) + 1
                epoch = cluster.statuses()[leader_id].epoch
                load.run()
                load.wait_for_more_than(len(load.decided) + 200)
                leader.signal(how)
                cluster.wait_for_leader(other_than=leader_id, after_epoch=epoch)
                # The callers get through on the next leader.
                load.wait_for_more_than(len(load.decided) + 200)
                load.pause()
                leader.stop()
                leader.start()
        assert not load.errors, load.errors[:3]
        decided = dict(load.decided)
        assert sum(isinstance(result, Committed) for _, result in decided.values()) > 800
        asyncio.run(read_back(cluster.targets, decided))


async def read_back(
    targets: list[str], decided: dict[int, tuple[Transaction | None, Committed | Aborted]]
) -> None:
    """Every decision in ``decided`` reads back the same from the current leader, and every
    transaction resubmitted gets its decision again."""
    async with AsyncOracleClient(targets, timeout=CLIENT_TIMEOUT_S) as reader:
        ids = list(decided)
        for first in range(0, len(ids), 500):
            chunk = ids[first : first + 500]
            statuses = await asyncio.gather(*(reader.transaction_status(i) for i in chunk))
            for txn_id, status in zip(chunk, statuses, strict=True):
                assert status == decided[txn_id][1], (txn_id, status, decided[txn_id][1])
        resubmitted = [txn for txn, _ in decided.values() if txn is not None]
        again = await reader.commit_many(resubmitted)
        assert again == [decided[txn.txn_id][1] for txn in resubmitted]


def committed_by(node: OracleProcess) -> float:
    metrics = fetch_metrics(node)
    return metric_value(metrics, COMMITTED) if COMMITTED in metrics else 0.0


def test_bench_commit_modes_ride_through_failovers(etcd: EtcdMember, tmp_path: Path) -> None:
    """``hlc-oracle bench --mode commit`` and ``--mode commit-batch`` given every node, through
    a graceful handover and a kill -9 of the leader: each exits 0 with its figures, and no
    commit failed but with an unknown outcome."""
    with OracleCluster(
        tmp_path, etcd.endpoint, lease_ttl_s=LEASE_TTL_S, extra_args=("--metrics-port", "0")
    ) as cluster:
        # The benches run until the successor has committed (SIGTERM then stops each, with its
        # figures): however long the failovers take on a loaded host. The duration only bounds it.
        duration = 10 * command_start_up_seconds() + 600
        common = ["--target", ",".join(cluster.targets), "--duration", f"{duration:.1f}"]
        # commit-batch builds its transactions before the timing: a million, more than it sends.
        common += ["--requests", "1000000", "--concurrency", "8", "--no-progress"]
        benches: list[subprocess.Popen[str]] = []
        try:
            # commit-batch first, and sending before the failovers begin: it builds its
            # transactions before it sends (a million: 4 s on an idle host, over a minute seen at
            # load 14), so its wait is long. commit sends at once.
            for mode in (["--mode", "commit-batch", "--batch", "50"], ["--mode", "commit"]):
                benches.append(
                    subprocess.Popen(
                        [*CLI, "bench", *common, *mode],
                        stdout=subprocess.PIPE,
                        stderr=subprocess.PIPE,
                        text=True,
                    )
                )
                if len(benches) == 1:
                    first = cluster.wait_for_leader()
                    wait_for(lambda: committed_by(first) > 0, 240, pause_s=0.1)  # noqa: B023
            epoch = 0
            for how in (signal.SIGTERM, signal.SIGKILL):
                leader = cluster.wait_for_leader(after_epoch=epoch)
                leader_id = cluster.nodes.index(leader) + 1
                epoch = cluster.statuses()[leader_id].epoch
                wait_for(lambda: committed_by(leader) > 0, 60, pause_s=0.05)  # noqa: B023
                leader.signal(how)
                leader.stop()
                leader.start()
            successor = cluster.wait_for_leader(after_epoch=epoch)
            wait_for(lambda: committed_by(successor) > 0, 60, pause_s=0.05)
            for bench in benches:
                bench.send_signal(signal.SIGTERM)
            outputs = [bench.communicate(timeout=60) for bench in benches]
        finally:
            for bench in benches:
                bench.kill()
                bench.wait()
    for bench, (stdout, stderr) in zip(benches, outputs, strict=True):
        assert bench.returncode == 0, (stdout, stderr)
        figures = json.loads(stdout.splitlines()[-1])
        assert figures["calls"] > 0, stdout
        assert set(figures["errors"]) <= {"OracleOutcomeUnknownError"}, stdout
