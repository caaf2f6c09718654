"""Leader election on one etcd key, as TiDB PD does it.

``campaign`` is one txn: if the leader key's create revision is 0 (no leader), put this node's
identity there bound to its lease; otherwise read who holds it. The winning txn's revision is the
key's create revision: the leader's *epoch*, unique and increasing across terms. A node that lost
watches the key from the revision it read and campaigns again when the key is deleted (its holder
resigned, or its lease expired). ``resign`` deletes the key through the fence. ``depose`` is a
follower's delete of a dead leader's key, compared on the term it follows
(:mod:`.leader_liveness`). ``wait_for_end_of_term`` is the leader's own watch of the key: it
returns what ended the term (a delete, or a put of another term) as soon as etcd reports it, so
a deposed leader stops serving without waiting for its next fenced write.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from hlc_oracle.cluster.etcd import (
    EtcdClient,
    EtcdError,
    KeyValue,
    RangePage,
    WatchEvent,
    compare_create_revision,
    compare_lease,
)
from hlc_oracle.cluster.etcd import delete as delete_op
from hlc_oracle.cluster.etcd import get as get_op
from hlc_oracle.cluster.etcd import put as put_op
from hlc_oracle.cluster.fence import Fence, Term
from hlc_oracle.cluster.session import stop_task


@dataclass(frozen=True)
class LeaderInfo:
    """Who leads, as read from the leader key."""

    node_id: int
    address: str
    epoch: int
    #: The lease the key is bound to (0 when not read from etcd).
    lease: int = 0


def identity(node_id: int, address: str) -> bytes:
    """The leader key's value for this node (also the value the fence compares)."""
    return json.dumps({"node_id": node_id, "address": address}, sort_keys=True).encode()


def leader_info(kv: KeyValue) -> LeaderInfo:
    try:
        data = json.loads(kv.value)
        return LeaderInfo(int(data["node_id"]), str(data["address"]), kv.create_revision, kv.lease)
    except (ValueError, TypeError, KeyError):
        # Written by something else than hlc-oracle: still a leader, just not one to redirect to.
        return LeaderInfo(-1, "", kv.create_revision, kv.lease)


#: Who deletes a live leader's key: a leader never deletes its own but when it resigns.
DELETED_BY = (
    "a follower deposed this node, an operator deleted it, or this node's lease expired in etcd"
)


def end_of_term(event: WatchEvent, term: Term) -> str | None:
    """What ``event`` on the leader key did to ``term``: ``None`` while the key still holds the
    term (its value and create revision), else a sentence naming the change."""
    kv = event.kv
    if event.deleted:
        return f"the leader key was deleted at revision {kv.mod_revision} ({DELETED_BY})"
    if kv.create_revision == term.epoch and kv.value == term.value:
        return None
    return (
        f"the leader key was overwritten at revision {kv.mod_revision}: it holds "
        f"{kv.value.decode(errors='replace')} of epoch {kv.create_revision}, not this node's "
        f"epoch {term.epoch}"
    )


@dataclass(frozen=True)
class Outcome:
    """A campaign's result: this node's term if it won, else the holder and the read revision."""

    term: Term | None
    holder: LeaderInfo | None
    revision: int
    #: Won: whether ``read_with_win`` was read in the winning txn, and what it held then.
    read_with_win: bool = False
    read: KeyValue | None = None
    #: Won: the pages of the campaign's ``reads`` (in order), as of the epoch's revision; empty
    #: when they were not made (a txn tried twice whose first try won).
    pages: tuple[RangePage, ...] = ()


