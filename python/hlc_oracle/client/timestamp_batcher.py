"""Merging concurrent timestamp requests into one request (:class:`TimestampBatcher`), as TiDB
PD's client does: one message asks for everyone waiting, and the range is split back.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import math
from collections.abc import Awaitable, Callable
from time import monotonic
from typing import Any

import grpc

from hlc_oracle import Timestamp, TimestampRange
from hlc_oracle.client.errors import OracleError, not_sent
from hlc_oracle.client.wait_expiry import WaitExpiry

#: A caller waiting for a fetch: its future, its count (negative: a range of one, see
#: :meth:`TimestampBatcher.get_range`), its call's deadline (``time.monotonic()``) and its call's
#: timeout (seconds, for the error that says it ran out).
_Entry = tuple["asyncio.Future[Any]", int, float, float]

#: The ``fetch`` of a :class:`TimestampBatcher`: the count to ask for and the deadline
#: (``time.monotonic()``) the fetch must be answered by.
Fetch = Callable[[int, float], Awaitable[TimestampRange]]


def _not_sent(timeout: float) -> OracleError:
    return not_sent(timeout, "the timestamp request in flight", "no timestamp was handed out")


class TimestampBatcher:
    """Merges concurrent requests into one ``fetch(total, deadline)`` and splits the range back.

    :meth:`get` asks for one timestamp, :meth:`get_range` for ``count`` consecutive ones. While a
    fetch is in flight, new requests queue; when it returns, the queued requests (up to
    ``max_batch`` timestamps in all, and always at least one request) go out as one fetch whose
    range is cut in arrival order: each request gets its own timestamp or contiguous sub-range. A
    failed fetch fails every request of that batch, except that a merged batch refused with
    ``RESOURCE_EXHAUSTED`` (above the server's count limit) is retried request by request.

    Each request brings its call's timeout: the wait behind the fetch in flight counts toward
    it. A request still queued when its deadline passes is left out and fails with
    :func:`~hlc_oracle.client.errors.not_sent` (never sent); a fetch gets what is left of its
    requests' earliest deadline, so no call outlasts its timeout.
    """

    def __init__(self, fetch: Fetch, max_batch: int = 1_000_000) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be at least 1, got {max_batch}")
        self._fetch = fetch
        self._max_batch = max_batch
        self._waiting: collections.deque[_Entry] = collections.deque()
        self._task: asyncio.Task[None] | None = None
        self._fetching = False  # a fetch is in flight: new requests wait behind it
        self.batches = 0  # fetches made, for tests and statistics
        # Fails the requests whose deadline passed while they waited behind a fetch.
        self._expiry: WaitExpiry[_Entry] = WaitExpiry(
            self._expire, 0, 2, lambda entry: _not_sent(entry[3])
        )

    def get(self, timeout: float = math.inf) -> asyncio.Future[Timestamp]:
        """A future resolved with one timestamp of the next batch, within ``timeout`` seconds
        from now."""
        future: asyncio.Future[Timestamp] = asyncio.get_running_loop().create_future()
        deadline = monotonic() + timeout
        self._waiting.append((future, 1, deadline, timeout))
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._drain())
        elif self._fetching and deadline < self._expiry.at:  # it waits: its deadline counts
            self._expiry.arm(deadline)
        return future

    def get_range(self, count: int, timeout: float = math.inf) -> asyncio.Future[TimestampRange]:
        """A future resolved with ``count`` consecutive timestamps of the next batch, within
        ``timeout`` seconds from now."""
        if count < 1:
            raise ValueError(f"count must be at least 1, got {count}")
        future: asyncio.Future[TimestampRange] = asyncio.get_running_loop().create_future()
        deadline = monotonic() + timeout
        # A count of one still answers with a range: the future's type is the caller's choice.
        self._waiting.append((future, -count if count == 1 else count, deadline, timeout))
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._drain())
        elif self._fetching and deadline < self._expiry.at:  # it waits: its deadline counts
            self._expiry.arm(deadline)
        return future

    def _expire(self) -> None:
        self._waiting = self._expiry.sweep(self._waiting)

    def _take(self) -> tuple[list[_Entry], int, float]:
        """The waiting requests of the next fetch (see the class), their total count and their
        earliest deadline; no requests when every one waiting is past its deadline (failed,
        never sent). A cancelled request still goes: its timestamps are simply unused."""
        waiting = self._waiting
        batch: list[_Entry] = []
        total = 0
        now = monotonic()
        earliest = math.inf
        while waiting:
            entry = waiting[0]
            more = abs(entry[1])
            if batch and total + more > self._max_batch:
                break
            waiting.popleft()
            if self._expiry.ran_out(entry, now):
                continue
            deadline = entry[2]
            batch.append(entry)
            total += more
            if deadline < earliest:
                earliest = deadline
        return batch, total, earliest

    async def _drain(self) -> None:
        try:
            while self._waiting:
                batch, total, deadline = self._take()
                if batch:
                    await self._send(batch, total, deadline)
        finally:
            self._task = None

    async def _send(self, batch: list[_Entry], total: int, deadline: float) -> None:
        self.batches += 1
        self._fetching = True
        try:
            timestamps = await self._fetch(total, deadline)
        except OracleError as err:
            if err.code == grpc.StatusCode.RESOURCE_EXHAUSTED and len(batch) > 1:
                for item in batch:
                    await self._send([item], abs(item[1]), item[2])
                return
            self._fail(batch, err)
            return
        except asyncio.CancelledError:
            # Cancelled with the client or the program (asyncio.run cancels what is left): the
            # callers' futures are cancelled, not failed with an exception nobody may retrieve.
            for future, _, _, _ in batch:
                future.cancel()
            raise
        except Exception as err:  # every request of the batch must hear about it
            self._fail(batch, err)
            return
        finally:
            self._fetching = False
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
        for future, count, _, _ in batch:
            if count == 1:
                value: Any = timestamps[offset]
            else:
                count = abs(count)
                value = TimestampRange(timestamps[offset], count)
            offset += count
            if not future.done():  # a cancelled caller's timestamps are simply unused
                future.set_result(value)

    @staticmethod
    def _fail(batch: list[_Entry], err: BaseException) -> None:
        for future, _, _, _ in batch:
            if not future.done():
                future.set_exception(err)

    async def close(self) -> None:
        self._expiry.stop()
        task = self._task
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        error = OracleError(grpc.StatusCode.CANCELLED, "client closed")
        while self._waiting:
            future = self._waiting.popleft()[0]
            if not future.done():
                future.set_exception(error)
