"""Merging concurrent ``commit()`` calls, or concurrent ``commit_many()`` calls, into
``CommitStream`` messages (:class:`CommitBatcher`)."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import math
from collections.abc import Awaitable, Callable
from time import monotonic
from typing import Any, cast

import grpc

from hlc_oracle import Transaction
from hlc_oracle.client.errors import OracleError, OracleUnavailableError, not_sent
from hlc_oracle.client.wait_expiry import WaitExpiry
from hlc_oracle.client.wire import CommitAnswer, CommitAnswers

#: A caller waiting for a message: its transaction (or its batch's list of them), its future,
#: its batch already encoded (None: encoded with the rest of the message), its call's deadline
#: (``time.monotonic()``) and its call's timeout (seconds, for the error that says it ran out).
_Entry = tuple[Transaction | list[Transaction], "asyncio.Future[Any]", bytes | None, float, float]

#: The ``send`` of a :class:`CommitBatcher`: a message's transactions, the callback to call
#: before a second attempt, the message when every caller's part came encoded, and the deadline
#: (``time.monotonic()``) the message must be answered by.
Send = Callable[
    [list[Transaction], Callable[[], None], bytes | None, float], Awaitable[CommitAnswers]
]


def _size(item: Transaction | list[Transaction]) -> int:
    """The transactions of a waiting caller: its batch's, or its one."""
    return len(item) if type(item) is list else 1