class Election:
    def __init__(
        self,
        client: EtcdClient,
        prefix: str,
        node_id: int,
        address: str,
        read_with_win: bytes | None = None,
    ) -> None:
        self.client = client
        self.key = f"{prefix}leader".encode()
        self.value = identity(node_id, address)
        #: A key the winning txn reads too (the window: a new leader's floor, as of its epoch's
        #: revision, without a round trip of its own).
        self.read_with_win = read_with_win

    async def campaign(self, lease_id: int, reads: Sequence[Any] = ()) -> Outcome:
        """One txn: the key taken if vacant, else its holder read. ``reads``: range reads (etcd
        operations) the winning txn makes too, for the takeover (their pages in the outcome)."""
        extra = [] if self.read_with_win is None else [get_op(self.read_with_win)]
        result = await self.client.txn(
            [compare_create_revision(self.key, 0)],
            [put_op(self.key, self.value, lease_id), *extra, *reads],
            [get_op(self.key)],
        )
        if result.succeeded:
            term = Term(self.key, self.value, result.revision)
            pages = result.pages[len(extra) :]
            if extra:
                return Outcome(term, None, result.revision, True, result.gets[0], pages)
            return Outcome(term, None, result.revision, pages=pages)
        holder = result.gets[0] if result.gets else None
        if holder is not None and holder.value == self.value and holder.lease == lease_id:
            # This txn was tried twice (a member broke the connection) and the first one won.
            return Outcome(
                Term(self.key, self.value, holder.create_revision), None, result.revision
            )
        return Outcome(None, None if holder is None else leader_info(holder), result.revision)

    async def current(self) -> LeaderInfo | None:
        kv, _ = await self.client.get(self.key)
        return None if kv is None else leader_info(kv)

    async def wait_for_vacancy(
        self, after_revision: int, on_leader: Callable[[LeaderInfo], None]
    ) -> None:
        """Returns once the leader key is deleted after ``after_revision``; reports every new
        holder on the way. Raises :class:`EtcdError` when the watch breaks."""
        async for event in self.client.watch(self.key, after_revision + 1):
            if event.deleted:
                return
            on_leader(leader_info(event.kv))
        raise EtcdError("watch of the leader key ended")

    async def wait_for_end_of_term(
        self,
        term: Term,
        on_watch_broken: Callable[[EtcdError], None],
        retry_pause_s: float,
    ) -> str:
        """Watches the leader key from ``term``'s epoch on and returns what ended the term
        (:func:`end_of_term`) once a change reaches this node. A broken watch is no verdict: it
        is reported to ``on_watch_broken``, then the key is read (a read still holding the term
        covers every revision up to the read's, also history compacted meanwhile) and watched
        again from there; reads are tried ``retry_pause_s`` apart while etcd cannot be reached
        (unreported: the lease deadline covers etcd's loss)."""
        seen = term.epoch  # the latest revision known to hold the term
        while True:
            try:
                async for event in self.client.watch(self.key, seen + 1):
                    ended = end_of_term(event, term)
                    if ended is not None:
                        return ended
                    seen = max(seen, event.kv.mod_revision)
                raise EtcdError("watch of the leader key ended")
            except EtcdError as err:
                on_watch_broken(err)
            while True:
                await asyncio.sleep(retry_pause_s)
                try:
                    kv, revision = await self.client.get(self.key)
                except EtcdError:
                    continue
                if kv is None:
                    return (
                        f"the leader key was deleted (found gone at revision {revision}, read "
                        f"after its watch broke: {DELETED_BY})"
                    )
                ended = end_of_term(WatchEvent(False, kv), term)
                if ended is not None:
                    return ended
                seen = max(seen, revision)
                break

    async def depose(self, leader: LeaderInfo) -> bool:
        """Deletes the leader key only while it still holds ``leader``'s term (its create
        revision and lease): a follower's verdict that the leader's process is gone. Returns
        whether it did; ``False`` when the key is already gone or holds another term (also when
        etcd broke the connection after a first try deleted it, and the try was repeated)."""
        if leader.epoch <= 0 or leader.lease == 0:
            return False  # not a term read from etcd: nothing to compare with
        result = await self.client.txn(
            [
                compare_create_revision(self.key, leader.epoch),
                compare_lease(self.key, leader.lease),
            ],
            [delete_op(self.key)],
        )
        return result.succeeded

    async def resign(self, fence: Fence, also: Sequence[Any] = ()) -> None:
        """Deletes the leader key, only if this node's term still holds it; ``also``: writes made
        in the same txn (the final window save: one round trip, not two)."""
        await fence.write([*also, delete_op(self.key)], "resign (delete the leader key)")

    async def successor(self, term: Term) -> LeaderInfo:
        """The first holder of the leader key after ``term`` (a resigning leader starts this
        before it deletes its key, so the watch is open when the next leader takes the key).
        The watch starts at etcd's revision when it is created, then the key is read: a watch
        from the revision of an earlier read would be behind by the resigning leader's own
        writes meanwhile, and etcd reports such a watch's events only after catching it up
        (its resync loop, every 100 ms). Raises :class:`EtcdError` when a call fails or the
        watch breaks."""
        created = asyncio.Event()

        async def watched() -> LeaderInfo:
            async for event in self.client.watch(self.key, 0, lambda _: created.set()):
                if not event.deleted and event.kv.create_revision != term.epoch:
                    return leader_info(event.kv)
            raise EtcdError("watch of the leader key ended")

        watching = asyncio.ensure_future(watched())
        waiting = asyncio.ensure_future(created.wait())
        try:
            await asyncio.wait((watching, waiting), return_when=asyncio.FIRST_COMPLETED)
            if not watching.done():
                # Taken before the watch began: the read finds it; after: the watch reports it.
                kv, _ = await self.client.get(self.key)
                if kv is not None and kv.create_revision != term.epoch:
                    return leader_info(kv)
            return await watching
        finally:
            await stop_task(waiting)
            await stop_task(watching)
