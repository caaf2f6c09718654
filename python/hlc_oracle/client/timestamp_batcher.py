"""Merging concurrent timestamp requests into one request (:class:`TimestampBatcher`), as TiDB
PD's client does: one message asks for everyone waiting, and the range is split back.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
from collections.abc import Awaitable, Callable
from typing import Any

import grpc

from hlc_oracle import Timestamp, TimestampRange
from hlc_oracle.client.errors import OracleError


class TimestampBatcher:
    """Merges concurrent requests into one ``fetch(total)`` and splits the range back.

    :meth:`get` asks for one timestamp, :meth:`get_range` for ``count`` consecutive ones. While a
    fetch is in flight, new requests queue; when it returns, the queued requests (up to
    ``max_batch`` timestamps in all, and always at least one request) go out as one fetch whose
    range is cut in arrival order: each request gets its own timestamp or contiguous sub-range. A
    failed fetch fails every request of that batch, except that a merged batch refused with
    ``RESOURCE_EXHAUSTED`` (above the server's count limit) is retried request by request.
    """

    def __init__(
        self, fetch: Callable[[int], Awaitable[TimestampRange]], max_batch: int = 1_000_000
    ) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be at least 1, got {max_batch}")
        self._fetch = fetch
        self._max_batch = max_batch
        self._waiting: collections.deque[tuple[asyncio.Future[Any], int]] = collections.deque()
        self._task: asyncio.Task[None] | None = None
        self.batches = 0  # fetches made, for tests and statistics

    def get(self) -> asyncio.Future[Timestamp]:
        """A future resolved with one timestamp of the next batch."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Timestamp] = loop.create_future()
        self._waiting.append((future, 1))
        if self._task is None:
            self._task = loop.create_task(self._drain())
        return future

    def get_range(self, count: int) -> asyncio.Future[TimestampRange]:
        """A future resolved with ``count`` consecutive timestamps of the next batch."""
        if count < 1:
            raise ValueError(f"count must be at least 1, got {count}")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[TimestampRange] = loop.create_future()
        # A count of one still answers with a range: the future's type is the caller's choice.
        self._waiting.append((future, -count if count == 1 else count))
        if self._task is None:
            self._task = loop.create_task(self._drain())
        return future

    def _take(self) -> tuple[list[tuple[asyncio.Future[Any], int]], int]:
        waiting = self._waiting
        batch = [waiting.popleft()]
        total = abs(batch[0][1])
        while waiting and total + abs(waiting[0][1]) <= self._max_batch:
            item = waiting.popleft()
            batch.append(item)
            total += abs(item[1])
        return batch, total

    async def _drain(self) -> None:
        try:
            while self._waiting:
                batch, total = self._take()
                await self._send(batch, total)
        finally:
            self._task = None

    async def _send(self, batch: list[tuple[asyncio.Future[Any], int]], total: int) -> None:
        self.batches += 1
        try:
            timestamps = await self._fetch(total)
        except OracleError as err:
            if err.code == grpc.StatusCode.RESOURCE_EXHAUSTED and len(batch) > 1:
                for item in batch:
                    await self._send([item], abs(item[1]))
                return
            self._fail(batch, err)
            return
        except asyncio.CancelledError:
            # Cancelled with the client or the program (asyncio.run cancels what is left): the
            # callers' futures are cancelled, not failed with an exception nobody may retrieve.
            for future, _ in batch:
                future.cancel()
            raise
        except Exception as err:  # every request of the batch must hear about it
            self._fail(batch, err)
            return
        if len(timestamps) != total:
            self._fail(
                batch,
                OracleError(
                    grpc.StatusCode.INTERNAL,
                    f"asked for {total} timestamps, the server answered {len(timestamps)}",
                ),
            )
            return
        offset = 0
        for future, count in batch:
            if count == 1:
                value: Any = timestamps[offset]
            else:
                count = abs(count)
                value = TimestampRange(timestamps[offset], count)
            offset += count
            if not future.done():  # a cancelled caller's timestamps are simply unused
                future.set_result(value)

    @staticmethod
    def _fail(batch: list[tuple[asyncio.Future[Any], int]], err: BaseException) -> None:
        for future, _ in batch:
            if not future.done():
                future.set_exception(err)

    async def close(self) -> None:
        task = self._task
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        error = OracleError(grpc.StatusCode.CANCELLED, "client closed")
        while self._waiting:
            future, _ = self._waiting.popleft()
            if not future.done():
                future.set_exception(error)
