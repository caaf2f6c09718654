"""A clustered leader on a secured etcd against one on a plaintext etcd, in the same run.

The secured member serves TLS, demands client certificates and has etcd's auth on with the
oracle's least-privilege role (:mod:`tests.integration.secured_etcd`); the node logs in by its
certificate's CN. Each side is a one-node cluster (lease TTL 3 s) on its own etcd member, both
members on this machine with ``--election-timeout 100``:

- ``cluster tls timestamps c=16``: ``GetTimestamps(1)`` from 16 concurrent callers, as
  ``cluster unary throughput c=16`` in ``test_bench_cluster.py``. The window (200 ms) keeps etcd
  off the request path: this shows that the TLS link costs requests nothing.
- ``cluster tls commits 256 callers``: ``AsyncOracleClient.commit()`` from 256 callers (8 keys, no
  conflicts), as ``cluster commit 256 callers`` in ``test_bench_cluster_commit.py``: every batch's
  decisions are one fenced etcd txn, so each batch crosses the TLS link.

The secured side records ``interleaved_throughput_ratio``: the median, over pairs of back-to-back
rounds (plaintext, then TLS), of TLS throughput over plaintext throughput. The kill -9 failover
gap on a TLS etcd is ``cluster failover`` in ``test_bench_cluster.py`` (``kill -9, TLS etcd``).
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from bench.test_bench_cluster import CALLERS, CALLS
from bench.test_bench_cluster_commit import commit_round
from bench.test_bench_commit import record_rate
from bench.test_bench_service import INTERLEAVED_PAIRS, ONE, _concurrent_unary, _timed
from tests.etcd_process import EtcdMember
from tests.integration.oracle_cluster import OracleCluster
from tests.integration.secured_etcd import oracle_etcd_args, secured_etcd_with_pki

MODES = ["plaintext", "tls"]
COMMIT_CALLERS, COMMIT_PER_CALLER = 256, 20
COMMIT_PAIRS = 7


@pytest.fixture(scope="module")
def leaders(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """The leader's target of a one-node cluster on a plaintext and on a secured etcd."""
    directory = tmp_path_factory.mktemp("cluster-tls")
    with (
        EtcdMember(directory / "etcd-plaintext") as plaintext,
        secured_etcd_with_pki(directory / "secured") as (secured, pki),
        OracleCluster(directory / "on-plaintext", plaintext.endpoint, size=1, lease_ttl_s=3) as a,
        OracleCluster(
            directory / "on-tls",
            secured.client_url,
            size=1,
            lease_ttl_s=3,
            extra_args=oracle_etcd_args(pki),
        ) as b,
    ):
        yield {"plaintext": a.wait_for_leader().target, "tls": b.wait_for_leader().target}


@pytest.fixture(scope="module")
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    event_loop = asyncio.new_event_loop()
    yield event_loop
    event_loop.close()


@pytest.mark.parametrize("mode", MODES)
def test_timestamps_through_a_leader(
    request: pytest.FixtureRequest,
    leaders: dict[str, str],
    loop: asyncio.AbstractEventLoop,
    mode: str,
) -> None:
    bench = request.getfixturevalue("baseline" if mode == "plaintext" else "benchmark")
    bench.group = "cluster tls timestamps c=16"

    def make(name: str) -> Callable[[], None]:
        return _concurrent_unary(loop, leaders[name], ONE, CALLERS, CALLS)

    run = make(mode)
    bench.pedantic(run, rounds=30, iterations=1)
    stats = getattr(bench, "stats", None)
    if stats is None:  # --benchmark-disable: ran once, nothing timed
        return
    bench.extra_info["calls_per_second"] = round(CALLERS * CALLS / stats.stats.median)
    if mode == "tls":
        plaintext = make("plaintext")
        pairs = [(_timed(plaintext), _timed(run)) for _ in range(INTERLEAVED_PAIRS)]
        bench.extra_info["interleaved_throughput_ratio"] = round(
            statistics.median(p / t for p, t in pairs), 3
        )


@pytest.mark.parametrize("mode", MODES)
def test_commits_through_a_leader(
    request: pytest.FixtureRequest, leaders: dict[str, str], mode: str
) -> None:
    bench = request.getfixturevalue("baseline" if mode == "plaintext" else "benchmark")
    bench.group = "cluster tls commits 256 callers"
    callers, per_caller = (32, 2) if bench.disabled else (COMMIT_CALLERS, COMMIT_PER_CALLER)
    figures: dict[str, Any] = {}

    def body() -> None:
        figures["seconds"], figures["latencies"] = commit_round(leaders[mode], callers, per_caller)

    bench.pedantic(body, rounds=3, iterations=1)
    record_rate(bench, callers * per_caller, figures["seconds"], figures["latencies"])
    if mode == "tls" and not bench.disabled:
        ratios = []
        for _ in range(COMMIT_PAIRS):
            plaintext, _ = commit_round(leaders["plaintext"], callers, per_caller)
            secured, _ = commit_round(leaders["tls"], callers, per_caller)
            ratios.append(plaintext / secured)
            time.sleep(0.1)
        bench.extra_info["interleaved_throughput_ratio"] = round(statistics.median(ratios), 3)
        bench.extra_info["pair_ratios"] = [round(ratio, 3) for ratio in ratios]
