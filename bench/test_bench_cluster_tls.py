"""A clustered leader on a secured etcd against one on a plaintext etcd, in the same run.

The secured member serves TLS, demands client certificates and has etcd's auth on with the
oracle's least-privilege role (:mod:`tests.support.secured_etcd`); the node logs in by its
certificate's CN. Each side is a one-node cluster (lease TTL 3 s) on its own etcd member, both
members on this machine with ``--election-timeout 100``:

- ``cluster tls timestamps c=16``: ``GetTimestamps(1)`` from 16 concurrent callers, as
  ``cluster unary throughput c=16`` in ``test_bench_cluster.py``. The window (200 ms) keeps etcd
  off the request path: this shows that the TLS link costs requests nothing.
- ``cluster tls commits 256 callers``: ``AsyncOracleClient.commit()`` from 256 callers (8 keys, no
  conflicts), as ``cluster commit 256 callers`` in ``test_bench_cluster_commit.py``: every batch's
  decisions are one fenced etcd txn, so each batch crosses the TLS link.
- ``cluster tls etcd txn``: in process, one node's ``EtcdClient`` sending small txns back to back
  (a put under the cluster's prefix), on each link: what TLS and auth add to each etcd round trip,
  without the oracle's own work and with less of the host's noise.

The secured side records ``interleaved_throughput_ratio``: the median, over pairs of back-to-back
rounds (plaintext, then TLS), of TLS throughput over plaintext throughput. On a host shared with
other work that wall-clock ratio swings pair to pair, so the commit benchmark also records the CPU
time the leader's process and its etcd member spent over all pairs (``/proc/<pid>/stat``):
``cpu_us_per_commit`` of each side and ``cpu_cost_ratio`` (TLS over plaintext), which the
host's load barely moves; on a busy host throughput follows the CPU cost. The timestamps
benchmark records the same ``cpu_cost_ratio``. The kill -9 failover
gap on a TLS etcd is ``cluster failover`` in ``test_bench_cluster.py`` (``kill -9, TLS etcd``).
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from hlc_oracle.cluster.etcd import EtcdClient, put
from hlc_oracle.cluster.etcd_security import EtcdSecurity
from hlc_oracle.config import ClusterSection

from bench.support import (
    INTERLEAVED_PAIRS,
    UNARY_CALLERS,
    UNARY_CALLS,
    bench_for,
    commit_round,
    concurrent_unary,
    interleaved_pairs,
    measure_commit_rounds,
    process_cpu_seconds,
    record_median_rate,
    timed,
)
from tests.support.etcd_process import EtcdMember
from tests.support.oracle_cluster import OracleCluster
from tests.support.secured_etcd import (
    GRANTED_PREFIX,
    oracle_etcd_args,
    secured_etcd_with_pki,
)

MODES = ["plaintext", "tls"]
COMMIT_CALLERS, COMMIT_PER_CALLER = 256, 10
COMMIT_PAIRS = 15
TXNS = 200


@pytest.fixture(scope="module")
def members(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[EtcdMember, EtcdMember, dict[str, Path]]]:
    """A plaintext etcd member, a secured one, and the certificates of the secured one."""
    directory = tmp_path_factory.mktemp("cluster-tls")
    with (
        EtcdMember(directory / "etcd-plaintext") as plaintext,
        secured_etcd_with_pki(directory / "secured") as (secured, pki),
    ):
        yield plaintext, secured, pki


@dataclass(frozen=True)
class Leader:
    target: str
    #: The leader's process and its etcd member's: the CPU a commit costs is theirs.
    pids: tuple[int, ...]


@pytest.fixture(scope="module")
def leaders(
    members: tuple[EtcdMember, EtcdMember, dict[str, Path]],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[dict[str, Leader]]:
    """The leader's target of a one-node cluster on the plaintext and on the secured etcd."""
    plaintext, secured, pki = members
    directory = tmp_path_factory.mktemp("cluster-tls-nodes")
    with (
        OracleCluster(directory / "on-plaintext", plaintext.endpoint, size=1, lease_ttl_s=3) as a,
        OracleCluster(
            directory / "on-tls",
            secured.client_url,
            size=1,
            lease_ttl_s=3,
            extra_args=oracle_etcd_args(pki),
        ) as b,
    ):
        found = {}
        for name, cluster, member in (("plaintext", a, plaintext), ("tls", b, secured)):
            node = cluster.wait_for_leader()
            assert node.process is not None and member.pid is not None
            found[name] = Leader(node.target, (node.process.pid, member.pid))
        yield found


