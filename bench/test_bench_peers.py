"""The peers check (``hlc_oracle.skew.peers``) on real etcd and real nodes.

- ``peers skewed failover``: three nodes, node 3's wall clock 2 s ahead or behind (libfaketime,
  ``tests/support/oracle_process.py``'s ``skewed_clock_env``), the default peers settings
  (one measurement of every peer a second), a 1 s lease; three threads take timestamps through
  the client library given every node while the leader is killed (kill -9) six times, each
  killed node restarted before the next round. Figures: who led each round (never node 3), each
  failover's client-visible gap (the longest time between two consecutive successful calls
  around the kill), the largest lead of a timestamp over the host's true time when the call
  returned (``lead_ms``: a certain lead; ``lead_upper_ms`` measures against the time the call
  was sent), and the skewed node's peers message.
- ``peers cost``: what the monitor costs: its messages per second per node (``GetPeerClock``
  round trips and member-key reads, from the ``hlc_oracle_peers_messages`` counter over an idle
  spell) and the leader's timestamp throughput (``GetTimestamps(1)``, 16 concurrent callers)
  with the monitor on against off: two clusters on one etcd, one with ``peers.enabled=false``,
  bursts on either leader back to back in pairs, the median of the per-pair ratios.
- ``peers transport``: ``GetPeerClock`` against ``GetStatus`` as the measurement's RPC: round
  trip and answer size on one node.

These are figures, not timings: the benchmark's own time is one pass.
"""

from __future__ import annotations

import asyncio
import re
import statistics
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from hlc_oracle.proto import oracle_pb2 as pb

from bench.support import UNARY_CALLERS, UNARY_CALLS, concurrent_unary, interleaved_pairs
from tests.support.etcd_process import EtcdMember
from tests.support.oracle_cluster import (
    OracleCluster,
    calls_under_load,
    fetch_metrics,
)
from tests.support.oracle_process import OracleProcess, skewed_clock_env

SKEWED = 3
FAILOVERS = 6
#: Interleaved throughput pairs (a burst without the monitor, one with it).
PAIRS = 40
#: The peers check's messages: GetPeerClock round trips and reads of the member keys.
MESSAGES = re.compile(r'^hlc_oracle_peers_messages_total\{kind="[a-z_]+"\} (\S+)$', re.M)


@pytest.fixture(scope="module")
def etcd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EtcdMember]:
    with EtcdMember(tmp_path_factory.mktemp("peers-bench") / "etcd") as member:
        yield member


def wait_until_far(cluster: OracleCluster, timeout_s: float = 30.0) -> str:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        status = cluster.statuses().get(SKEWED)
        if status is not None and status.peers_state == "far" and status.role == "follower":
            return status.peers_message
        time.sleep(0.1)
    raise AssertionError(f"node {SKEWED} never found far: {cluster.statuses().get(SKEWED)}")


@pytest.mark.parametrize("offset", ["+2s", "-2s"], ids=["ahead", "behind"])
def test_skewed_failovers(benchmark: Any, etcd: EtcdMember, tmp_path: Path, offset: str) -> None:
    benchmark.group = "peers skewed failover"
    if benchmark.disabled and offset == "-2s":
        pytest.skip("bench-smoke: the ahead case runs the code; tests cover behind")
    rounds = 1 if benchmark.disabled else FAILOVERS
    figures: dict[str, Any] = {}

    def run() -> None:
        with OracleCluster(
            tmp_path,
            etcd.endpoint,
            extra_args=("--cluster-name", "ahead" if offset == "+2s" else "behind"),
            node_env={SKEWED: skewed_clock_env(offset)},
        ) as cluster:
            figures["message_before"] = wait_until_far(cluster)
            leaders: list[int] = []
            gaps: list[float] = []
            with calls_under_load(cluster.targets, count=1) as calls:
                for _ in range(rounds):
                    leader = cluster.wait_for_leader()
                    leaders.append(cluster.nodes.index(leader) + 1)
                    time.sleep(0.5)  # steady load before the kill
                    at = time.monotonic_ns()
                    leader.kill()
                    cluster.wait_for_leader(other_than=leaders[-1])
                    time.sleep(0.3)
                    gaps.append(calls.largest_gap_ms(at - 200_000_000))
                    leader.start()
                leaders.append(cluster.nodes.index(cluster.wait_for_leader()) + 1)
            figures["message_after"] = cluster.statuses()[SKEWED].peers_message
            calls.check()
            figures["leaders"] = leaders
            figures["gaps_ms"] = [round(gap, 1) for gap in gaps]
            figures["calls"] = len(calls.calls)
            figures["lead_ms"] = round(
                max(c.last.physical - c.wall_after_us for c in calls.calls) / 1000, 1
            )
            figures["lead_upper_ms"] = round(
                max(c.last.physical - c.wall_sent_us for c in calls.calls) / 1000, 1
            )

    benchmark.pedantic(run, rounds=1, iterations=1)
    benchmark.extra_info.update(figures)
    benchmark.extra_info["max_gap_ms"] = max(figures["gaps_ms"])
    assert SKEWED not in figures["leaders"], figures
    assert "does not campaign or lead" in figures["message_after"], figures


