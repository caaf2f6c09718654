"""Transactions across leader failover on a real etcd: group-commit decisions are
durable in etcd before they are answered, so the next leader knows them.

Commit load from clients given every node (a call the leader died under is sent again, same id
and contents, to the next leader), then per round kill -9 of the leader. At the end: every
acknowledged commit reads back from the current leader with its timestamp, no aborted id reads
back committed, a commit acknowledged before another began has the smaller timestamp, and a
resubmitted decided id gets its first decision. Lease TTL 1 s (etcd runs with
--election-timeout 100)."""

from __future__ import annotations

import asyncio
import itertools
import signal
import time
from pathlib import Path
from typing import Any

import grpc
from hlc_oracle import Clock, CommitEngine, Committed
from hlc_oracle.cluster.decisions import DecisionLog
from hlc_oracle.cluster.etcd import EtcdClient
from hlc_oracle.cluster.fence import Fence, Term
from hlc_oracle.cluster.node import key_prefix
from hlc_oracle.proto import oracle_pb2 as pb

from tests.support.etcd_process import EtcdCluster, EtcdMember
from tests.support.grpc_commit_load import Decided, GrpcCommitLoad
from tests.support.history import Instant
from tests.support.oracle_cluster import LeaderClient, OracleCluster

KILL_ROUNDS = 10
LEASE_TTL_S = 1
#: etcd's quota in the quota test: 2 MiB.
QUOTA_BYTES = 2 << 20


def commit_stream_message(target: str, load: GrpcCommitLoad, count: int = 20) -> None:
    """One ``CommitStream`` message of ``count`` transactions to ``target`` (the leader), its
    answers added to ``load``'s acknowledged decisions (the message path is durable too)."""
    start = load.client.get_timestamps(1).first
    txns = [
        pb.Transaction(
            txn_id=load.next_id(),
            start_ts=pb.Timestamp(physical=start.physical, logical=start.logical, node=start.node),
            write_set=[f"stream-{n}".encode()],
        )
        for n in range(count)
    ]
    with grpc.insecure_channel(target) as channel:
        stream = channel.stream_stream(
            "/hlc_oracle.v1.Transactions/CommitStream",
            request_serializer=pb.CommitStreamRequest.SerializeToString,
            response_deserializer=pb.CommitStreamResponse.FromString,
        )
        before = Instant.now()
        (reply,) = list(stream(iter([pb.CommitStreamRequest(transactions=txns)]), timeout=5))
        after = Instant.now()
    by_id = {result.txn_id: result for result in reply.results}
    with load.lock:
        load.decided.extend(Decided(txn, by_id[txn.txn_id], before, after) for txn in txns)


def test_kill_the_leader_under_commit_load(etcd: EtcdMember, tmp_path: Path) -> None:
    with OracleCluster(tmp_path, etcd.endpoint, lease_ttl_s=LEASE_TTL_S) as cluster:
        client = LeaderClient(cluster.targets)
        commits = GrpcCommitLoad(client)
        with commits.running():
            for _ in range(KILL_ROUNDS):
                leader = cluster.wait_for_leader()
                leader_id = cluster.nodes.index(leader) + 1
                commit_stream_message(leader.target, commits)
                before = len(commits.decided)
                time.sleep(0.2)
                leader.kill()
                cluster.wait_for_leader(other_than=leader_id)
                leader.start()
                assert len(commits.decided) > before
        commits.check(client)
        client.close()


def test_a_deposed_leader_acknowledges_nothing_the_next_leader_lacks(
    etcd: EtcdMember, tmp_path: Path
) -> None:
    """SIGSTOP of the leader under commit load, past its lease; a new leader is elected; after
    SIGCONT the old one's pending decision writes are refused by the fence. Every commit any
    client saw acknowledged reads back from the new leader."""
    with OracleCluster(tmp_path, etcd.endpoint, lease_ttl_s=LEASE_TTL_S) as cluster:
        client = LeaderClient(cluster.targets)
        commits = GrpcCommitLoad(client)
        with commits.running():
            old = cluster.wait_for_leader()
            old_id = cluster.nodes.index(old) + 1
            time.sleep(0.2)
            old.signal(signal.SIGSTOP)
            try:
                cluster.wait_for_leader(other_than=old_id)
                time.sleep(0.3)
            finally:
                old.signal(signal.SIGCONT)
            # Resumed, it learns it lost (its keepalive or a fenced write fails): bounded, since
            # how soon depends on the machine's load.
            deadline = time.monotonic() + 10
            while (
                status := cluster.statuses().get(old_id)
            ) is not None and status.role == "leader":
                assert time.monotonic() < deadline, old.log_text()[-3000:]
                time.sleep(0.05)
        commits.check(client)
        client.close()


def test_three_member_etcd_loses_its_raft_leader_under_commit_load(
    etcd_cluster: EtcdCluster, tmp_path: Path
) -> None:
    with OracleCluster(tmp_path, etcd_cluster.endpoints_flag, lease_ttl_s=LEASE_TTL_S) as cluster:
        client = LeaderClient(cluster.targets)
        commits = GrpcCommitLoad(client)
        with commits.running():
            time.sleep(0.3)
            etcd_cluster.raft_leader().kill()
            time.sleep(1.5)
            cluster.wait_for_leader()
        commits.check(client)
        client.close()


