"""Timestamps from the client library while the leader is paused (SIGSTOP), on real nodes and a
real etcd.

A paused leader fails nothing: its connections stay up and its calls wait at its socket. The
client sends a timestamp call that a node of several leaves unanswered for a while to the other
nodes too, leaving the silent one aside; once the leader's lease has expired, its successor
answers. Lease TTL 1 s (etcd runs with --election-timeout 100); client timeout 20 s.
"""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

from hlc_oracle.client import AsyncOracleClient

from tests.support.client_commit_load import CLIENT_TIMEOUT_S
from tests.support.etcd_process import EtcdMember
from tests.support.oracle_cluster import OracleCluster

LEASE_TTL_S = 1
#: A bound for a liveness check (an answer while the leader is still paused), not a timing: far
#: above the lease TTL and the next leader's takeover.
ANSWER_WITHIN_S = 15.0


def test_timestamps_come_from_the_next_leader_while_the_leader_is_paused(
    etcd: EtcdMember, tmp_path: Path
) -> None:
    with OracleCluster(tmp_path, etcd.endpoint, size=2, lease_ttl_s=LEASE_TTL_S) as cluster:
        leader = cluster.wait_for_leader()
        leader_id = cluster.nodes.index(leader) + 1

        async def scenario() -> None:
            async with AsyncOracleClient(cluster.targets, timeout=CLIENT_TIMEOUT_S) as client:
                before = await client.get_timestamp()
                assert before.node == leader_id
                leader.signal(signal.SIGSTOP)
                try:
                    # Both answered while the leader is still paused: by the next one.
                    merged = await asyncio.wait_for(client.get_timestamp(), ANSWER_WITHIN_S)
                    unary = await asyncio.wait_for(client.get_timestamps_unary(3), ANSWER_WITHIN_S)
                finally:
                    leader.signal(signal.SIGCONT)
                assert merged.node != leader_id and merged > before
                assert unary.first.node != leader_id and unary.first > merged
                later = await client.get_timestamp()
                assert later > unary[2]

        asyncio.run(scenario())
