"""Merging concurrent ``commit()`` calls into ``CommitStream`` messages (:class:`CommitBatcher`)."""

from __future__ import annotations

import asyncio
import collections
import contextlib
from collections.abc import Awaitable, Callable

import grpc

from hlc_oracle import Transaction
from hlc_oracle.client.errors import OracleError, OracleUnavailableError
from hlc_oracle.client.wire import CommitAnswer, CommitAnswers


class CommitBatcher:
    """Merges concurrent :meth:`submit` calls into ``CommitStream`` messages.

    Callers that arrive while ``max_in_flight`` messages are in flight queue; as soon as one
    returns, all queued callers (up to ``max_batch``) go out in the next message, which the
    server's group commit then decides together. Each caller gets the result of its own
    transaction; a failed message fails every caller in it. Resending is safe: a decided id gets
    its first decision back.
    """

    def __init__(
        self,
        send: Callable[[list[Transaction]], Awaitable[CommitAnswers]],
        max_batch: int = 512,
        max_in_flight: int = 2,
    ) -> None:
        if max_batch < 1 or max_in_flight < 1:
            raise ValueError(
                f"max_batch and max_in_flight must be at least 1, got {max_batch}, {max_in_flight}"
            )
        self._send = send
        self._max_batch = max_batch
        self._max_in_flight = max_in_flight
        self._waiting: collections.deque[tuple[Transaction, asyncio.Future[CommitAnswer]]] = (
            collections.deque()
        )
        self._in_flight: set[asyncio.Task[None]] = set()
        self.batches = 0  # messages sent, for tests and statistics
        self._closed = False

    def submit(self, transaction: Transaction) -> asyncio.Future[CommitAnswer]:
        future: asyncio.Future[CommitAnswer] = asyncio.get_running_loop().create_future()
        self._waiting.append((transaction, future))
        self._dispatch()
        return future

    def _dispatch(self) -> None:
        loop = asyncio.get_running_loop()
        while self._waiting and len(self._in_flight) < self._max_in_flight:
            size = min(len(self._waiting), self._max_batch)
            batch = [self._waiting.popleft() for _ in range(size)]
            self.batches += 1
            task = loop.create_task(self._run(batch))
            self._in_flight.add(task)

    async def _run(self, batch: list[tuple[Transaction, asyncio.Future[CommitAnswer]]]) -> None:
        try:
            results = await self._send([transaction for transaction, _ in batch])
        except BaseException as err:  # every caller of the message must hear about it
            cancelled = isinstance(err, asyncio.CancelledError)
            for _, future in batch:
                # A cancellation (the client closing, asyncio.run ending) cancels the callers'
                # futures: an exception set on them may never be retrieved, and asyncio says so.
                if cancelled:
                    future.cancel()
                elif not future.done():
                    future.set_exception(err)
            if cancelled:
                raise
        else:
            if len(results) != len(batch):
                error = OracleError(
                    grpc.StatusCode.INTERNAL,
                    f"the server answered {len(results)} results for {len(batch)} transactions",
                )
                for _, future in batch:
                    if not future.done():
                        future.set_exception(error)
                return
            for position, (_, future) in enumerate(batch):
                if not future.done():
                    future.set_result(results[position])
        finally:
            self._in_flight.discard(asyncio.current_task())
            if not self._closed:
                self._dispatch()

    async def close(self) -> None:
        self._closed = True
        for task in list(self._in_flight):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        error = OracleUnavailableError(grpc.StatusCode.CANCELLED, "client closed")
        while self._waiting:
            _, future = self._waiting.popleft()
            if not future.done():
                future.set_exception(error)
