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

    A message that is being sent again (a node refused it, or its answer was lost: ``send``
    calls the callback it is given before its second attempt), or that is still unanswered
    after ``held_after_s``, leaves its slot for one of ``max_in_flight`` more, the held slots,
    when one is free. A leader change then does not stop new work: the messages sent under the
    old leader may wait on the next one (for its decision history), while the callers' new
    messages go out beside them (on streams of their own, see
    :class:`~hlc_oracle.client.streams.StreamPool`). At most twice ``max_in_flight`` messages
    are in flight, however many are held or failing.
    """

    def __init__(
        self,
        send: Callable[[list[Transaction], Callable[[], None]], Awaitable[CommitAnswers]],
        max_batch: int = 512,
        max_in_flight: int = 2,
        held_after_s: float = 0.25,
    ) -> None:
        if max_batch < 1 or max_in_flight < 1:
            raise ValueError(
                f"max_batch and max_in_flight must be at least 1, got {max_batch}, {max_in_flight}"
            )
        if not held_after_s > 0:
            raise ValueError(f"held_after_s must be above 0 seconds, got {held_after_s!r}")
        self._held_after_s = held_after_s
        self._send = send
        self._max_batch = max_batch
        self._max_in_flight = max_in_flight
        self._waiting: collections.deque[tuple[Transaction, asyncio.Future[CommitAnswer]]] = (
            collections.deque()
        )
        self._in_flight: set[asyncio.Task[None]] = set()
        # Messages held or retrying, in the held slots (see the class).
        self._held: set[asyncio.Task[None]] = set()
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
            loop.call_later(self._held_after_s, self._hold, task)

    def _hold(self, task: asyncio.Task[None] | None) -> None:
        """``task``'s message is being sent again or is slow to be answered: it moves to a free
        held slot (when it is still in a slot of the others), and its slot goes to the callers
        waiting."""
        if task not in self._in_flight or self._closed:
            return
        if len(self._held) < self._max_in_flight:
            self._in_flight.discard(task)
            self._held.add(task)
            self._dispatch()
        else:  # every held slot is taken: look again later
            asyncio.get_running_loop().call_later(self._held_after_s, self._hold, task)

    async def _run(self, batch: list[tuple[Transaction, asyncio.Future[CommitAnswer]]]) -> None:
        task = asyncio.current_task()
        try:
            results = await self._send(
                [transaction for transaction, _ in batch], lambda: self._hold(task)
            )
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
            self._in_flight.discard(task)
            self._held.discard(task)
            if not self._closed:
                self._dispatch()

    async def close(self) -> None:
        self._closed = True
        for task in [*self._in_flight, *self._held]:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        error = OracleUnavailableError(grpc.StatusCode.CANCELLED, "client closed")
        while self._waiting:
            _, future = self._waiting.popleft()
            if not future.done():
                future.set_exception(error)
