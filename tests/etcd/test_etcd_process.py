"""The etcd fixtures start real members that answer through aetcd on one channel to all
endpoints, survive the loss of a member (its raft leader included), and leave nothing running."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import aetcd
from aetcd.exceptions import ConnectionFailedError, ConnectionTimeoutError

from tests.support.etcd_process import EtcdCluster, EtcdMember


def client_for(endpoints: list[str], timeout_s: int = 5) -> aetcd.Client:
    """An aetcd client on one gRPC channel to every endpoint, spread by round_robin.

    aetcd dials ``f"{host}:{port}"``, so a multi-address target (``ipv4:A:p,B:q``) passes through
    it split at its last colon. round_robin only picks connected members: after a kill -9 the next
    call goes to a live one (pick_first stayed on the dead address until the call's deadline).
    """
    host, _, port = ("ipv4:" + ",".join(endpoints)).rpartition(":")
    return aetcd.Client(
        host=host, port=int(port), timeout=timeout_s, options={"grpc.lb_policy_name": "round_robin"}
    )


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_one_member_answers_put_and_get(etcd: EtcdMember) -> None:
    async def scenario() -> tuple[bytes, int]:
        async with client_for([etcd.endpoint]) as client:
            await client.put(b"/hlc-oracle/test/key", b"value")
            got = await client.get(b"/hlc-oracle/test/key")
            assert got is not None
            lease = await client.lease(1)  # the fast election timeout allows a 1 s lease
            return got.value, lease.ttl

    assert asyncio.run(scenario()) == (b"value", 1)


def test_three_members_answer_after_the_raft_leader_is_killed(etcd_cluster: EtcdCluster) -> None:
    """A write sent just after the raft leader dies can be lost without an answer: a follower
    forwards it to the dead leader, and etcd answers "request timed out" only after 5 s plus two
    election timeouts. Callers give each request a short deadline and treat its expiry as "outcome
    unknown"; here the put is retried (the same value, so a repeat is harmless)."""
    assert len(etcd_cluster.members) == 3
    leader = etcd_cluster.raft_leader()

    async def put_within_attempts(client: aetcd.Client, key: bytes, value: bytes) -> int:
        for attempt in range(1, 6):
            try:
                await client.put(key, value)
                return attempt
            except (ConnectionTimeoutError, ConnectionFailedError):
                continue
        raise AssertionError(f"etcd took no put in 5 attempts of 1 s after {leader.name} died")

    async def scenario() -> list[bytes]:
        async with client_for(etcd_cluster.endpoints, timeout_s=1) as client:
            await client.put(b"/k", b"before")
            leader.kill()
            values = []
            for round_ in range(5):
                await put_within_attempts(client, b"/k", f"after {round_}".encode())
                got = await client.get(b"/k")
                assert got is not None
                values.append(got.value)
            return values

    assert asyncio.run(scenario()) == [f"after {n}".encode() for n in range(5)]
    assert not leader.running()
    assert etcd_cluster.raft_leader() is not leader  # a new raft leader among the other two
    leader.restart()  # rejoins on its ports and data dir
    assert leader.healthy()


def test_members_are_stopped_by_pid_on_exit(tmp_path: Path) -> None:
    with EtcdMember(tmp_path / "one") as member:
        pid, data_dir = member.pid, member.data_dir
        assert pid is not None and alive(pid) and data_dir.exists()
    assert not alive(pid) and not data_dir.exists()
    assert (tmp_path / "one" / "etcd.log").exists()  # kept for a failed test's reader