class CommitBatcher:
    """Merges concurrent :meth:`submit` calls (one transaction each) or :meth:`submit_many`
    calls (a batch each) into ``CommitStream`` messages.

    Callers that arrive while ``max_in_flight`` messages are in flight queue; as soon as one
    returns, queued callers go out in the next message, which the server's group commit then
    decides together: up to ``max_batch`` transactions and ``max_bytes()`` encoded bytes, and
    callers only until the message holds an even share of the work outstanding (the
    transactions queued and in flight, divided by ``max_in_flight``), at least one caller. The
    share keeps the messages in flight of about one size: when every queued caller took the one
    free slot, callers answered together came back together, and messages settled into one
    large and one small (8 callers of 1,000 in 2 slots: 7,000 and 1,000), so the server,
    deciding the small one quickly, waited idle for the large one's round trip; of equal size,
    each message's round trip overlaps the other's decision (8 callers in 3 slots: 3,000, 3,000
    and 2,000). A slot is never left free while callers queue. Each caller gets the result of
    its own transaction, or the results of its batch (a slice of the message's, nothing built);
    a failed message fails every caller in it. A caller cancelled before its message went out
    is left out of it. Resending is safe: a decided id gets its first decision back.

    Each caller brings its call's deadline (its start plus its timeout): the wait for a slot
    counts toward it. A caller still waiting when its deadline passes is left out and fails with
    :func:`not_sent` (never sent: nothing committed); a message gets what is left of its
    callers' earliest deadline, so no caller's call outlasts its timeout.

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
        send: Send,
        max_batch: int = 512,
        max_in_flight: int = 2,
        held_after_s: float = 0.25,
        max_bytes: Callable[[], int] | None = None,
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
        self._max_bytes = max_bytes
        self._waiting: collections.deque[_Entry] = collections.deque()
        # The transactions of the callers in ``_waiting``.
        self._waiting_count = 0
        # The messages in the slots, each with its count of transactions.
        self._in_flight: dict[asyncio.Task[None], int] = {}
        # Messages held or retrying, in the held slots (see the class).
        self._held: set[asyncio.Task[None]] = set()
        self.batches = 0  # messages sent, for tests and statistics
        self._closed = False
        # Fails the callers whose deadline passed while they waited for a slot.
        self._expiry: WaitExpiry[_Entry] = WaitExpiry(
            self._expire, 1, 3, lambda entry: not_sent(entry[4])
        )

    def submit(self, transaction: Transaction, timeout: float) -> asyncio.Future[CommitAnswer]:
        """The future of ``transaction``'s answer, within ``timeout`` seconds from now."""
        future: asyncio.Future[CommitAnswer] = asyncio.get_running_loop().create_future()
        deadline = monotonic() + timeout
        self._waiting.append((transaction, future, None, deadline, timeout))
        self._waiting_count += 1
        self._dispatch()
        if self._waiting and deadline < self._expiry.at:  # it waits: its deadline counts
            self._expiry.arm(deadline)
        return future

    def submit_many(
        self, transactions: list[Transaction], message: bytes, timeout: float, started: float
    ) -> asyncio.Future[CommitAnswers]:
        """The future of the answers of ``transactions`` (encoded as ``message``), in order,
        within ``timeout`` seconds of ``started`` (the call's start, ``time.monotonic()``)."""
        future: asyncio.Future[CommitAnswers] = asyncio.get_running_loop().create_future()
        deadline = started + timeout
        self._waiting.append((transactions, future, message, deadline, timeout))
        self._waiting_count += len(transactions)
        self._dispatch()
        if self._waiting and deadline < self._expiry.at:  # it waits: its deadline counts
            self._expiry.arm(deadline)
        return future

    def _expire(self) -> None:
        self._waiting = self._expiry.sweep(self._waiting)
        self._waiting_count = sum(_size(entry[0]) for entry in self._waiting)

    def _take(self, share: int) -> tuple[list[_Entry], float, int]:
        """The waiting callers of the next message (see the class: callers are added until
        they hold ``share`` transactions or more), their earliest deadline and
        their count of transactions; no callers when every one waiting was cancelled or is past
        its deadline (failed, never sent)."""
        waiting = self._waiting
        limit = self._max_bytes() if self._max_bytes is not None else None
        batch: list[_Entry] = []
        count = size = 0
        now = monotonic()
        earliest = math.inf
        while waiting:
            entry = waiting[0]
            item, future, message, deadline, _ = entry
            more = _size(item)
            grown = size + len(message) if message is not None else size
            if batch and (
                count >= share
                or count + more > self._max_batch
                or (limit is not None and grown > limit)
            ):
                break
            waiting.popleft()
            self._waiting_count -= more
            if future.done():  # cancelled while it waited: not sent
                continue
            if self._expiry.ran_out(entry, now):
                continue
            batch.append(entry)
            count += more
            size = grown
            if deadline < earliest:
                earliest = deadline
        return batch, earliest, count

    def _dispatch(self) -> None:
        loop = asyncio.get_running_loop()
        in_flight = self._in_flight
        while self._waiting and len(in_flight) < self._max_in_flight:
            outstanding = self._waiting_count + sum(in_flight.values())
            batch, deadline, count = self._take(-(-outstanding // self._max_in_flight))
            if not batch:
                return
            self.batches += 1
            task = loop.create_task(self._run(batch, deadline))
            in_flight[task] = count
            loop.call_later(self._held_after_s, self._hold, task)

    def _hold(self, task: asyncio.Task[None]) -> None:
        """``task``'s message is being sent again or is slow to be answered: it moves to a free
        held slot (when it is still in a slot of the others), and its slot goes to the callers
        waiting."""
        if task not in self._in_flight or self._closed:
            return
        if len(self._held) < self._max_in_flight:
            del self._in_flight[task]
            self._held.add(task)
            self._dispatch()
        else:  # every held slot is taken: look again later
            asyncio.get_running_loop().call_later(self._held_after_s, self._hold, task)

    async def _run(self, batch: list[_Entry], deadline: float) -> None:
        # The task _dispatch made for this message (it keeps the message's slot).
        task = cast("asyncio.Task[None]", asyncio.current_task())
        transactions: list[Transaction] = []
        parts: list[bytes] = []
        for item, _, message, _, _ in batch:
            if type(item) is list:
                transactions += item
            else:
                transactions.append(item)  # type: ignore[arg-type]
            if message is not None:
                parts.append(message)
        # Every caller's part encoded: the message is their concatenation (a request's
        # transactions are a repeated field, so encodings join as they are).
        encoded = None
        if len(parts) == len(batch):
            encoded = parts[0] if len(parts) == 1 else b"".join(parts)
        try:
            results = await self._send(transactions, lambda: self._hold(task), encoded, deadline)
        except BaseException as err:  # every caller of the message must hear about it
            cancelled = isinstance(err, asyncio.CancelledError)
            for _, future, _, _, _ in batch:
                # A cancellation (the client closing, asyncio.run ending) cancels the callers'
                # futures: an exception set on them may never be retrieved, and asyncio says so.
                if cancelled:
                    future.cancel()
                elif not future.done():
                    future.set_exception(err)
            if cancelled:
                raise
        else:
            if len(results) != len(transactions):
                error = OracleError(
                    grpc.StatusCode.INTERNAL,
                    f"the server answered {len(results)} results for {len(transactions)} "
                    "transactions",
                )
                for _, future, _, _, _ in batch:
                    if not future.done():
                        future.set_exception(error)
                return
            if len(batch) == 1 and type(batch[0][0]) is list:
                future = batch[0][1]
                if not future.done():
                    future.set_result(results)  # one batch alone: its answers as they came
                return
            position = 0
            for item, future, _, _, _ in batch:
                if type(item) is list:
                    end = position + len(item)
                    answer: Any = results[position:end]
                    position = end
                else:
                    answer = results[position]
                    position += 1
                if not future.done():
                    future.set_result(answer)
        finally:
            if self._closed:
                self._in_flight.pop(task, None)
                self._held.discard(task)
            else:
                # The slot frees on the loop's next turn: the callers this message answered run
                # first, and those that come straight back join the next message instead of one
                # of them taking the slot alone.
                asyncio.get_running_loop().call_soon(self._release, task)

    def _release(self, task: asyncio.Task[None]) -> None:
        self._in_flight.pop(task, None)
        self._held.discard(task)
        if not self._closed:
            self._dispatch()

    async def close(self) -> None:
        self._closed = True
        self._expiry.stop()
        for task in [*self._in_flight, *self._held]:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        error = OracleUnavailableError(grpc.StatusCode.CANCELLED, "client closed")
        self._waiting_count = 0
        while self._waiting:
            future = self._waiting.popleft()[1]
            if not future.done():
                future.set_exception(error)
