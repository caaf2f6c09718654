"""ClusterNode in process against a real etcd: start-up on a lease that lapsed before its first
use, a joining node that names the leader at once, what a node logs while etcd is away and
when it is back, and the gate through a handover: settling (requests held) from the old leader's
end until each node serves or names the next leader."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

import pytest
from hlc_oracle import Clock
from hlc_oracle.cluster.etcd import EtcdClient
from hlc_oracle.cluster.node import ClusterNode
from hlc_oracle.node.gate import ServingGate
from hlc_oracle.node.metrics import ServerMetrics
from hlc_oracle.node.window import TimestampWindow

from tests.support.etcd_process import EtcdMember
from tests.support.waiting import wait_for_async

#: The address a node advertises (nothing listens there: no follower probes it in these tests).
ADDRESS = "127.0.0.1:1"


def make_node(
    endpoint: str,
    after_grant: Callable[[], Awaitable[None]] | None = None,
    lease_ttl_s: int = 1,
    node_id: int = 1,
    depose_dead_leader: bool = True,
) -> tuple[ClusterNode, TimestampWindow]:
    clock = Clock(node=node_id)
    fatal: list[str] = []
    node = ClusterNode(
        endpoints=[endpoint],
        cluster_name="node-test",
        lease_ttl_s=lease_ttl_s,
        node_id=node_id,
        clock=clock,
        gate=ServingGate(),
        metrics=ServerMetrics(),
        on_fatal=fatal.append,
        after_grant=after_grant,
        depose_dead_leader=depose_dead_leader,
    )
    window = TimestampWindow(clock, node.store, size_us=200_000, check_interval_s=0.05)
    return node, window


def test_start_up_survives_a_lease_that_lapsed_before_its_first_use(
    etcd: EtcdMember, caplog: pytest.LogCaptureFixture
) -> None:
    """A pause longer than the TTL between the grant and the first txn (a loaded host): the
    lease is gone when the node id is claimed; the node grants another and goes on."""
    pauses: list[int] = []

    async def pause_once() -> None:
        if not pauses:
            pauses.append(1)
            await asyncio.sleep(2.6)  # TTL 1 s; etcd sweeps expired leases every 0.5 s

    async def body() -> tuple[int, int]:
        node, window = make_node(etcd.endpoint, after_grant=pause_once)
        try:
            await node.start(window, ADDRESS)
            await wait_for_async(lambda: node.role == "leader" and node.gate.serving, 10)
            return node.session.lease_id, await node.client.time_to_live(node.session.lease_id)
        finally:
            await node.resign()

    with caplog.at_level(logging.WARNING, logger="hlc_oracle.cluster"):
        lease, ttl = asyncio.run(body())
    assert pauses == [1]
    assert lease != 0 and ttl >= 0  # leading on a live lease (-1: gone)
    assert "the new lease expired before it was used" in caplog.text


def test_etcd_away_is_one_warning_and_its_return_one_info(
    etcd: EtcdMember, caplog: pytest.LogCaptureFixture
) -> None:
    """etcd stops answering (SIGSTOP) under a leader for several keepalive rounds and election
    retries, then comes back: one warning, one info, and each failing call's own record at most
    once per interval."""
    away_s = 3.0

    async def body() -> None:
        node, window = make_node(etcd.endpoint)
        try:
            await node.start(window, ADDRESS)
            await wait_for_async(lambda: node.role == "leader" and node.gate.serving, 10)
            etcd.pause()
            try:
                await asyncio.sleep(away_s)
            finally:
                etcd.resume()
            # Back: the node leads again (a new lease, a new term).
            await wait_for_async(lambda: node.role == "leader" and node.gate.serving, 20)
        finally:
            await node.resign()

    with caplog.at_level(logging.INFO, logger="hlc_oracle"):
        asyncio.run(body())
    messages = [record.getMessage() for record in caplog.records]
    assert messages.count("etcd unreachable") == 1, messages
    assert messages.count("etcd reachable again") == 1, messages
    assert messages.index("etcd unreachable") < messages.index("etcd reachable again")
    back = next(r for r in caplog.records if r.getMessage() == "etcd reachable again")
    assert back.fields["failed_calls"] >= 2  # type: ignore[attr-defined]
    # Keepalives every TTL/3 and election retries every 0.1 s: without the limit, dozens.
    for repeated in ("lease keepalive failed", "etcd call failed", "window save failed"):
        assert messages.count(repeated) <= 2, (repeated, messages)


def test_a_renewal_that_fails_half_way_is_tried_again(etcd: EtcdMember) -> None:
    """The lease expires while etcd is away; on its return the new lease is granted, then etcd
    stops again before the node id is claimed (the claim gets no answer in time). The node
    renews again and leads once etcd is back, instead of waiting for keepalives that were
    never started."""
    grants: list[int] = []

    async def stall_first_claim_of_a_renewal() -> None:
        grants.append(1)
        if len(grants) == 2:  # the first renewal's grant (the first is the start's)
            etcd.pause()
            asyncio.get_running_loop().call_later(1.5, etcd.resume)

    async def body() -> None:
        node, window = make_node(etcd.endpoint, after_grant=stall_first_claim_of_a_renewal)
        try:
            await node.start(window, ADDRESS)
            await wait_for_async(lambda: node.role == "leader" and node.gate.serving, 10)
            etcd.pause()
            try:
                await asyncio.sleep(2.5)  # longer than the TTL: the lease expires in etcd
            finally:
                etcd.resume()
            await wait_for_async(lambda: len(grants) >= 2, 10)
            await wait_for_async(lambda: node.role == "leader" and node.gate.serving, 20)
            assert len(grants) >= 3  # the stalled renewal's lease was replaced
        finally:
            etcd.resume()
            await node.resign()

    asyncio.run(body())


def test_a_joining_node_names_the_leader_as_soon_as_it_has_joined(etcd: EtcdMember) -> None:
    async def body() -> None:
        leader, leader_window = make_node(etcd.endpoint, node_id=1)
        follower, follower_window = make_node(etcd.endpoint, node_id=2)
        try:
            await leader.start(leader_window, ADDRESS)
            await wait_for_async(lambda: leader.role == "leader" and leader.gate.serving, 10)
            await follower.start(follower_window, "127.0.0.1:2")
            # Before its election loop has run once: status and refusals name the leader.
            assert follower.leader is not None and follower.leader.node_id == 1
            assert follower.gate.redirect == ADDRESS
            assert "the leader is node 1" in (follower.gate.refusal() or "")
        finally:
            await follower.resign()
            await leader.resign()

    asyncio.run(body())


def test_through_a_handover_every_refusal_settles_until_the_next_leader_is_named(
    etcd: EtcdMember,
) -> None:
    """Node 1 leads, nodes 2 and 3 follow it; node 1 resigns. From then on each follower's gate
    only settles (a request would be held, not refused) until it serves as the next leader or
    names it: no refusal in between that would send a client to sleep in a backoff."""

    async def body() -> None:
        nodes = [make_node(etcd.endpoint, node_id=n, depose_dead_leader=False) for n in (1, 2, 3)]
        (leader, leader_window), *followers = nodes
        states: dict[int, list[tuple[bool, bool, str | None]]] = {2: [], 3: []}
        try:
            await leader.start(leader_window, "127.0.0.1:1")
            await wait_for_async(lambda: leader.role == "leader" and leader.gate.serving, 10)
            for node, window in followers:
                await node.start(window, f"127.0.0.1:{node.node_id}")
                await wait_for_async(lambda node=node: node.gate.redirect == "127.0.0.1:1", 10)
                gate = node.gate
                log = states[node.node_id]
                gate.add_listener(
                    lambda serving, _, gate=gate, log=log: log.append(
                        (serving, gate.settling, gate.redirect)
                    )
                )
            await leader.resign()
            await wait_for_async(
                lambda: any(node.role == "leader" and node.gate.serving for node, _ in followers),
                10,
            )
            (winner,) = [node for node, _ in followers if node.role == "leader"]
            (loser,) = [node for node, _ in followers if node is not winner]
            winner_address = f"127.0.0.1:{winner.node_id}"
            await wait_for_async(lambda: loser.gate.redirect == winner_address, 10)
        finally:
            for node, _ in reversed(nodes):
                await node.resign()
        # Before the resign: a follower naming node 1 (the listener's first call).
        for node_id, log in states.items():
            assert log[0] == (False, False, "127.0.0.1:1"), (node_id, log)
        winner_log = states[winner.node_id]
        loser_log = states[loser.node_id]
        # Then settling only, until serving.
        serving_at = [state[0] for state in winner_log].index(True)
        assert all(settling for _, settling, _ in winner_log[1:serving_at]), winner_log
        assert len(winner_log[1:serving_at]) >= 1, winner_log  # it did settle meanwhile
        # The loser: settling only, until a refusal that names the winner.
        named_at = [redirect for _, _, redirect in loser_log].index(winner_address)
        assert all(settling for _, settling, _ in loser_log[1:named_at]), loser_log
        assert loser_log[named_at][:2] == (False, False), loser_log

    asyncio.run(body())


def test_a_resigning_leader_holds_requests_then_names_its_successor(etcd: EtcdMember) -> None:
    """A graceful stop blocks the gate as settling (the server does, before it resigns): a
    request held there from before the resign is refused after it naming the next leader, which
    took the key meanwhile, instead of naming none."""

    async def body() -> tuple[str | None, str | None, bool]:
        leader, leader_window = make_node(etcd.endpoint, node_id=1, depose_dead_leader=False)
        follower, follower_window = make_node(etcd.endpoint, node_id=2, depose_dead_leader=False)
        try:
            await leader.start(leader_window, "127.0.0.1:1")
            await wait_for_async(lambda: leader.role == "leader" and leader.gate.serving, 10)
            await follower.start(follower_window, "127.0.0.1:2")
            await wait_for_async(lambda: follower.gate.redirect == "127.0.0.1:1", 10)
            leader.gate.block("shutdown", "the server is shutting down", settling=True)
            held = asyncio.ensure_future(leader.gate.hold(60.0))
            await asyncio.sleep(0.01)
            assert not held.done()
            await leader.resign()
            await asyncio.wait_for(held, 10.0)
            return leader.gate.redirect, leader.gate.refusal(), leader.gate.settling
        finally:
            await follower.resign()

    redirect, refusal, settling = asyncio.run(body())
    assert redirect == "127.0.0.1:2" and not settling
    assert refusal is not None and "the leader is node 2" in refusal


def test_a_resign_saves_the_window_and_deletes_the_leader_key_in_one_txn(etcd: EtcdMember) -> None:
    """A leader that resigns saves its exact high-water mark (the clock's last physical time)
    in the txn that deletes its leader key: one revision holds both."""

    async def body() -> None:
        node, window = make_node(etcd.endpoint, node_id=1, depose_dead_leader=False)
        await node.start(window, "127.0.0.1:1")
        await wait_for_async(lambda: node.role == "leader" and node.gate.serving, 10)
        last = node.clock.now()
        leader_key, window_key = node.election.key, node.store.key  # type: ignore[union-attr]
        node.gate.block("shutdown", "the server is shutting down", settling=True)
        await node.resign()
        client = EtcdClient([etcd.endpoint], timeout_s=2.0)
        try:
            saved, _ = await client.get(window_key)
            assert saved is not None and node.store.limit_of(saved) == last.physical
            revision = saved.mod_revision
            before = await client.range(leader_key, leader_key + b"\0", revision=revision - 1)
            at = await client.range(leader_key, leader_key + b"\0", revision=revision)
            assert len(before.kvs) == 1 and not at.kvs
        finally:
            await client.close()

    asyncio.run(body())
