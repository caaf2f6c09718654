"""Clustered nodes on a real etcd: election, followers' redirects, status, health, metrics, and
the start-up refusals (a live duplicate node id, etcd unreachable)."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2
from hlc_oracle.local_cluster import free_port
from hlc_oracle.proto import (
    LEADER_METADATA_KEY,
    REFUSAL_NOT_LEADER,
)
from hlc_oracle.proto import oracle_pb2 as pb

from tests.support.commands import CLI
from tests.support.etcd_process import EtcdMember
from tests.support.oracle_cluster import (
    OracleCluster,
    fetch_metrics,
    leader_client,
    metric_value,
)
from tests.support.raw_calls import health, refusal_of

SERVICES = ("hlc_oracle.v1.TimestampOracle", "hlc_oracle.v1.Transactions")


def test_three_nodes_elect_one_leader_and_followers_redirect(
    etcd: EtcdMember, tmp_path: Path
) -> None:
    # A 3 s lease, as below: a 1 s one can lapse on a loaded machine, and the re-election that
    # follows changes the leader and epoch between the checks.
    ttl_s = 3
    with OracleCluster(
        tmp_path, etcd.endpoint, lease_ttl_s=ttl_s, extra_args=("--metrics-port", "0")
    ) as cluster:
        leader = cluster.wait_for_leader()
        statuses = cluster.statuses()
        assert sorted(status.role for status in statuses.values()) == [
            "follower", "follower", "leader",
        ]  # fmt: skip
        leading = next(status for status in statuses.values() if status.role == "leader")
        # Every node names the same leader and epoch; only the leader serves.
        assert {(s.leader_address, s.leader_node_id, s.epoch) for s in statuses.values()} == {
            (leader.target, leading.node_id, leading.epoch)
        }
        assert leading.epoch > 0 and 0 < leading.lease_remaining_s <= ttl_s
        for node in cluster.nodes:
            status = statuses[cluster.nodes.index(node) + 1]
            serving = health_pb2.HealthCheckResponse.SERVING
            # "" is the node's own health: a follower is up, it only does not lead.
            assert health(node.target, "") == serving
            for service in SERVICES:
                expected = serving if node is leader else health_pb2.HealthCheckResponse.NOT_SERVING
                assert health(node.target, service) == expected, (node.target, service)
            if node is leader:
                assert status.serving
                continue
            assert not status.serving and "follower" in status.not_serving_reason
            # Timestamps, commits and transaction status are refused with the redirect.
            for method, request in (
                ("/hlc_oracle.v1.TimestampOracle/GetTimestamps",
                 pb.GetTimestampsRequest(count=1).SerializeToString()),
                ("/hlc_oracle.v1.Transactions/GetTransactionStatus",
                 pb.TransactionStatusRequest(txn_id=1).SerializeToString()),
            ):  # fmt: skip
                refused = refusal_of(node.target, method, request)
                assert refused.code == grpc.StatusCode.UNAVAILABLE
                assert refused.mark == REFUSAL_NOT_LEADER
                assert refused.metadata[LEADER_METADATA_KEY] == leader.target
            metrics = fetch_metrics(node)
            assert 'hlc_oracle_cluster_role{role="follower"} 1.0' in metrics
            assert f"hlc_oracle_cluster_epoch {float(leading.epoch)}" in metrics
        leader_metrics = fetch_metrics(leader)
        assert 'hlc_oracle_cluster_role{role="leader"} 1.0' in leader_metrics
        # At least the epoch it won; a node that saw an earlier epoch (it followed a node whose
        # lease lapsed during start-up) counts that one too.
        assert metric_value(leader_metrics, "hlc_oracle_cluster_leader_changes_total") >= 1
        assert f"hlc_oracle_cluster_epoch {float(leading.epoch)}" in leader_metrics
        # Keepalives every TTL/3: an age under the TTL means the lease has not lapsed.
        assert 0 <= metric_value(leader_metrics, "hlc_oracle_cluster_keepalive_age_seconds") < ttl_s
        # A client given every node gets its timestamps from the leader.
        client = leader_client(cluster.targets)
        try:
            got = client.get_timestamps(5)
        finally:
            client.close()
        assert got.first.node == leading.node_id


def test_a_live_duplicate_node_id_is_refused(etcd: EtcdMember, tmp_path: Path) -> None:
    # The default 3 s lease: a 1 s one can lapse on a loaded machine, and then the id is free.
    with OracleCluster(tmp_path, etcd.endpoint, size=1, lease_ttl_s=3) as cluster:
        first = cluster.nodes[0]
        duplicate = serve_once(
            tmp_path / "dup", "--etcd-endpoints", etcd.endpoint, "--node-id", "1",
        )  # fmt: skip
        assert duplicate.returncode == 1, duplicate.stderr
        assert "node id 1 is held by a live node" in duplicate.stderr
        assert first.process is not None and first.process.poll() is None


def test_etcd_unreachable_at_start_exits_1_naming_the_endpoints(tmp_path: Path) -> None:
    endpoints = f"127.0.0.1:{free_port()},127.0.0.1:{free_port()}"
    started = time.monotonic()
    result = serve_once(
        tmp_path / "data", "--etcd-endpoints", endpoints, "--set", "cluster.lease_ttl_s=1"
    )
    assert result.returncode == 1, result.stderr
    assert f"etcd is unreachable at {endpoints} (waited 3 s)" in result.stderr
    assert time.monotonic() - started < 30


def serve_once(data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, "serve", "--listen", "127.0.0.1:0",
         "--data-dir", str(data_dir), "--log-format", "text", *args],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
