"""Clustered mode on a real etcd (one member on loopback, ``--election-timeout 100``).

- ``cluster unary throughput c=16``: ``GetTimestamps(1)`` from 16 concurrent callers through a
  clustered leader (three nodes, the two followers idle) beside a standalone node (the baseline),
  same run, with the interleaved ratio as in ``test_bench_service.py`` (``bench/support.py``).
  Both run the default window (200 ms): the leader's window saves are fenced etcd txns, off the
  request path.
- ``cluster handler in-process``: one ``GetTimestamps(1)`` handler call without the transport, a
  clustered leader's node (its lease, keepalives and fenced window on the real etcd) beside a
  standalone one, interleaved: what leading adds per request, without the network's noise.
- ``cluster failover``: the client-visible gap when the leader goes away, for clients given all
  three targets (three threads calling back to back; the client library's ``OracleClient`` given
  every node, through ``tests/support/oracle_cluster.py``'s ``leader_client``: it follows
  redirects at once and moves on from an unreachable node; runs A to D used a test-only client
  over plain gRPC, ``LeaderClient``, that does the same). The
  gap of a round is the longest time between two consecutive successful calls from just before
  the event to well after it: the last success before to the first success after. Rounds of a
  graceful handover (SIGTERM of the leader) and of kill -9 with a 1 s lease TTL; the killed or
  stopped node is restarted as a follower before the next round. A follower deposes a killed
  leader as soon as its address refuses connections (``cluster.depose_dead_leader``, on by
  default; ``hlc_oracle/cluster/leader_liveness.py``); ``kill -9, lease only`` turns that off, so
  the dead leader's lease must expire first (runs A to E): the baseline of the same run.
  ``kill -9, TLS etcd`` is the kill -9 rounds on an etcd member with TLS, client certificates and
  auth (``tests/support/secured_etcd.py``; the nodes log in by their certificate's CN).
  ``extra_info`` holds every round's gap and the maximum. These are figures, not timings: the
  benchmark's own time is one pass over the rounds.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from bench.support import (
    UNARY_CALLERS,
    UNARY_CALLS,
    bench_for,
    concurrent_unary,
    handler_rounds,
    interleaved_pairs,
    record_gaps,
    record_median_rate,
    record_us_per_call,
)
from tests.support.etcd_process import EtcdMember
from tests.support.oracle_cluster import OracleCluster, calls_under_load
from tests.support.oracle_process import OracleProcess
from tests.support.secured_etcd import oracle_etcd_args, secured_etcd_with_pki

ROUNDS = 10


@pytest.fixture(scope="module")
def etcd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EtcdMember]:
    with EtcdMember(tmp_path_factory.mktemp("cluster-bench") / "etcd") as member:
        yield member


@pytest.fixture(scope="module")
def throughput_targets(
    etcd: EtcdMember, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, str]]:
    directory = tmp_path_factory.mktemp("cluster-throughput")
    with (
        OracleProcess(directory / "standalone") as standalone,
        OracleCluster(
            directory / "cluster",
            etcd.endpoint,
            lease_ttl_s=3,
            extra_args=("--cluster-name", "throughput"),
        ) as cluster,
    ):
        yield {"standalone": standalone.target, "leader": cluster.wait_for_leader().target}


@pytest.mark.parametrize("mode", ["standalone", "leader"])
def test_leader_throughput(
    request: pytest.FixtureRequest,
    throughput_targets: dict[str, str],
    loop: asyncio.AbstractEventLoop,
    mode: str,
) -> None:
    bench = bench_for(request, mode == "standalone")
    bench.group = "cluster unary throughput c=16"

    def make(name: str) -> Callable[[], None]:
        return concurrent_unary(loop, throughput_targets[name])

    run = make(mode)
    bench.pedantic(run, rounds=30, iterations=1)
    if not record_median_rate(bench, "calls_per_second", UNARY_CALLERS * UNARY_CALLS):
        return
    if mode == "leader":
        pairs = interleaved_pairs(make("standalone"), run)
        # Leader time over standalone time per pair: its inverse is the throughput ratio.
        bench.extra_info["interleaved_ratio"] = round(statistics.median(o / e for e, o in pairs), 3)
        bench.extra_info["interleaved_throughput_ratio"] = round(
            statistics.median(e / o for e, o in pairs), 3
        )


@pytest.fixture(scope="module")
def in_process_nodes(
    etcd: EtcdMember, tmp_path_factory: pytest.TempPathFactory, loop: asyncio.AbstractEventLoop
) -> Iterator[dict[str, Any]]:
    """A standalone node and a clustered leader, each without its transport, on ``loop``."""
    from hlc_oracle.config import OracleConfig
    from hlc_oracle.server.app import OracleServer

    directory = tmp_path_factory.mktemp("cluster-in-process")
    standalone_config, leader_config = OracleConfig(), OracleConfig()
    standalone_config.server.data_dir = directory / "standalone"
    leader_config.server.data_dir = directory / "leader"
    leader_config.cluster.etcd_endpoints = (etcd.endpoint,)
    leader_config.cluster.name = "in-process"
    standalone, leader = OracleServer(standalone_config), OracleServer(leader_config)
    assert leader.cluster is not None
    loop.run_until_complete(standalone.window.start())
    loop.run_until_complete(leader.cluster.start(leader.window, "127.0.0.1:1"))
    for server in (standalone, leader):
        server.gate.unblock("starting")
    deadline = time.monotonic() + 20
    while not leader.gate.serving:
        assert time.monotonic() < deadline, leader.gate.reasons()
        loop.run_until_complete(asyncio.sleep(0.02))
    yield {"standalone": standalone, "leader": leader}
    loop.run_until_complete(standalone.window.stop())
    loop.run_until_complete(leader.cluster.resign())


@pytest.mark.parametrize("mode", ["standalone", "leader"])
def test_handler_cost(
    request: pytest.FixtureRequest,
    in_process_nodes: dict[str, Any],
    loop: asyncio.AbstractEventLoop,
    mode: str,
) -> None:
    bench = bench_for(request, mode == "standalone")
    bench.group = "cluster handler in-process"

    def rounds_of(name: str) -> Callable[[], None]:
        return handler_rounds(loop, in_process_nodes[name].service.get_timestamps)

    run = rounds_of(mode)
    bench.pedantic(run, rounds=50, iterations=1)
    assert in_process_nodes[mode].gate.serving
    if not record_us_per_call(bench):
        return
    if mode == "leader":
        pairs = interleaved_pairs(rounds_of("standalone"), run)
        bench.extra_info["interleaved_ratio"] = round(statistics.median(o / e for e, o in pairs), 3)
        bench.extra_info["interleaved_min_ratio"] = round(
            min(o for _, o in pairs) / min(e for e, _ in pairs), 3
        )


def failover_gaps(
    directory: Path,
    etcd_endpoints: str,
    rounds: int,
    event: Callable[[OracleProcess], None],
    extra_args: tuple[str, ...] = (),
) -> list[float]:
    """Milliseconds of client-visible gap for each of ``rounds`` leader losses."""
    gaps: list[float] = []
    with (
        OracleCluster(
            directory,
            etcd_endpoints,
            lease_ttl_s=1,
            extra_args=("--cluster-name", directory.name, *extra_args),
        ) as cluster,
        calls_under_load(cluster.targets, count=1) as calls,
    ):
        for _ in range(rounds):
            leader = cluster.wait_for_leader()
            leader_id = cluster.nodes.index(leader) + 1
            time.sleep(0.5)  # steady load before the event
            at = time.monotonic_ns()
            event(leader)
            cluster.wait_for_leader(other_than=leader_id)
            time.sleep(0.3)
            gaps.append(calls.largest_gap_ms(at - 200_000_000))
            leader.start()
    calls.check()
    return gaps


def stop_gracefully(node: OracleProcess) -> None:
    assert node.stop() == 0


#: The kill -9 rounds' baseline: followers wait for the dead leader's lease to expire.
LEASE_ONLY = ("--set", "cluster.depose_dead_leader=false")


@pytest.fixture(scope="module")
def etcd_tls(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[EtcdMember, dict[str, Path]]]:
    # Every round names its own cluster: the role covers every cluster's keys.
    directory = tmp_path_factory.mktemp("cluster-bench-tls")
    with secured_etcd_with_pki(directory, prefix="/hlc-oracle/") as secured:
        yield secured


@pytest.mark.parametrize(
    "event", ["sigterm", "kill -9", "kill -9, lease only", "kill -9, TLS etcd"]
)
def test_failover_gap(
    request: pytest.FixtureRequest, benchmark: Any, tmp_path: Path, event: str
) -> None:
    benchmark.group = "cluster failover"
    rounds = 1 if benchmark.disabled else ROUNDS
    action = stop_gracefully if event == "sigterm" else OracleProcess.kill
    extra_args = LEASE_ONLY if event.endswith("lease only") else ()
    if event.endswith("TLS etcd"):
        member, pki = request.getfixturevalue("etcd_tls")
        endpoints, extra_args = member.client_url, oracle_etcd_args(pki)
    else:
        endpoints = request.getfixturevalue("etcd").endpoint
    gaps: list[float] = []
    benchmark.pedantic(
        lambda: gaps.extend(failover_gaps(tmp_path, endpoints, rounds, action, extra_args)),
        rounds=1,
        iterations=1,
    )
    record_gaps(benchmark, gaps)
