"""Leader election on one etcd key, as TiDB PD does it.

``campaign`` is one txn: if the leader key's create revision is 0 (no leader), put this node's
identity there bound to its lease; otherwise read who holds it. The winning txn's revision is the
key's create revision: the leader's *epoch*, unique and increasing across terms. A node that lost
watches the key from the revision it read and campaigns again when the key is deleted (its holder
resigned, or its lease expired). ``resign`` deletes the key through the fence. ``depose`` is a
follower's delete of a dead leader's key, compared on the term it follows
(:mod:`.leader_liveness`).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass

from hlc_oracle.cluster.etcd import (
    EtcdClient,
    EtcdError,
    KeyValue,
    compare_create_revision,
    compare_lease,
)
from hlc_oracle.cluster.etcd import delete as delete_op
from hlc_oracle.cluster.etcd import get as get_op
from hlc_oracle.cluster.etcd import put as put_op
from hlc_oracle.cluster.fence import Fence, Term


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


@dataclass(frozen=True)
class Outcome:
    """A campaign's result: this node's term if it won, else the holder and the read revision."""

    term: Term | None
    holder: LeaderInfo | None
    revision: int


class Election:
    def __init__(self, client: EtcdClient, prefix: str, node_id: int, address: str) -> None:
        self.client = client
        self.key = f"{prefix}leader".encode()
        self.value = identity(node_id, address)

    async def campaign(self, lease_id: int) -> Outcome:
        result = await self.client.txn(
            [compare_create_revision(self.key, 0)],
            [put_op(self.key, self.value, lease_id)],
            [get_op(self.key)],
        )
        if result.succeeded:
            return Outcome(Term(self.key, self.value, result.revision), None, result.revision)
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

    async def resign(self, fence: Fence) -> None:
        """Deletes the leader key, only if this node's term still holds it."""
        await fence.write([delete_op(self.key)], "resign (delete the leader key)")
