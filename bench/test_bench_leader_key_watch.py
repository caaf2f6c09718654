"""How soon a leader whose key is deleted stops serving, against how soon the next one serves.

Three nodes on one real etcd (``--election-timeout 100``), a 10 s lease (the serving deadline
plays no part), three client threads calling ``GetTimestamps(1)`` through the client library
given every node. Each round deletes the leader key with a plain etcd call (what a follower's
deposition or ``etcdctl del`` does) and reads the nodes' own logs (millisecond timestamps, the
same host clock as the bench's):

- ``stop``: the delete sent to the old leader's ``leader key lost, stopping serving`` (its gate
  blocked under ``fence``: the moment its own watch of the key acted), or to its ``fenced out``
  in a round where a window renewal's fenced write failed first (counted in ``fenced_first``);
- ``won``: the delete sent to the next term's ``won the election`` (a campaign txn succeeded,
  the earliest a next leader exists);
- ``leading``: the delete sent to the next term's ``leading`` (it serves).

``leading - stop`` is the margin by which the old leader stopped before the next one served:
positive means no overlap, so real-time order held across the change in that round. Before the
watch, the old leader stopped only at its next fenced write, a window renewal every ~100 ms
(half the default 200 ms window), or its lease deadline. The next term may be the old leader's
own (it campaigns too once stepped down). ``extra_info`` holds every round's figures; the
benchmark's own time is one pass over the rounds.
"""

from __future__ import annotations

import json
import statistics
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from tests.support.etcd_process import EtcdMember
from tests.support.oracle_cluster import (
    OracleCluster,
    calls_under_load,
    read_etcd_key,
    write_etcd_key,
)
from tests.support.oracle_process import OracleProcess

ROUNDS = 10
LEASE_TTL_S = 10


def logged_at(node: OracleProcess, message: str, after_s: float) -> float | None:
    """Wall time (seconds) of the first line of ``node``'s JSON log whose message starts with
    ``message``, logged at or after ``after_s`` (the log's ms resolution, rounded down)."""
    for line in node.log_text().splitlines():
        if not line.startswith("{"):
            continue
        entry = json.loads(line)
        if not str(entry.get("message", "")).startswith(message):
            continue
        at = datetime.strptime(entry["ts"].replace("Z", "+0000"), "%Y-%m-%dT%H:%M:%S.%f%z")
        if at.timestamp() >= after_s - 0.001:
            return at.timestamp()
    return None


def first_logged(nodes: list[OracleProcess], message: str, after_s: float) -> float:
    found = [at for node in nodes if (at := logged_at(node, message, after_s)) is not None]
    assert found, f"no node logged {message!r}"
    return min(found)


def deletion_rounds(
    directory: Path, etcd: EtcdMember, rounds: int
) -> tuple[list[dict[str, float]], int]:
    """Each round's figures (milliseconds), and in how many a fenced write stopped the old
    leader before its watch did."""
    figures: list[dict[str, float]] = []
    fenced_first = 0
    with (
        OracleCluster(directory, etcd.endpoint, lease_ttl_s=LEASE_TTL_S) as cluster,
        calls_under_load(cluster.targets, count=1) as calls,
    ):
        for _ in range(rounds):
            leader = cluster.wait_for_leader()
            term = read_etcd_key(etcd.endpoint, "leader")
            assert term is not None
            time.sleep(0.3)  # steady load before the event
            at_ns = time.monotonic_ns()
            sent_s = time.time()
            write_etcd_key(etcd.endpoint, "leader", None)
            cluster.wait_for_leader(after_epoch=term.create_revision)
            time.sleep(0.2)
            stop = logged_at(leader, "leader key lost", sent_s)
            fenced = logged_at(leader, "fenced out", sent_s)
            if fenced is not None and (stop is None or fenced < stop):
                stop = fenced
                fenced_first += 1
            assert stop is not None, leader.log_text()[-2000:]
            won = first_logged(cluster.nodes, "won the election", sent_s)
            leading = first_logged(cluster.nodes, "leading", sent_s)
            figures.append(
                {
                    "stop_ms": (stop - sent_s) * 1e3,
                    "won_ms": (won - sent_s) * 1e3,
                    "leading_ms": (leading - sent_s) * 1e3,
                    "gap_ms": calls.largest_gap_ms(at_ns - 200_000_000),
                }
            )
    calls.check()
    return figures, fenced_first


def test_deleted_leader_key(benchmark: Any, tmp_path: Path) -> None:
    benchmark.group = "cluster leader key deleted"
    rounds = 1 if benchmark.disabled else ROUNDS
    with EtcdMember(tmp_path / "etcd") as etcd:
        figures, fenced_first = benchmark.pedantic(
            deletion_rounds, args=(tmp_path, etcd, rounds), rounds=1, iterations=1
        )
    benchmark.extra_info["fenced_first"] = fenced_first
    for name in ("stop_ms", "won_ms", "leading_ms", "gap_ms"):
        values = [round(figure[name], 1) for figure in figures]
        benchmark.extra_info[name] = values
        benchmark.extra_info[f"max_{name}"] = max(values)
        benchmark.extra_info[f"median_{name}"] = round(statistics.median(values), 1)
    margins = [round(figure["leading_ms"] - figure["stop_ms"], 1) for figure in figures]
    benchmark.extra_info["margin_ms"] = margins
    benchmark.extra_info["min_margin_ms"] = min(margins)