@pytest.mark.parametrize("mode", MODES)
def test_timestamps_through_a_leader(
    request: pytest.FixtureRequest,
    leaders: dict[str, Leader],
    loop: asyncio.AbstractEventLoop,
    mode: str,
) -> None:
    bench = bench_for(request, mode == "plaintext")
    bench.group = "cluster tls timestamps c=16"

    def make(name: str) -> Callable[[], None]:
        return concurrent_unary(loop, leaders[name].target)

    run = make(mode)
    bench.pedantic(run, rounds=30, iterations=1)
    if not record_median_rate(bench, "calls_per_second", UNARY_CALLERS * UNARY_CALLS):
        return
    if mode == "tls":
        plaintext = make("plaintext")
        cpu = {"plaintext": 0.0, "tls": 0.0}
        pairs = []
        for _ in range(INTERLEAVED_PAIRS):
            pair = []
            for name, block in (("plaintext", plaintext), ("tls", run)):
                before = cpu_seconds(leaders[name])
                pair.append(timed(block))
                cpu[name] += cpu_seconds(leaders[name]) - before
            pairs.append(pair)
        bench.extra_info["interleaved_throughput_ratio"] = round(
            statistics.median(p / t for p, t in pairs), 3
        )
        bench.extra_info["cpu_cost_ratio"] = round(cpu["tls"] / cpu["plaintext"], 3)


@pytest.mark.parametrize("mode", MODES)
def test_commits_through_a_leader(
    request: pytest.FixtureRequest, leaders: dict[str, Leader], mode: str
) -> None:
    bench = bench_for(request, mode == "plaintext")
    bench.group = "cluster tls commits 256 callers"
    callers, per_caller = (32, 2) if bench.disabled else (COMMIT_CALLERS, COMMIT_PER_CALLER)
    measure_commit_rounds(bench, leaders[mode].target, callers, per_caller)
    if mode == "tls" and not bench.disabled:
        ratios = []
        cpu = {"plaintext": 0.0, "tls": 0.0}
        for _ in range(COMMIT_PAIRS):
            seconds = {}
            for name in ("plaintext", "tls"):
                before = cpu_seconds(leaders[name])
                seconds[name], _ = commit_round(leaders[name].target, callers, per_caller)
                cpu[name] += cpu_seconds(leaders[name]) - before
            ratios.append(seconds["plaintext"] / seconds["tls"])
            time.sleep(0.1)
        commits = COMMIT_PAIRS * callers * per_caller
        bench.extra_info["interleaved_throughput_ratio"] = round(statistics.median(ratios), 3)
        bench.extra_info["pair_ratios"] = [round(ratio, 3) for ratio in ratios]
        for name, spent in cpu.items():
            bench.extra_info[f"cpu_us_per_commit_{name}"] = round(spent / commits * 1e6, 1)
        bench.extra_info["cpu_cost_ratio"] = round(cpu["tls"] / cpu["plaintext"], 3)


def cpu_seconds(leader: Leader) -> float:
    return sum(process_cpu_seconds(pid) for pid in leader.pids)


def etcd_clients(
    members: tuple[EtcdMember, EtcdMember, dict[str, Path]],
) -> dict[str, EtcdClient]:
    plaintext, secured, pki = members
    cluster = ClusterSection(
        etcd_endpoints=(secured.client_url,),
        etcd_ca=pki["ca.pem"],
        etcd_cert=pki["oracle.pem"],
        etcd_key=pki["oracle-key.pem"],
    )
    return {
        "plaintext": EtcdClient([plaintext.endpoint], timeout_s=5),
        "tls": EtcdClient(
            [secured.client_url], timeout_s=5, security=EtcdSecurity.from_config(cluster)
        ),
    }


@pytest.mark.parametrize("mode", MODES)
def test_etcd_txn_round_trip(
    request: pytest.FixtureRequest,
    members: tuple[EtcdMember, EtcdMember, dict[str, Path]],
    loop: asyncio.AbstractEventLoop,
    mode: str,
) -> None:
    bench = bench_for(request, mode == "plaintext")
    bench.group = "cluster tls etcd txn"
    clients = etcd_clients(members)
    key = GRANTED_PREFIX.encode() + b"bench"
    txns = 10 if bench.disabled else TXNS

    def rounds_of(name: str) -> Callable[[], None]:
        client = clients[name]

        async def round_trips() -> None:
            for _ in range(txns):
                await client.txn([], [put(key, b"v")])

        return lambda: loop.run_until_complete(round_trips())

    try:
        run = rounds_of(mode)
        run()  # connect (and the TLS handshake) first
        bench.pedantic(run, rounds=10, iterations=1)
        stats = getattr(bench, "stats", None)
        if stats is not None:
            bench.extra_info["us_per_txn"] = round(stats.stats.median / txns * 1e6, 1)
        if mode == "tls" and stats is not None:
            plaintext = rounds_of("plaintext")
            plaintext()
            pairs = interleaved_pairs(plaintext, run)
            bench.extra_info["interleaved_ratio"] = round(
                statistics.median(t / p for p, t in pairs), 3
            )
    finally:
        for client in clients.values():
            loop.run_until_complete(client.close())
