"""A node's etcd session: one lease, kept alive every TTL/3 on one stream, and the local serving
deadline.

The deadline is what makes a paused or partitioned leader stop by itself: it is the send time of
the last acknowledged keepalive plus the TTL etcd granted, minus a margin. etcd measures the
lease from when it *received* that keepalive (later than it was sent), so no other node can win
the leader key before this node's deadline has passed on its own monotonic clock; the margin
covers clock-rate differences and the few microseconds between a request's check and its answer.
Nothing here needs etcd to be reachable to stop serving: the deadline simply passes.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

import grpc

from hlc_oracle.cluster.etcd import EtcdClient, EtcdError
from hlc_oracle.log_rate import RateLimitedLog

log = logging.getLogger("hlc_oracle.cluster.session")


def _failure(task: asyncio.Future[Any]) -> str | None:
    if task.cancelled():
        return "cancelled"
    error = task.exception()
    return None if error is None else (str(error) or type(error).__name__)


def abandon(task: asyncio.Future[Any]) -> None:
    """Cancels ``task`` without waiting for it; its outcome is consumed when it comes."""
    task.cancel()
    task.add_done_callback(lambda done: done.cancelled() or done.exception())


async def stop_task(task: asyncio.Future[Any], timeout_s: float = 1.0) -> None:
    """Cancels ``task`` and waits for it a bounded time (a gRPC stream may not end promptly)."""
    abandon(task)
    await asyncio.wait({task}, timeout=timeout_s)


def serving_margin_s(ttl_s: float) -> float:
    """A quarter of the TTL, at most 0.5 s: room for rate differences between two clocks."""
    return min(ttl_s / 4, 0.5)


class Session:
    """``open()`` grants the lease; ``start()`` keeps it alive until ``lost`` is set (etcd says
    the lease is gone) or ``close()``."""

    def __init__(
        self,
        client: EtcdClient,
        ttl_s: int,
        on_renewed: Callable[[], None] | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.client = client
        self.ttl_s = ttl_s
        self.granted_ttl_s = ttl_s
        self.margin_s = serving_margin_s(ttl_s)
        self.lease_id = 0
        self.deadline = 0.0
        self.last_ack = 0.0
        self.lost = asyncio.Event()
        self._on_renewed = on_renewed
        self._monotonic = monotonic
        self._task: asyncio.Task[None] | None = None
        self._failures = RateLimitedLog(log)

    @property
    def interval_s(self) -> float:
        return self.granted_ttl_s / 3

    def remaining_s(self) -> float:
        """Seconds until the local serving deadline (negative once past)."""
        return self.deadline - self._monotonic()

    def alive(self) -> bool:
        return not self.lost.is_set() and self._monotonic() < self.deadline

    def kept_alive(self) -> bool:
        """Whether keepalives run: started, and not ended (lease lost, closed, or an error)."""
        return self._task is not None and not self._task.done()

    def _acknowledged(self, sent: float, ttl_s: int) -> None:
        self.granted_ttl_s = ttl_s
        self.deadline = sent + ttl_s - self.margin_s
        self.last_ack = self._monotonic()
        if self._on_renewed is not None:
            self._on_renewed()

    async def open(self, timeout_s: float | None = None) -> None:
        sent = self._monotonic()
        self.lease_id, granted = await self.client.grant(self.ttl_s, timeout_s)
        self._acknowledged(sent, granted)

    def start(self) -> None:
        self._task = asyncio.create_task(self._keep_alive(), name=f"lease-{self.lease_id:x}")

    async def _keep_alive(self) -> None:
        stream = None
        request = self.client.keepalive_request(self.lease_id)
        while not self.lost.is_set():
            sent = self._monotonic()
            if stream is None:
                stream = self.client.keepalive_stream()
            # Not asyncio.wait_for: it waits for the cancelled exchange to finish, and a stream
            # on a dead connection may not; the stream is cancelled and left behind instead.
            exchange = asyncio.ensure_future(self._exchange(stream, request))
            done, _ = await asyncio.wait({exchange}, timeout=self.interval_s)
            error = _failure(exchange) if exchange in done else "no answer in time"
            if error is None:
                ttl = exchange.result()
                if ttl <= 0:
                    log.warning(
                        "lease expired in etcd", extra={"fields": {"lease": hex(self.lease_id)}}
                    )
                    self.lost.set()
                    break
                self._acknowledged(sent, ttl)
                self.client.reachability.answered()
                self._failures.clear("keepalive")
            else:
                # The member behind the stream died or stalls: a new stream next round, on
                # whichever member the channel reaches. The deadline keeps running meanwhile.
                self.client.reachability.failed("lease keepalive", error)
                self._failures.warning(
                    "keepalive",
                    "lease keepalive failed",
                    {
                        "lease": hex(self.lease_id),
                        "error": error,
                        "serving_deadline_in_s": round(self.remaining_s(), 3),
                    },
                )
                abandon(exchange)
                stream.cancel()
                stream = None
            await asyncio.sleep(max(0.0, sent + self.interval_s - self._monotonic()))
        if stream is not None:
            stream.cancel()

    @staticmethod
    async def _exchange(stream: Any, request: Any) -> int:
        await stream.write(request)
        reply = await stream.read()
        if reply is grpc.aio.EOF:
            raise EtcdError("keepalive stream ended")
        return int(reply.TTL)

    async def close(self, revoke: bool) -> None:
        """Stops the keepalives; ``revoke`` deletes the lease (and every key bound to it) now."""
        if self._task is not None:
            await stop_task(self._task)
            self._task = None
        self.deadline = 0.0
        if revoke and not self.lost.is_set():
            try:
                await self.client.revoke(self.lease_id)
            except EtcdError as err:
                log.warning("lease revoke failed", extra={"fields": {"error": str(err)}})
        self.lost.set()
