"""The peers check on real etcd and real nodes, one node's wall clock shifted by libfaketime
(Debian's faketime, scripts/setup-system.sh): three nodes, node 3 two seconds ahead or behind,
never leads and names its offset; two nodes have no majority and say so; a candidate whose clock
lags the saved window defers to one that can serve at once; the peers' transport under TLS."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from hlc_oracle.client import OracleStatus
from hlc_oracle.config import TlsSection
from hlc_oracle.server.skew_guard import GrpcPeerTransport, peer_channel_credentials

from tests.support.etcd_process import EtcdMember
from tests.support.oracle_cluster import OracleCluster, calls_under_load
from tests.support.oracle_process import OracleProcess, skewed_clock_env

SKEWED = 3
#: Measure often, so a verdict comes within a second or two; generous waits on two busy cores.
FAST_PEERS = ("--set", "peers.interval_s=0.2")
WAIT_S = 20.0


def wait_for_status(
    cluster: OracleCluster,
    node_id: int,
    want: str,
    follower: bool = False,
    measured: int = 0,
    timeout_s: float = WAIT_S,
) -> OracleStatus:
    """``node_id``'s status once its peers check says ``want`` (with ``follower``, once it
    follows and its refusals say why it does not campaign; with ``measured``, once that many
    peers have an offset)."""
    deadline = time.monotonic() + timeout_s
    status = None
    while time.monotonic() < deadline:
        status = cluster.statuses().get(node_id)
        if (
            status is not None
            and status.peers_state == want
            and sum("offset_us" in peer for peer in status.peers) >= measured
            and (
                not follower
                or (status.role == "follower" and "does not campaign" in status.not_serving_reason)
            )
        ):
            return status
        time.sleep(0.1)
    raise AssertionError(f"node {node_id} never reported peers {want!r}: {status}")


@pytest.mark.parametrize(("offset", "direction"), [("+2s", "ahead of"), ("-2s", "behind")])
def test_a_skewed_node_never_leads_and_names_its_offset(
    etcd: EtcdMember, tmp_path: Path, offset: str, direction: str
) -> None:
    with OracleCluster(
        tmp_path,
        etcd.endpoint,
        extra_args=FAST_PEERS,
        node_env={SKEWED: skewed_clock_env(offset)},
    ) as cluster:
        skewed = wait_for_status(cluster, SKEWED, "far", follower=True)
        assert re.search(rf"clock is (1\.9|2\.0)\d* s {direction} its peers", skewed.peers_message)
        assert len(skewed.peers) == 2
        sign = -1 if offset.startswith("+") else 1  # peer - local
        for peer in skewed.peers:
            assert peer["far"] and abs(peer["offset_us"] - sign * 2_000_000) < 200_000, peer
        # The healthy nodes see node 3 far, but each other near: a majority of two.
        for node_id in (1, 2):
            status = wait_for_status(cluster, node_id, "ok", measured=2)
            by_node = {peer["node_id"]: peer for peer in status.peers}
            assert by_node[SKEWED]["far"] and not by_node[3 - node_id]["far"]
        # Leadership moves only between the healthy nodes: stop the leader twice.
        for _ in range(2):
            leader = cluster.wait_for_leader()
            leader_id = cluster.nodes.index(leader) + 1
            assert leader_id != SKEWED
            leader.stop()
            cluster.wait_for_leader(other_than=leader_id)
            assert cluster.statuses()[SKEWED].role == "follower"
            # The skewed node, down to one reachable peer, stays far: no evidence of recovery.
            assert cluster.statuses()[SKEWED].peers_state == "far"
            leader.start()
        assert cluster.statuses()[SKEWED].role == "follower"


def test_a_leader_that_turns_out_skewed_resigns(etcd: EtcdMember, tmp_path: Path) -> None:
    """Node 1 starts alone (no majority: it leads), two seconds ahead; once its peers join and
    measure it, it resigns and a healthy node leads."""
    with OracleCluster(
        tmp_path,
        etcd.endpoint,
        extra_args=FAST_PEERS,
        node_env={1: skewed_clock_env("+2s")},
    ) as cluster:
        skewed = wait_for_status(cluster, 1, "far", follower=True)
        assert "ahead of" in skewed.peers_message
        leader = cluster.wait_for_leader(other_than=1)
        assert cluster.nodes.index(leader) + 1 in (2, 3)
        assert "resigned" in cluster.nodes[0].log_text()


def test_two_nodes_have_no_majority(etcd: EtcdMember, tmp_path: Path) -> None:
    with OracleCluster(
        tmp_path,
        etcd.endpoint,
        size=2,
        extra_args=FAST_PEERS,
        node_env={2: skewed_clock_env("+2s")},
    ) as cluster:
        for node_id in (1, 2):
            status = wait_for_status(cluster, node_id, "no-majority", measured=1)
            assert "no majority" in status.peers_message
            assert "NTP guard decides alone" in status.peers_message
            # The one peer is measured and shown, far or not.
            assert len(status.peers) == 1 and "offset_us" in status.peers[0]
        # Without a majority the check holds nothing back: some node leads.
        cluster.wait_for_leader()


def test_a_lagging_candidate_defers_to_one_that_can_serve_at_once(
    etcd: EtcdMember, tmp_path: Path
) -> None:
    """The peers check off, node 3's clock 2 s behind: under load the saved window (the last
    leader's high-water mark) is 2 s ahead of it, so it would wait out the HLC bound after
    winning. With a healthy node alive it defers its campaign and the healthy node, which serves
    at once, takes over; once it is the last node, it takes over itself (after the wait)."""
    with OracleCluster(
        tmp_path,
        etcd.endpoint,
        extra_args=("--set", "peers.enabled=false"),
        node_env={SKEWED: skewed_clock_env("-2s")},
    ) as cluster:
        with calls_under_load(cluster.targets, threads=2, count=1) as calls:
            first = cluster.wait_for_leader()
            first_id = cluster.nodes.index(first) + 1
            assert first_id != SKEWED
            calls.wait_for_more_than(len(calls.calls))
            first.stop()
            second = cluster.wait_for_leader(other_than=first_id)
            second_id = cluster.nodes.index(second) + 1
            assert second_id != SKEWED
            calls.wait_for_more_than(len(calls.calls))
            second.stop()
            last = cluster.wait_for_leader(other_than=second_id)
            assert cluster.nodes.index(last) + 1 == SKEWED
            calls.wait_for_more_than(len(calls.calls))
        # It lagged indeed: as the last node it waited before serving, or had deferred its
        # campaign that long (a member key that outlived its node counts as a live peer). While
        # a healthy node lives, that one usually takes the key before this one even looks.
        log = cluster.nodes[SKEWED - 1].log_text()
        assert "waiting until it is within max_offset/2" in log or "campaign deferred" in log
    calls.check()


def test_status_command_prints_the_peers(etcd: EtcdMember, tmp_path: Path) -> None:
    with OracleCluster(tmp_path, etcd.endpoint, extra_args=FAST_PEERS) as cluster:
        wait_for_status(cluster, 1, "ok", measured=2)
        printed = cluster.nodes[0].cli("status").stdout
        assert re.search(r"peers_state +ok", printed), printed
        for node_id in (2, 3):
            assert re.search(rf"peer node {node_id} +127\.0\.0\.1:\d+: offset [-+]\d+ us", printed)


@pytest.mark.parametrize("mutual", [False, True], ids=["tls", "mutual-tls"])
def test_peers_reach_each_other_under_tls(
    start_oracle: Callable[..., OracleProcess], pki: dict[str, Path], mutual: bool
) -> None:
    """The transport a TLS node measures its peers with: it trusts ``peers.ca_file`` (or
    ``tls.client_ca_file``) and, under mutual TLS, presents its own certificate."""
    tls_args = ["--tls-cert", str(pki["server.pem"]), "--tls-key", str(pki["server-key.pem"])]
    if mutual:
        tls_args += ["--tls-client-ca", str(pki["ca.pem"])]
    peer = start_oracle(*tls_args, "--node-id", "7", wait_healthy=False)
    tls = TlsSection(
        cert_file=pki["server.pem"],
        key_file=pki["server-key.pem"],
        client_ca_file=pki["ca.pem"] if mutual else None,
    )
    ca_file = None if mutual else pki["ca.pem"]

    async def ask() -> tuple[int, int]:
        transport = GrpcPeerTransport(peer_channel_credentials(tls, ca_file))
        try:
            return await transport.call(peer.target, timeout_s=10)
        finally:
            await transport.close()

    node_id, peer_now_us = asyncio.run(ask())
    assert node_id == 7 and abs(peer_now_us - time.time_ns() // 1000) < 5_000_000
