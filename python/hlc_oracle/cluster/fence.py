"""THE one place that builds a leader's writes: every write is a txn fenced on leadership.

A leader's term is named by the leader key's value (this node's identity) and its create revision
(the epoch). Both are compared in the same txn as the write, so a write by a node that lost
leadership (its lease expired while it was paused, another node won since) fails in etcd, whatever
the node believes. A failed compare raises :class:`FenceError`; the node then stops serving at once
(:mod:`hlc_oracle.cluster.node`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from hlc_oracle import HlcError
from hlc_oracle.cluster.etcd import (
    EtcdClient,
    KeyValue,
    TxnResult,
    compare_create_revision,
    compare_value,
    get,
)


class FenceError(HlcError):
    """A fenced write was refused: this node is no longer the leader of the epoch it wrote in."""


@dataclass(frozen=True)
class Term:
    """One leadership term: the leader key, the value this node put there, and the epoch."""

    leader_key: bytes
    value: bytes
    epoch: int


class Fence:
    def __init__(self, client: EtcdClient, term: Term) -> None:
        self.client = client
        self.term = term

    def compares(self) -> list[Any]:
        return [
            compare_value(self.term.leader_key, self.term.value),
            compare_create_revision(self.term.leader_key, self.term.epoch),
        ]

    async def write(
        self, operations: Sequence[Any], what: str, timeout_s: float | None = None
    ) -> TxnResult:
        """Runs ``operations`` only while the term holds; raises :class:`FenceError` otherwise,
        naming ``what`` and who holds the leader key now. ``timeout_s``: the call's deadline
        (None: the client's)."""
        result = await self.client.txn(
            self.compares(), operations, [get(self.term.leader_key)], timeout_s=timeout_s
        )
        if not result.succeeded:
            raise FenceError(f"{what} refused by the fence: {describe_holder(result.gets, self)}")
        return result


def describe_holder(gets: Sequence[KeyValue | None], fence: Fence) -> str:
    holder = gets[0] if gets else None
    if holder is None:
        return f"the leader key is gone (this node's epoch {fence.term.epoch} ended)"
    return (
        f"the leader key holds {holder.value.decode(errors='replace')} of epoch "
        f"{holder.create_revision}, not this node's epoch {fence.term.epoch}"
    )
