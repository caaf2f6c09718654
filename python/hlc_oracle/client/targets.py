"""Several nodes behind one client: parsing a target list, and which node the client calls now.

A target is ``"host:port"``, several of them comma-separated (``"a:1,b:2,c:3"``: the nodes of a
cluster), or a list of them. The client calls one node at a time (:attr:`NodeSet.current`):

- a follower's refusal (``UNAVAILABLE`` with the ``not-leader`` mark) names the leader in the
  trailing metadata ``hlc-oracle-leader``; the client goes there at once (:meth:`follow`), adding
  the address if it was not in the list, and that is not counted as a failed attempt;
- a node that cannot be reached, or whose connection is lost, or a follower that knows no leader,
  sends the client to the next target in the list (:meth:`move_on`); the call goes on to it at
  once, and the attempt fails only once every target has failed in it (see
  ``AsyncOracleClient._on_current_node``).

With one target, calls wait for its channel to connect (wait-for-ready, within their deadline);
with several they fail fast on a node that is down, so the client can move on.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import grpc

from hlc_oracle.addresses import parse_address_list
from hlc_oracle.client.node import OracleNode


def parse_targets(target: str | Sequence[str]) -> list[str]:
    """The node addresses of ``target``, each once; ``ValueError``
    (:class:`~hlc_oracle.addresses.AddressError`) naming a bad entry (not ``host:port`` with a
    port in 1..65535), a stray comma, or an empty list."""
    return parse_address_list(target, "target")


class NodeSet:
    """The nodes of one client, created on first use, and the one it calls now."""

    def __init__(
        self,
        targets: list[str],
        credentials: grpc.ChannelCredentials | None,
        options: list[tuple[str, Any]] | None,
    ) -> None:
        self.targets = list(targets)
        self._credentials = credentials
        self._options = options
        self._nodes: dict[str, OracleNode] = {}
        self._index = 0

    @property
    def wait_for_ready(self) -> bool:
        return len(self.targets) == 1

    def node(self, target: str) -> OracleNode:
        node = self._nodes.get(target)
        if node is None:
            node = OracleNode(target, self._credentials, self._options, self.wait_for_ready)
            self._nodes[target] = node
        return node

    @property
    def current(self) -> OracleNode:
        return self.node(self.targets[self._index])

    def follow(self, leader: str, refused_by: OracleNode) -> bool:
        """Makes ``leader`` the current node; False when it is the node that just refused."""
        if not leader or leader == refused_by.target:
            return False
        if leader not in self.targets:
            self.targets.append(leader)
        self._index = self.targets.index(leader)
        return True

    def move_on(self, failed: OracleNode) -> None:
        """The next target after ``failed``, if ``failed`` is still the current one."""
        if self.targets[self._index] == failed.target:
            self._index = (self._index + 1) % len(self.targets)

    def all(self) -> list[OracleNode]:
        """Every target's node, in list order."""
        return [self.node(target) for target in self.targets]

    async def close(self) -> None:
        for node in self._nodes.values():
            await node.close()
