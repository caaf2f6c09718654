"""hlc_oracle.cluster against a real etcd: session, election, fence, members, the window key."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from hlc_oracle.cluster.election import Election, end_of_term
from hlc_oracle.cluster.etcd import (
    EndpointError,
    EtcdClient,
    EtcdError,
    KeyValue,
    WatchEvent,
    channel_target,
    get,
    range_op,
)
from hlc_oracle.cluster.etcd_security import EtcdSecurity
from hlc_oracle.cluster.fence import Fence, FenceError, Term
from hlc_oracle.cluster.members import DuplicateNodeError, register
from hlc_oracle.cluster.session import Session
from hlc_oracle.cluster.window_store import EtcdWindowStore
from hlc_oracle.config import ClusterSection
from hlc_oracle.node.window import WindowSaveError

from tests.support.etcd_process import EtcdCluster, EtcdMember

PREFIX = "/hlc-oracle/test/"


def run(etcd_endpoints: list[str], body: Callable[[EtcdClient], Awaitable[Any]]) -> Any:
    async def main() -> Any:
        client = EtcdClient(etcd_endpoints, timeout_s=1.0)
        try:
            return await body(client)
        finally:
            await client.close()

    return asyncio.run(main())


async def candidates(
    client: EtcdClient, lease_ttl_s: int
) -> tuple[tuple[Session, Election], tuple[Session, Election]]:
    """Nodes 1 and 2, each with an open session (lease) and its election on ``PREFIX``."""
    pairs = []
    for node_id in (1, 2):
        session = Session(client, lease_ttl_s)
        await session.open()
        pairs.append((session, Election(client, PREFIX, node_id, f"127.0.0.1:{node_id}")))
    return pairs[0], pairs[1]


@pytest.mark.parametrize(
    "endpoint", ["", "localhost", "127.0.0.1:0", "127.0.0.1:70000", "ftp://h:1", "h:x"]
)
def test_malformed_endpoints_are_named(endpoint: str) -> None:
    with pytest.raises(EndpointError, match="is not host:port"):
        channel_target([endpoint])


def test_one_channel_target_names_every_endpoint() -> None:
    assert channel_target(["127.0.0.1:1", "localhost:2"]) == "ipv4:127.0.0.1:1,127.0.0.1:2"
    assert channel_target(["https://127.0.0.1:1", "http://localhost:2"]) == (
        "ipv4:127.0.0.1:1,127.0.0.1:2"
    )


def test_campaign_epochs_and_the_fence(etcd: EtcdMember) -> None:
    async def body(client: EtcdClient) -> None:
        (first, one), (second, two) = await candidates(client, lease_ttl_s=1)
        won = await one.campaign(first.lease_id)
        lost = await two.campaign(second.lease_id)
        assert won.term is not None and lost.term is None
        assert lost.holder is not None and lost.holder.node_id == 1
        assert lost.holder.epoch == won.term.epoch == won.revision
        fenced: list[str] = []
        store = EtcdWindowStore(client, PREFIX, fenced.append)
        with pytest.raises(WindowSaveError, match="not the leader"):
            await store.persist(5)
        store.fence = Fence(client, won.term)
        await store.persist(1_000)
        assert await store.load() == 1_000
        # Node 1 resigns; node 2, watching, sees the vacancy and wins a later epoch.
        vacancy = asyncio.create_task(two.wait_for_vacancy(lost.revision, lambda _: None))
        await one.resign(Fence(client, won.term))
        await asyncio.wait_for(vacancy, 5)
        again = await two.campaign(second.lease_id)
        assert again.term is not None and again.term.epoch > won.term.epoch
        # Node 1's late window write is refused by the fence, and reported.
        with pytest.raises(WindowSaveError, match="refused by the fence: the leader key holds"):
            await store.persist(9_000)
        assert fenced and "epoch" in fenced[0]
        assert await store.load() == 1_000
        with pytest.raises(FenceError):
            await one.resign(Fence(client, won.term))
        await first.close(revoke=True)
        await second.close(revoke=True)

    run([etcd.endpoint], body)


def test_a_resigning_leader_names_the_successor_from_a_watch_that_starts_now(
    etcd: EtcdMember,
) -> None:
    """``successor`` watches from etcd's revision when its watch is created (reported to
    ``on_created``; etcd reports such a watch's events at once, where one from a past revision
    waits for its resync loop), then reads the key: a successor that took the key before the
    watch is found by the read, one that takes it later by the watch."""

    async def body(client: EtcdClient) -> None:
        (first, one), (second, two) = await candidates(client, lease_ttl_s=5)
        won = await one.campaign(first.lease_id)
        assert won.term is not None
        # The resigning leader's own writes move the revision on after any earlier read.
        for value in range(20):
            await client.put(f"{PREFIX}other".encode(), b"%d" % value)
        created: list[int] = []
        events = client.watch(one.key, 0, created.append)
        watching = asyncio.ensure_future(anext(events))
        while not created:
            assert not watching.done()
            await asyncio.sleep(0.01)
        _, revision = await client.get(one.key)
        assert created == [revision]
        # Deleted and taken after it was asked for (its watch or its read finds it).
        successor = asyncio.create_task(one.successor(won.term))
        await one.resign(Fence(client, won.term))
        taken = await two.campaign(second.lease_id)
        assert taken.term is not None
        named = await asyncio.wait_for(successor, 5)
        assert (named.node_id, named.epoch) == (2, taken.term.epoch)
        event = await asyncio.wait_for(watching, 5)
        assert event.deleted and event.kv.mod_revision > revision
        await events.aclose()
        # Already taken when asked (its read finds it).
        named = await asyncio.wait_for(one.successor(won.term), 5)
        assert (named.node_id, named.epoch) == (2, taken.term.epoch)
        await first.close(revoke=True)
        await second.close(revoke=True)

    run([etcd.endpoint], body)


def test_depose_deletes_the_leader_key_only_in_the_term_it_names(etcd: EtcdMember) -> None:
    async def body(client: EtcdClient) -> None:
        (first, one), (second, two) = await candidates(client, lease_ttl_s=5)
        won = await one.campaign(first.lease_id)
        holder = (await two.campaign(second.lease_id)).holder
        assert won.term is not None and holder is not None and holder.lease == first.lease_id
        # Another lease, or another epoch, under the same key: not the term seen, kept.
        assert not await two.depose(replace(holder, lease=second.lease_id))
        assert not await two.depose(replace(holder, epoch=holder.epoch + 1))
        assert await two.current() == holder
        assert await two.depose(holder)
        assert await two.current() is None
        # A second follower racing for the same verdict: its compare fails harmlessly, also once
        # the key is won again (the next term is never deposed by a verdict on the last one).
        assert not await one.depose(holder)
        assert (await two.campaign(second.lease_id)).term is not None
        assert not await one.depose(holder)
        current = await one.current()
        assert current is not None and (current.node_id, current.lease) == (2, second.lease_id)
        await first.close(revoke=True)
        await second.close(revoke=True)

    run([etcd.endpoint], body)


OWN = b'{"address": "127.0.0.1:1", "node_id": 1}'
TERM = Term(b"/leader", OWN, 7)


@pytest.mark.parametrize(
    ("deleted", "create_revision", "value", "ended"),
    [
        # The put that made the term, or one that keeps its value and create revision.
        (False, 7, OWN, None),
        (True, 0, b"", "deleted at revision 9 (a follower deposed this node"),
        (False, 7, b"operator", "overwritten at revision 9: it holds operator of epoch 7"),
        # This node's identity in a later term (the key was deleted and won again): not this term.
        (False, 9, OWN, "overwritten at revision 9: it holds {"),
    ],
)
def test_end_of_term_names_what_ended_the_term(
    deleted: bool, create_revision: int, value: bytes, ended: str | None
) -> None:
    event = WatchEvent(deleted, KeyValue(b"/leader", value, create_revision, 9, 0))
    found = end_of_term(event, TERM)
    if ended is None:
        assert found is None
    else:
        assert found is not None and ended in found, found


def test_a_leader_sees_its_key_overwritten_or_deleted_across_a_broken_watch(
    etcd: EtcdMember,
) -> None:
    async def body(client: EtcdClient) -> None:
        session = Session(client, 5)
        await session.open()
        one = Election(client, PREFIX, 1, "127.0.0.1:1")
        broken: list[EtcdError] = []

        async def campaign() -> Term:
            won = await one.campaign(session.lease_id)
            assert won.term is not None
            return won.term

        term = await campaign()
        watch = asyncio.create_task(one.wait_for_end_of_term(term, broken.append, 0.05))
        # Its own value again (the create revision stays): the term holds, no verdict.
        await client.put(one.key, one.value)
        await asyncio.sleep(0.2)
        assert not watch.done()
        await client.put(one.key, b"operator")
        assert "overwritten" in await asyncio.wait_for(watch, 5)

        await client.delete(one.key)
        term = await campaign()
        watch = asyncio.create_task(one.wait_for_end_of_term(term, broken.append, 0.05))
        await asyncio.sleep(0.1)
        etcd.stop()
        deadline = time.monotonic() + 5
        while not broken:
            assert time.monotonic() < deadline, "the watch never reported its break"
            await asyncio.sleep(0.02)
        etcd.restart()
        # No verdict from the break: the term still holds once etcd is back.
        await asyncio.sleep(0.5)
        assert not watch.done()
        await client.delete(one.key)
        assert "deleted at revision" in await asyncio.wait_for(watch, 10)
        await session.close(revoke=True)

    run([etcd.endpoint], body)


def test_session_deadline_passes_without_etcd(etcd: EtcdMember) -> None:
    async def body(client: EtcdClient) -> float:
        renewed: list[float] = []
        session = Session(client, 1, on_renewed=lambda: renewed.append(time.monotonic()))
        await session.open()
        session.start()
        await asyncio.sleep(1.0)
        assert session.alive() and len(renewed) >= 3  # keepalives every TTL/3
        # The deadline is local: it passes while etcd does not answer at all.
        etcd.pause()
        try:
            paused = time.monotonic()
            while session.alive():
                await asyncio.sleep(0.01)
            stopped_after = time.monotonic() - paused
        finally:
            etcd.resume()
        await session.close(revoke=False)
        return stopped_after

    stopped_after = run([etcd.endpoint], body)
    # At most the TTL minus the margin after the last acknowledged keepalive.
    assert stopped_after <= 1.0


def test_a_live_node_id_is_refused_and_a_dead_ones_is_waited_for(etcd: EtcdMember) -> None:
    async def body(client: EtcdClient) -> None:
        holder, other = Session(client, 1), Session(client, 1)
        await holder.open()
        holder.start()
        await other.open()
        other.start()
        await register(client, PREFIX, 7, "127.0.0.1:7", holder.lease_id)
        with pytest.raises(DuplicateNodeError, match="node id 7 is held by a live node"):
            await register(client, PREFIX, 7, "127.0.0.1:8", other.lease_id)
        # A holder that stops keeping its lease alive (killed) frees the id within its TTL.
        await holder.close(revoke=False)
        started = time.monotonic()
        await register(client, PREFIX, 7, "127.0.0.1:8", other.lease_id)
        assert time.monotonic() - started < 4.0
        await other.close(revoke=True)

    run([etcd.endpoint], body)


def test_one_channel_survives_a_member_kill(etcd_cluster: EtcdCluster) -> None:
    async def put_soon(client: EtcdClient, value: bytes) -> None:
        # A write that reached a raft leader just killed is lost, and etcd answers it only after
        # its own request timeout: calls are short and tried again, as the node's loops do.
        deadline = time.monotonic() + 10
        while True:
            try:
                await client.put(b"/k", value)
                return
            except EtcdError:
                if time.monotonic() > deadline:
                    raise

    async def body(client: EtcdClient) -> None:
        await put_soon(client, b"1")
        for member in (etcd_cluster.raft_leader(), etcd_cluster.members[0]):
            member.kill()
            await put_soon(client, b"2")
            # Two of three down would leave no quorum: put it back before the next kill.
            member.restart()
        kv, _ = await client.get(b"/k")
        assert kv is not None and kv.value == b"2"

    async def main() -> None:
        client = EtcdClient(etcd_cluster.endpoints, timeout_s=0.3)
        try:
            await body(client)
        finally:
            await client.close()

    asyncio.run(main())


def test_unreachable_etcd_is_named(etcd: EtcdMember) -> None:
    endpoint = etcd.endpoint
    etcd.kill()

    async def body(client: EtcdClient) -> None:
        with pytest.raises(EtcdError, match=endpoint):
            await client.grant(1, timeout_s=0.3)

    run([endpoint], body)


def test_a_password_without_tls_is_said_to_travel_in_clear(tmp_path: Path) -> None:
    password = tmp_path / "password"
    password.write_text("secret\n")
    settings = {"etcd_user": "oracle", "etcd_password_file": password}
    plain = EtcdSecurity.from_config(ClusterSection(etcd_endpoints=("a:1",), **settings))
    assert plain.password == "secret" and plain.password_in_clear
    assert "secret" not in repr(plain)
    secured = EtcdSecurity.from_config(ClusterSection(etcd_endpoints=("https://a:1",), **settings))
    assert secured.tls and not secured.password_in_clear


def test_the_winning_campaign_reads_the_window_as_of_its_epoch(etcd: EtcdMember) -> None:
    """The new leader's floor comes with its win: the window key as the winning txn saw it (no
    read of its own), absent for a new cluster; so do the campaign's other reads (their pages,
    in order); a lost campaign reads nothing but the holder."""

    async def body(client: EtcdClient) -> None:
        session = Session(client, 5)
        await session.open()
        store = EtcdWindowStore(client, PREFIX, lambda _: None)
        one = Election(client, PREFIX, 1, "127.0.0.1:1", read_with_win=store.key)
        two = Election(client, PREFIX, 2, "127.0.0.1:2", read_with_win=store.key)
        won = await one.campaign(session.lease_id)
        assert won.term is not None and won.read_with_win and won.read is None
        assert store.limit_of(won.read) is None  # a new cluster
        lost = await two.campaign(session.lease_id)
        assert lost.term is None and not lost.read_with_win
        store.fence = Fence(client, won.term)
        await store.persist(123_456)
        await client.delete(one.key)  # the term ends (resigned)
        for n in range(3):
            await client.put(f"{PREFIX}listed/{n}".encode(), b"x")
        listed = range_op(f"{PREFIX}listed/".encode(), f"{PREFIX}listed0".encode(), limit=2)
        again = await two.campaign(session.lease_id, [listed, get(store.key)])
        assert again.term is not None and again.read is not None
        assert [(len(p.kvs), p.count, p.more) for p in again.pages] == [(2, 3, True), (1, 1, False)]
        assert again.pages[1].kvs[0] == again.read
        assert store.limit_of(again.read) == 123_456 == await store.load()
        assert again.read.mod_revision < again.term.epoch
        await client.delete(two.key)
        await session.close(revoke=True)

    run([etcd.endpoint], body)