def messages_per_second(cluster: OracleCluster, spell_s: float) -> list[float]:
    """Each node's peers-check messages per second over ``spell_s`` of idle time."""

    def counts() -> list[float]:
        return [sum(map(float, MESSAGES.findall(fetch_metrics(node)))) for node in cluster.nodes]

    before, started = counts(), time.monotonic()
    time.sleep(spell_s)
    after, elapsed = counts(), time.monotonic() - started
    return [round((b - a) / elapsed, 2) for a, b in zip(before, after, strict=True)]


def test_monitor_cost(benchmark: Any, etcd: EtcdMember, tmp_path: Path) -> None:
    benchmark.group = "peers cost"
    pairs = 1 if benchmark.disabled else PAIRS
    spell_s = 0.5 if benchmark.disabled else 10.0
    figures: dict[str, Any] = {}

    def cluster(name: str, *args: str) -> OracleCluster:
        extra = ("--cluster-name", name, "--metrics-port", "0", *args)
        return OracleCluster(tmp_path / name, etcd.endpoint, lease_ttl_s=3, extra_args=extra)

    def run() -> None:
        loop = asyncio.new_event_loop()
        try:
            with cluster("on") as on, cluster("off", "--set", "peers.enabled=false") as off:
                figures["messages_per_second_per_node"] = messages_per_second(on, spell_s)
                with_monitor = concurrent_unary(loop, on.wait_for_leader().target)
                without = concurrent_unary(loop, off.wait_for_leader().target)
                # Back to back, in pairs: load that comes and goes hits both sides of a pair.
                figures["pairs"] = interleaved_pairs(without, with_monitor, pairs)
        finally:
            loop.close()

    benchmark.pedantic(run, rounds=1, iterations=1)
    times = figures.pop("pairs")
    benchmark.extra_info.update(figures)
    benchmark.extra_info["calls_per_second_on"] = round(
        UNARY_CALLERS * UNARY_CALLS / statistics.median(t for _, t in times)
    )
    benchmark.extra_info["calls_per_second_off"] = round(
        UNARY_CALLERS * UNARY_CALLS / statistics.median(t for t, _ in times)
    )
    # Time without over time with, per pair: the throughput ratio on / off.
    benchmark.extra_info["throughput_ratio_on_off"] = round(
        statistics.median(off / on for off, on in times), 3
    )


def test_transport_cost(benchmark: Any, tmp_path: Path) -> None:
    """Why a dedicated RPC: ``GetPeerClock`` against ``GetStatus`` (which also carries
    ``clock.physical_now_us``) on one node, sequential round trips, interleaved blocks; the
    answers' sizes. A smaller answer built without the status's work also means a shorter round
    trip, and the round trip is the measurement's error bound."""
    benchmark.group = "peers transport"
    calls = 20 if benchmark.disabled else 300
    pairs = 1 if benchmark.disabled else 15
    figures: dict[str, Any] = {}

    def run() -> None:
        with OracleProcess(tmp_path / "node") as node, grpc.insecure_channel(node.target) as ch:
            peer_clock = ch.unary_unary(
                "/hlc_oracle.v1.TimestampOracle/GetPeerClock",
                request_serializer=pb.GetPeerClockRequest.SerializeToString,
                response_deserializer=pb.GetPeerClockResponse.FromString,
            )
            status = ch.unary_unary(
                "/hlc_oracle.v1.TimestampOracle/GetStatus",
                request_serializer=pb.GetStatusRequest.SerializeToString,
                response_deserializer=pb.GetStatusResponse.FromString,
            )
            figures["peer_clock_bytes"] = peer_clock(pb.GetPeerClockRequest()).ByteSize()
            figures["status_bytes"] = status(pb.GetStatusRequest()).ByteSize()

            def block(call: Any, request: Any) -> float:
                started = time.perf_counter()
                for _ in range(calls):
                    call(request, timeout=10)
                return (time.perf_counter() - started) / calls

            times = [
                (block(status, pb.GetStatusRequest()), block(peer_clock, pb.GetPeerClockRequest()))
                for _ in range(pairs)
            ]
            figures["status_round_trip_us"] = round(statistics.median(s for s, _ in times) * 1e6)
            figures["peer_clock_round_trip_us"] = round(
                statistics.median(p for _, p in times) * 1e6
            )
            figures["status_over_peer_clock"] = round(statistics.median(s / p for s, p in times), 3)

    benchmark.pedantic(run, rounds=1, iterations=1)
    benchmark.extra_info.update(figures)
