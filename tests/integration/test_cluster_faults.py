"""The cluster under faults, Jepsen-style: real etcd, three real nodes (lease TTL 1 s), a few
client tasks taking timestamps and committing through the library client given every node while
a fault happens (tests/integration/nemesis.py), then every commit's status read back and the
whole history judged by one checker (tests/integration/history.py): no timestamp twice,
real-time order, nothing more than max_offset/2 ahead of the host's clock, every acknowledged
decision reads back the same, nothing decided twice.

Each scenario asserts the checker's verdict and that the cluster serves again after the fault;
how long the fault interrupted service is a figure (bench/test_bench_faults.py records it).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.integration.history import Instant, check
from tests.integration.nemesis import FaultCluster, Load, read_back

#: Calls the checker must see at the least: a run that recorded less proves little.
MIN_OPERATIONS = 20


@contextmanager
def under_load(cluster: FaultCluster) -> Iterator[Load]:
    """Load from three client tasks for the block, steady before it returns; after the block,
    every commit read back and the history checked."""
    with Load(cluster.targets) as load:
        load.wait_for_success_after(Instant.now())
        yield load
        load.wait_for_success_after(Instant.now())
    read_back(cluster.targets, load.history)
    result = check(load.history)
    result.assert_valid()
    assert result.figures["ok"] >= MIN_OPERATIONS, result.figures  # type: ignore[operator]


def test_kill_9_of_the_leader(tmp_path: Path) -> None:
    with FaultCluster(tmp_path) as cluster, under_load(cluster):
        for _ in range(2):
            leader = cluster.wait_for_leader()
            cluster.kill(leader)
            cluster.wait_for_leader(other_than=leader)
            cluster.node(leader).start()


def test_sigterm_of_the_leader(tmp_path: Path) -> None:
    with FaultCluster(tmp_path) as cluster, under_load(cluster):
        leader = cluster.wait_for_leader()
        cluster.terminate(leader)
        cluster.wait_for_leader(other_than=leader)
        cluster.node(leader).start()


def test_leader_paused_past_its_lease(tmp_path: Path) -> None:
    with FaultCluster(tmp_path) as cluster, under_load(cluster):
        leader = cluster.wait_for_leader()
        with cluster.paused(leader):
            cluster.wait_for_leader(other_than=leader)
            time.sleep(0.3)  # calls queue at the paused leader's socket meanwhile


def test_leader_cut_off_from_etcd(tmp_path: Path) -> None:
    """A silent partition: the leader's etcd connections hang. It stops serving by its own
    lease deadline; a follower wins once etcd expires the lease; healed, the old leader's late
    writes are fenced out."""
    with FaultCluster(tmp_path, etcd_proxies=True) as cluster, under_load(cluster):
        leader = cluster.wait_for_leader()
        with cluster.cut_off_from_etcd(leader):
            cluster.wait_for_leader(other_than=leader)
            time.sleep(0.5)


def test_follower_cut_off_from_etcd(tmp_path: Path) -> None:
    with FaultCluster(tmp_path, etcd_proxies=True) as cluster, under_load(cluster) as load:
        leader = cluster.wait_for_leader()
        follower = next(node for node in (1, 2, 3) if node != leader)
        with cluster.cut_off_from_etcd(follower):
            time.sleep(1.5)
            load.wait_for_success_after(Instant.now())
        assert cluster.wait_for_leader() == leader


def test_leader_partitioned_from_its_peers(tmp_path: Path) -> None:
    """Followers lose their connection to the leader without a refusal: no proof of death, so no
    deposition; etcd still sees the leader, which keeps serving."""
    with FaultCluster(tmp_path, peer_proxies=True) as cluster, under_load(cluster) as load:
        leader = cluster.wait_for_leader()
        with cluster.partitioned_from_peers(leader):
            time.sleep(1.5)
            load.wait_for_success_after(Instant.now())
        assert cluster.wait_for_leader() == leader


@pytest.mark.parametrize("raft_leader", [True, False], ids=["raft-leader", "raft-follower"])
def test_one_etcd_member_of_three_lost(tmp_path: Path, raft_leader: bool) -> None:
    with (
        FaultCluster(tmp_path, etcd_members=3) as cluster,
        under_load(cluster) as load,
        cluster.etcd_member_lost(raft_leader),
    ):
        time.sleep(0.5)
        load.wait_for_success_after(Instant.now())


def test_etcd_member_and_the_leader_lost_together(tmp_path: Path) -> None:
    with FaultCluster(tmp_path, etcd_members=3) as cluster, under_load(cluster):
        leader = cluster.wait_for_leader()
        with cluster.etcd_member_lost():
            cluster.kill(leader)
            cluster.wait_for_leader(other_than=leader)
        cluster.node(leader).start()


def test_leader_cut_off_from_etcd_then_its_successor_killed(tmp_path: Path) -> None:
    """The partitioned leader still believes in its window when the next one dies: whoever
    comes third must start above both."""
    with FaultCluster(tmp_path, etcd_proxies=True) as cluster, under_load(cluster):
        first = cluster.wait_for_leader()
        with cluster.cut_off_from_etcd(first):
            second = cluster.wait_for_leader(other_than=first)
            cluster.kill(second)
            third = cluster.wait_for_leader(other_than=second)
            assert third != first
        cluster.node(second).start()


def test_leader_partitioned_from_its_peers_then_killed(tmp_path: Path) -> None:
    """Killed behind a partition, the leader's death reaches no follower as a refusal: the next
    leader waits for the lease (the gap is its figure)."""
    with FaultCluster(tmp_path, peer_proxies=True) as cluster, under_load(cluster):
        leader = cluster.wait_for_leader()
        with cluster.partitioned_from_peers(leader):
            cluster.kill(leader)
            cluster.wait_for_leader(other_than=leader)
        cluster.node(leader).start()


#: The node whose wall clock is off: started last, so the first leader is a true one.
SKEWED = 3


@pytest.mark.parametrize(
    "offset",
    [
        pytest.param(
            "+2s",
            marks=pytest.mark.xfail(
                reason="no peer clock-offset monitor yet: a node 2 s ahead wins elections like "
                "any other and hands out timestamps 2 s ahead of true time",
                strict=False,
            ),
        ),
        "-2s",
    ],
    ids=["ahead", "behind"],
)
def test_one_node_clock_off_by_two_seconds(tmp_path: Path, offset: str) -> None:
    """One node's wall clock runs 2 s ahead or behind (libfaketime), the others' are true; each
    leader in turn is killed, three times, so the skewed node may be elected. Nothing may come
    out more than max_offset/2 ahead of true time, whoever leads."""
    with (
        FaultCluster(tmp_path, clock_offsets={SKEWED: offset}) as cluster,
        under_load(cluster),
    ):
        for _ in range(3):
            leader = cluster.wait_for_leader()
            cluster.kill(leader)
            cluster.wait_for_leader(other_than=leader)
            cluster.node(leader).start()
