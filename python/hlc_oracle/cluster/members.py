"""``members/<node-id>``: a node's claim on its node id, bound to its lease.

Two live nodes with one node id would stamp equal timestamps; the key makes the second one refuse
to start. A key left by a node that was killed lives until its lease expires, so a node restarted
at once waits up to that lease's remaining TTL before deciding the holder is alive.
:class:`MemberDirectory` lists the live members (the peers whose clocks a node measures).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import time

from hlc_oracle import HlcError
from hlc_oracle.cluster.etcd import EtcdClient, compare_create_revision
from hlc_oracle.cluster.etcd import get as get_op
from hlc_oracle.cluster.etcd import put as put_op

EXPIRY_SLACK_S = 2.0

log = logging.getLogger("hlc_oracle.cluster")


class DuplicateNodeError(HlcError):
    """A live node already holds this node id."""


def member_value(node_id: int, address: str) -> bytes:
    return json.dumps(
        {"node_id": node_id, "address": address, "host": socket.gethostname(), "pid": os.getpid()},
        sort_keys=True,
    ).encode()


async def register(
    client: EtcdClient, prefix: str, node_id: int, address: str, lease_id: int
) -> None:
    """Puts ``members/<node_id>`` bound to ``lease_id``; raises :class:`DuplicateNodeError`
    when another live lease holds it."""
    key = f"{prefix}members/{node_id}".encode()
    value = member_value(node_id, address)
    waited_until: float | None = None
    lowest_remaining: int | None = None
    while True:
        result = await client.txn(
            [compare_create_revision(key, 0)], [put_op(key, value, lease_id)], [get_op(key)]
        )
        if result.succeeded:
            return
        holder = result.gets[0] if result.gets else None
        if holder is None or holder.lease == lease_id:
            return
        remaining = await client.time_to_live(holder.lease)
        now = time.monotonic()
        if remaining < 0:
            await asyncio.sleep(0.05)  # The lease just ended; its key goes with it.
            continue
        # A killed holder's lease only runs down; one that goes back up is being kept alive.
        renewed = lowest_remaining is not None and remaining > lowest_remaining
        lowest_remaining = (
            remaining if lowest_remaining is None else min(lowest_remaining, remaining)
        )
        if waited_until is None:
            # Perhaps this node's previous process, killed: its lease runs out within its TTL
            # (etcd rounds the remaining seconds down, and sweeps expired leases every 0.5 s).
            waited_until = now + remaining + EXPIRY_SLACK_S
            log.info(
                "node id held by another lease; waiting for it to expire",
                extra={
                    "fields": {
                        "node_id": node_id,
                        "holder": holder.value.decode(errors="replace"),
                        "lease": hex(holder.lease),
                        "waits_up_to_s": round(remaining + EXPIRY_SLACK_S, 1),
                    }
                },
            )
        elif renewed or now >= waited_until:
            raise DuplicateNodeError(
                f"node id {node_id} is held by a live node ({holder.value.decode(errors='replace')}"
                f" under {key.decode()}); give every node its own clock.node_id"
            )
        await asyncio.sleep(0.1)


async def live_members(client: EtcdClient, prefix: str) -> dict[int, str]:
    """``{node_id: address}`` of every live node (its ``members/`` key, bound to its lease)."""
    start = f"{prefix}members/".encode()
    # The prefix with its last byte + 1: every key under it.
    page = await client.range(start, start[:-1] + bytes([start[-1] + 1]))
    found: dict[int, str] = {}
    for kv in page.kvs:
        try:
            data = json.loads(kv.value)
            found[int(data["node_id"])] = str(data["address"])
        except (ValueError, TypeError, KeyError):
            continue  # not written by hlc-oracle
    return found


class MemberDirectory:
    """:func:`live_members` on the node's own etcd client (the peers monitor's directory; the
    client stays open: the node closes it)."""

    def __init__(self, client: EtcdClient, prefix: str) -> None:
        self.client = client
        self.prefix = prefix

    async def peers(self) -> dict[int, str]:
        return await live_members(self.client, self.prefix)

    async def close(self) -> None:
        pass
