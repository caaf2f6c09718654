"""A leader watches its own leader key and stops serving the moment etcd reports it deleted or
overwritten (deposed by a follower, ``etcdctl del`` or ``put`` by an operator), instead of serving
on until its next fenced write fails. Three real nodes on a real etcd, under timestamp load;
CallLog.check after each (no timestamp twice, real-time order, the HLC bound).

The nodes run with a 10 s lease (the serving deadline cannot be what stops the old leader) and a
20 s window, so the leader's only fenced window write in these short tests is its first one
(renewals come when half the window is used, every 100 ms with the default 200 ms window): the
stop these tests see can only be the watch's, not a failed renewal's (the logs tell them apart).
The max offset is raised to 40 s to keep that window within the HLC bound (max_offset/2), so the
next leader serves at once."""

from __future__ import annotations

import time
from pathlib import Path

import grpc
from hlc_oracle.client import OracleClient, OracleStatus
from hlc_oracle.proto import REFUSAL_METADATA_KEY

from tests.support.etcd_process import EtcdMember
from tests.support.oracle_cluster import (
    OracleCluster,
    calls_under_load,
    fetch_metrics,
    get_timestamps_directly,
    metric_value,
    read_etcd_key,
    write_etcd_key,
)

LEASE_TTL_S = 10
MAX_OFFSET_US = 40_000_000
WATCH_ARGS = (
    "--metrics-port", "0",
    "--set", "window.size_ms=20000",
    "--max-offset-us", str(MAX_OFFSET_US),
)  # fmt: skip
LOST = "leader key lost, stopping serving"
KEY_LOST_METRIC = "hlc_oracle_cluster_leader_key_lost_total"


def status_of(target: str) -> OracleStatus:
    with OracleClient(target, timeout=2) as client:
        return client.status()


def test_a_deleted_leader_key_stops_the_leader_and_a_new_one_is_elected(
    etcd: EtcdMember, tmp_path: Path
) -> None:
    with OracleCluster(
        tmp_path, etcd.endpoint, lease_ttl_s=LEASE_TTL_S, extra_args=WATCH_ARGS
    ) as cluster:
        with calls_under_load(cluster.targets) as calls:
            leader = cluster.wait_for_leader()
            term = read_etcd_key(etcd.endpoint, "leader")
            assert term is not None
            before = len(calls.calls)
            write_etcd_key(etcd.endpoint, "leader", None)  # etcdctl del
            # Every node campaigns, the old leader too once it stepped down: a later epoch.
            successor = cluster.wait_for_leader(after_epoch=term.create_revision)
            if successor is not leader:
                # A follower now, and its refusals say how its term ended (once it follows the
                # successor: "this node led epoch N until: ...").
                status = status_of(leader.target)
                assert not status.serving
                assert "the leader key was deleted at revision" in status.not_serving_reason, status
            calls.wait_for_more_than(before)
        log = leader.log_text()
        assert f"{LOST} (epoch {term.create_revision})" in log, log[-3000:]
        assert "stepped down" in log and "the leader key was deleted at revision" in log
        assert metric_value(fetch_metrics(leader), KEY_LOST_METRIC) == 1
    calls.check(max_offset_us=MAX_OFFSET_US)


def test_an_overwritten_leader_key_stops_the_leader_and_its_status_says_why(
    etcd: EtcdMember, tmp_path: Path
) -> None:
    with OracleCluster(
        tmp_path, etcd.endpoint, lease_ttl_s=LEASE_TTL_S, extra_args=WATCH_ARGS
    ) as cluster:
        with calls_under_load(cluster.targets) as calls:
            leader = cluster.wait_for_leader()
            term = read_etcd_key(etcd.endpoint, "leader")
            assert term is not None
            write_etcd_key(etcd.endpoint, "leader", b"operator")  # etcdctl put
            # The key holds a term no node has: the leader stops, and every node follows it.
            deadline = time.monotonic() + 10
            while (status := status_of(leader.target)).role != "follower":
                assert time.monotonic() < deadline, leader.log_text()[-3000:]
                time.sleep(0.02)
            assert not status.serving
            assert "the leader key was overwritten" in status.not_serving_reason, status
            assert f"it holds operator of epoch {term.create_revision}" in (
                status.not_serving_reason
            )
            refused = get_timestamps_directly(leader.target, timeout=5)
            assert isinstance(refused, grpc.RpcError), f"{leader.target} still serves timestamps"
            assert refused.code() == grpc.StatusCode.UNAVAILABLE  # type: ignore[attr-defined]
            metadata = dict(refused.trailing_metadata())  # type: ignore[attr-defined]
            assert metadata[REFUSAL_METADATA_KEY] == "not-leader"
            assert not any(s.serving for s in cluster.statuses().values())
            before = len(calls.calls)
            write_etcd_key(etcd.endpoint, "leader", None)  # the operator puts it right
            cluster.wait_for_leader(after_epoch=term.create_revision)
            calls.wait_for_more_than(before)
        assert f"{LOST} (epoch {term.create_revision})" in leader.log_text()
        assert metric_value(fetch_metrics(leader), KEY_LOST_METRIC) == 1
    calls.check(max_offset_us=MAX_OFFSET_US)
