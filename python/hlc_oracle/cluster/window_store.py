"""The timestamp window of a cluster: the ``window`` key in etcd, written only through the fence.

Only the leader of the current term can move the limit; a node that lost leadership gets
:class:`~hlc_oracle.cluster.fence.FenceError` from etcd instead (reported to ``on_fenced``, which
stops it serving), so its ceiling never rises past what the next leader reads as its floor.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from hlc_oracle.cluster.etcd import EtcdClient, EtcdError, KeyValue
from hlc_oracle.cluster.etcd import put as put_op
from hlc_oracle.cluster.fence import Fence, FenceError
from hlc_oracle.node.window import FORMAT_VERSION, WindowSaveError


class EtcdWindowStore:
    def __init__(self, client: EtcdClient, prefix: str, on_fenced: Callable[[str], None]) -> None:
        self.client = client
        self.key = f"{prefix}window".encode()
        #: The current term's fence; ``None`` while this node does not lead.
        self.fence: Fence | None = None
        self._on_fenced = on_fenced

    @property
    def location(self) -> str:
        return f"etcd {self.client.describe()} key {self.key.decode()}"

    async def load(self) -> int | None:
        """The saved limit (microseconds), or ``None`` for a new cluster."""
        kv, _ = await self.client.get(self.key)
        return self.limit_of(kv)

    def limit_of(self, kv: KeyValue | None) -> int | None:
        """The saved limit in ``kv``, the window key as read (``None``: absent, a new cluster);
        :class:`EtcdError` when it does not decode."""
        if kv is None:
            return None
        try:
            data = json.loads(kv.value)
            limit = data["limit_physical_us"]
        except (ValueError, TypeError, KeyError) as err:
            raise EtcdError(f"{self.location} is damaged ({kv.value!r}): {err!r}") from err
        if not isinstance(limit, int) or limit < 0:
            raise EtcdError(f"{self.location}: bad limit {limit!r}")
        return limit

    def save_operation(self, limit_physical_us: int) -> Any:
        """The put that saves ``limit_physical_us``, for a fenced txn (:meth:`persist`, or a
        resign's, which deletes the leader key in the same txn)."""
        payload = json.dumps({"format": FORMAT_VERSION, "limit_physical_us": limit_physical_us})
        return put_op(self.key, payload.encode())

    async def persist(self, limit_physical_us: int) -> None:
        fence = self.fence
        if fence is None:
            raise WindowSaveError(
                f"cannot save the timestamp window to {self.location}: not the leader"
            )
        try:
            await fence.write([self.save_operation(limit_physical_us)], "timestamp window save")
        except FenceError as err:
            self._on_fenced(str(err))
            raise WindowSaveError(str(err)) from err
        except EtcdError as err:
            raise WindowSaveError(f"cannot save the timestamp window: {err}") from err