def test_etcd_quota_alarm_stops_the_leader_with_its_reason(tmp_path: Path) -> None:
    """etcd over its quota refuses the leader's decision pieces: the node stops serving with
    gate key etcd-quota, and every commit it acknowledged reads back from the keys in etcd."""
    quota = (f"--quota-backend-bytes={QUOTA_BYTES}",)
    with EtcdMember(tmp_path / "etcd", extra_args=quota) as etcd:
        with OracleCluster(tmp_path, etcd.endpoint, size=1, lease_ttl_s=LEASE_TTL_S) as cluster:
            node = cluster.wait_for_leader()
            client = LeaderClient([node.target])
            start = client.get_timestamps(1).first
            acknowledged: dict[int, Any] = {}
            refused = None
            # Pieces are small: filler keys bring the quota near, so that a piece crosses it.
            asyncio.run(fill_up_to(etcd.endpoint, QUOTA_BYTES - (128 << 10)))
            for txn_id in range(1, 5000):
                txn = pb.Transaction(
                    txn_id=txn_id,
                    start_ts=pb.Timestamp(
                        physical=start.physical, logical=start.logical, node=start.node
                    ),
                    write_set=[b"%d-%d-" % (txn_id, n) + b"x" * 200 for n in range(40)],
                )
                try:
                    acknowledged[txn_id] = client.commit(txn, give_up_after_s=0)
                except grpc.RpcError as err:
                    refused = err
                    break
            client.close()
            assert refused is not None and acknowledged
            assert refused.code() == grpc.StatusCode.UNAVAILABLE  # type: ignore[attr-defined]
            deadline = time.monotonic() + 10
            while "etcd-quota" not in (reason := cluster.statuses()[1].not_serving_reason):
                assert time.monotonic() < deadline, reason
                time.sleep(0.05)
            assert "database space exceeded" in reason
        assert all(result.HasField("commit_ts") for result in acknowledged.values())
        # The keys in etcd hold every acknowledged decision (read as a next leader would).
        engine = CommitEngine(None, Clock(node=9), durability="external")
        asyncio.run(replay_decisions(etcd.endpoint, engine))
        for txn_id, result in acknowledged.items():
            decided = engine.status(txn_id)
            assert isinstance(decided, Committed), (txn_id, decided)
            assert decided.commit_ts.physical == result.commit_ts.physical
            assert decided.commit_ts.logical == result.commit_ts.logical


async def fill_up_to(endpoint: str, total_bytes: int) -> None:
    """Filler keys until etcd's database file reaches ``total_bytes``: 4 KiB each (bbolt grows
    its file by leaps for larger values), 32 KiB between looks at the size (etcd updates it
    once a backend commit, every 100 ms)."""
    client = EtcdClient([endpoint], timeout_s=5.0)
    try:
        for n in itertools.count():
            if (await client.db_size()).total >= total_bytes:
                return
            for k in range(8):
                await client.put(f"/filler/{n}/{k}".encode(), bytes(4 << 10))
            await asyncio.sleep(0.11)
    finally:
        await client.close()


async def replay_decisions(endpoint: str, engine: CommitEngine) -> None:
    client = EtcdClient([endpoint])
    try:
        prefix = key_prefix("hlc-oracle")
        # Reading needs no leadership: a fence that is never written through.
        reader = Fence(client, Term(f"{prefix}leader".encode(), b"", 0))
        log = DecisionLog(client, prefix, reader)
        await log.recover(None, engine.raise_low_watermark, engine.replay_pieces)
    finally:
        await client.close()


def test_a_too_old_retry_on_the_new_leader_is_recorded_and_reads_back_aborted(
    etcd: EtcdMember, tmp_path: Path
) -> None:
    """A transaction started on a leader that dies before deciding it, then sent to the next one:
    it started below the new low watermark (the old leader's window limit), so it is aborted as
    too old, and that abort is a decision in etcd: it reads back, a resubmission gets it, and so
    does the leader after the next failover (Apache Omid's rule)."""
    with OracleCluster(tmp_path, etcd.endpoint, lease_ttl_s=LEASE_TTL_S) as cluster:
        client = LeaderClient(cluster.targets)
        first = cluster.wait_for_leader()
        first_id = cluster.nodes.index(first) + 1
        start = client.get_timestamps(1).first
        txn = pb.Transaction(
            txn_id=77,
            start_ts=pb.Timestamp(physical=start.physical, logical=start.logical, node=start.node),
            write_set=[b"inherited"],
        )
        first.kill()
        second = cluster.wait_for_leader(other_than=first_id)
        second_id = cluster.nodes.index(second) + 1
        aborted = client.commit(txn)
        assert aborted.WhichOneof("outcome") == "aborted", aborted
        assert aborted.aborted.reason == "conflict" and aborted.aborted.conflict.kind == "too_old"
        assert (
            aborted.aborted.conflict.commit_ts.physical,
            aborted.aborted.conflict.commit_ts.logical,
        ) >= (
            start.physical,
            start.logical,
        )
        status = client.transaction_status(txn.txn_id)
        assert status.known and status.result == aborted, status
        assert client.commit(txn) == aborted, "a resubmission gets the same abort"
        # The next leader replays the abort from etcd: it cannot flip there either.
        first.start()
        second.kill()
        cluster.wait_for_leader(other_than=second_id)
        status = client.transaction_status(txn.txn_id)
        assert status.known and status.result == aborted, status
        assert client.commit(txn) == aborted
        client.close()
