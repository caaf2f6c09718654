"""Group commit: transactions submitted while a log write is in flight form the next batch.

:class:`GroupCommitScheduler` owns one writer thread. Each turn it takes everything queued (up to
``max_batch_size``, after waiting at most ``max_batch_delay_us`` for more), and hands the batch to
:class:`~hlc_oracle.CommitEngine` in ONE call that runs without the GIL: ``check_batch`` (first
committer wins), one clock ``reserve`` for the commit timestamps, one log append with every
decision (one ``write`` + one ``fdatasync``), then recording the commits in the conflict detector.
A lone transaction therefore waits for nothing but its own write; a busy oracle batches more.
Where the batch becomes durable is the scheduler's :class:`~hlc_oracle.durable.DurableStep`:
the local commit log by default, or an external store (clustered mode) with
:class:`~hlc_oracle.durable.ExternalDurableStep`.

Durability, by name:

- ``"sync"`` (default): an answer is given after its batch is on disk. The ``fdatasync`` runs
  on the durable step's sync thread while the next batch is decided and written (at most two
  batches unsynced; see :class:`~hlc_oracle.durable.LocalDurableStep`).
- ``"async"``: answers are given after the ``write``, before the ``fdatasync`` (which follows at
  once, before the next batch). A process crash loses nothing (the page cache survives it); a
  machine crash or power loss can lose the acknowledged batches whose ``fdatasync`` had not
  finished: at most one batch.
- ``"memory"``: no log at all (tests and benchmarks); everything is lost on restart.

Answers are :class:`~hlc_oracle.Committed` (with the commit timestamp) or
:class:`~hlc_oracle.Aborted` (``reason`` "conflict" with the :class:`~hlc_oracle.Conflict`, or
"requested" after :meth:`GroupCommitScheduler.abort`). Submitting an id that is already decided
returns its first decision; the same id with different contents raises
:class:`~hlc_oracle.TransactionMismatchError`. A full queue raises
:class:`~hlc_oracle.SchedulerOverloadedError` instead of growing without bound.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import functools
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable
from types import TracebackType
from typing import Any, Final, Self, cast

from hlc_oracle._core import (
    Aborted,
    CeilingReachedError,
    Clock,
    CommitFuture,
    CommitLogError,
    Committed,
    PendingBatch,
    PendingQueue,
    SchedulerClosedError,
    StreamResult,
    Timestamp,
    Transaction,
    count_commit_request,
)
from hlc_oracle.commit_options import CommitOptions
from hlc_oracle.durable import Answer, Answers, DurableStep, LocalDurableStep, Request

__all__ = ["CeilingRaised", "CommitOptions", "GroupCommitScheduler", "Outcome", "StreamResult"]

Outcome = Committed | Aborted

logger = logging.getLogger("hlc_oracle.scheduler")


_Request = Request

#: Times a request refused at the clock's ceiling is retried although the ceiling has not risen
#: since its batch was tried (the window was already well ahead: what the request needs is further
#: off, e.g. a start timestamp ahead of this clock). Retries after the ceiling rose are not
#: counted: the window is being saved, so the request waits for it however long a pause (a loaded
#: machine) separates the raise from the retried batch; a fixed count lost that race.
CEILING_RETRIES = 3
#: Least seconds between two warnings that raising the ceiling failed (etcd away: every batch).
CEILING_REPORT_INTERVAL_S = 10.0

#: Longest a status query waits for a new leader's decision history.
HISTORY_STATUS_WAIT_S = 30.0

#: What ``on_ceiling`` is handed: call it once the raise is over, with ``None`` or its error.
CeilingRaised = Callable[[BaseException | None], None]


# What an entry holds: one request (answered with its answer), a group (answered with a list),
# or one serialized CommitStreamRequest (answered with a StreamResult).
_SINGLE, _GROUP, _STREAM = 0, 1, 2


#: One queued submission as the slow paths see it (a new leader's history, the clock's ceiling):
#: ``(kind, payload, size, waiter, attempts)``. In the queue (``PendingQueue``, in Rust) and in a
#: batch (``PendingBatch``) an entry is no Python object: ``submit`` runs no bytecode per caller.
_Entry = tuple[int, Any, int, Any, int]
_KIND: Final = 0
_PAYLOAD: Final = 1
_SIZE: Final = 2
_WAITER: Final = 3
_ATTEMPTS: Final = 4


class GroupCommitScheduler:
    """Batches commits into one durable log write each; see the module docstring.

    ``path`` is the log directory (None with durability "memory" or an external
    ``durable_step``). Opening replays the log (decisions, conflict history, clock floor) before
    the scheduler accepts anything.
    """

    def __init__(
        self,
        path: str | os.PathLike[str] | None,
        clock: Clock | None = None,
        options: CommitOptions | None = None,
        durable_step: DurableStep | None = None,
    ) -> None:
        self.options = dataclasses.replace(options) if options else CommitOptions()
        self.clock = clock if clock is not None else Clock()
        self.durable_step: DurableStep = (
            durable_step if durable_step is not None else LocalDurableStep()
        )
        started = time.perf_counter()
        self.engine = self.durable_step.open_engine(path, self.clock, self.options)
        self._log_recovery(time.perf_counter() - started)
        #: Called (from whichever thread releases a batch: the writer, or the durable step's
        #: event loop) when the clock refused commit timestamps at its ceiling, with a callback:
        #: it must START raising the ceiling (the server extends its persisted window) and return
        #: at once, then call the callback (from any thread) with ``None`` once the ceiling rose,
        #: or with the error. It must never wait for the raise itself.
        self.on_ceiling: Callable[[CeilingRaised], None] | None = None
        self._lock = threading.Lock()
        self._wakeup = threading.Condition(self._lock)
        #: Queued submissions; also counts the parked ones (see ``park``), and notifies
        #: ``_wakeup`` when a submission finds the writer waiting.
        self._queue = PendingQueue(self.options.max_queue, self._wakeup)
        #: ``submit`` is the queue's (see the method below): no Python frame per call.
        self.submit = self._queue.submit  # type: ignore[method-assign]
        # Raises under way (the requests parked until they complete are counted by the queue).
        self._raising = 0
        self._ceiling_failures = 0
        self._ceiling_report_at = 0.0
        # Requests held while a new clustered leader's decision history loads (set: loaded).
        self._history_held: list[_Entry] = []
        self._history_loaded = threading.Event()
        self._history_loaded.set()
        # Bumped (and notified) at each piece of history loaded, at its end and at close.
        self._history_moved = threading.Condition(threading.Lock())
        self._history_progress = 0
        self._closed = False
        self._in_flight = 0
        self._thread = threading.Thread(
            target=self._run, name="hlc-oracle-group-commit", daemon=True
        )
        self._thread.start()

    def _log_recovery(self, seconds: float) -> None:
        recovery = self.engine.recovery
        stats = self.engine.stats()
        if recovery is None:
            logger.info("group commit: durability=%s, no log to recover", self.engine.durability)
            return
        logger.info(
            "group commit: recovered %d records (%d commits, %d aborts) from %d segments, "
            "%d bytes in %.3f s (log replay %.3f s); truncated %d bytes of torn tail; floor %s",
            recovery.record_count,
            stats["recovered_commits"],
            stats["recovered_aborts"],
            recovery.segments,
            recovery.bytes_read,
            seconds,
            recovery.seconds,
            recovery.truncated_bytes,
            self.engine.floor,
        )

    # ---- submitting -------------------------------------------------------------------------

    def _enqueue(self, entry: _Entry) -> None:
        """Queues ``entry``; ``SchedulerClosedError`` when closed, ``SchedulerOverloadedError``
        when ``max_queue`` requests are waiting already."""
        self._queue.put(entry)

    @staticmethod
    def _check_transaction(txn: object) -> None:
        if not isinstance(txn, Transaction):
            raise TypeError(f"txn must be a Transaction, got {type(txn).__name__}")

    @staticmethod
    def _check_txn_id(txn_id: object) -> None:
        if not isinstance(txn_id, int) or isinstance(txn_id, bool):
            raise TypeError(f"txn_id must be an int, got {type(txn_id).__name__}")
        if not 0 <= txn_id < 1 << 64:
            raise ValueError(f"txn_id must be in 1..2**64-1, got {txn_id}")

    def submit(self, txn: Transaction) -> CommitFuture:
        """Commits ``txn`` in the next batch: await the answer, ``Committed`` or ``Aborted``.

        Queued at the call (bad input, a full queue or a closed scheduler raise there): a plain
        function returning the future, because a coroutine frame per commit costs a tenth of
        what the whole in-process submit costs. Must be called on a running event loop.

        The future is a :class:`~hlc_oracle.CommitFuture`, asyncio-compatible (await it, or give
        it to ``wait_for``, ``gather``, ``shield``; cancel it): its answer runs the awaiting
        task's wake-up at once, in the one call of the loop that answers the whole batch,
        instead of one ``call_soon`` handle per caller as an ``asyncio.Future`` would.

        The queue does it in Rust (``PendingQueue.submit``: no bytecode, no tuple per caller),
        and an instance's ``submit`` is that bound method itself (see ``__init__``); this method
        is its documented and typed face, never run for an instance."""
        return self._queue.submit(txn)

    def submit_blocking(self, txn: Transaction, timeout: float | None = None) -> Outcome:
        """The blocking form of :meth:`submit`, for threads without an event loop."""
        self._check_transaction(txn)
        future: concurrent.futures.Future[Outcome] = concurrent.futures.Future()
        self._enqueue((_SINGLE, txn, 1, future, 0))
        return future.result(timeout)

    async def submit_many(
        self, requests: Iterable[Transaction | int]
    ) -> list[Outcome | BaseException]:
        """Submits a group at once (a ``Transaction`` commits it, an ``int`` aborts that id); the
        group goes into one batch (alone if larger than ``max_batch_size``). Answers come back in
        order, with the exception in place of the answer for a refused request."""
        group = list(requests)
        for request in group:
            if not isinstance(request, Transaction | int) or isinstance(request, bool):
                raise TypeError(
                    f"requests must be Transactions or int ids, got {type(request).__name__}"
                )
        if not group:
            return []
        future: asyncio.Future[list[Outcome | BaseException]] = (
            asyncio.get_running_loop().create_future()
        )
        self._enqueue((_GROUP, group, len(group), future, 0))
        return await future

    async def submit_stream(self, message: bytes) -> StreamResult:
        """Decides the transactions of one serialized ``CommitStreamRequest`` with the next batch,
        bytes in and bytes out: no Python object per transaction. Each malformed or refused
        transaction gets its own error result (with its gRPC code) in the response, the rest are
        decided; ``ValueError`` when the message itself is malformed (nothing is decided)."""
        size = count_commit_request(message)
        if size == 0:
            return StreamResult(b"", 0, 0, 0)
        future: asyncio.Future[StreamResult] = asyncio.get_running_loop().create_future()
        self._enqueue((_STREAM, message, size, future, 0))
        return await future

    async def abort(self, txn_id: int, start_ts: Timestamp | None = None) -> Outcome:
        """Records an abort for an undecided id, so that a late commit of it is refused (how a
        participant that timed out resolves an in-doubt transaction). Returns the decision: the
        abort, or the first decision when the id was already decided. ``start_ts``, the
        transaction's start when the caller knows it, lets a new clustered leader decide the
        abort before its whole decision history is loaded (:meth:`hold_for_history`)."""
        request = self._abort_request(txn_id, start_ts)
        future: asyncio.Future[Outcome] = asyncio.get_running_loop().create_future()
        self._enqueue((_SINGLE, request, 1, future, 0))
        return await future

    def abort_blocking(
        self, txn_id: int, timeout: float | None = None, start_ts: Timestamp | None = None
    ) -> Outcome:
        request = self._abort_request(txn_id, start_ts)
        future: concurrent.futures.Future[Outcome] = concurrent.futures.Future()
        self._enqueue((_SINGLE, request, 1, future, 0))
        return future.result(timeout)

    def _abort_request(self, txn_id: int, start_ts: Timestamp | None) -> _Request:
        self._check_txn_id(txn_id)
        if start_ts is None:
            return txn_id
        if not isinstance(start_ts, Timestamp):
            raise TypeError(f"start_ts must be a Timestamp, got {type(start_ts).__name__}")
        return (txn_id, start_ts)

    def status(self, txn_id: int, start_ts: Timestamp | None = None) -> Outcome | None:
        """``Committed`` or ``Aborted`` for a decided id, None when unknown (never decided, or
        older than ``retained_decisions``). May wait for the batch being written, and, on a new
        clustered leader, for its decision history (see :meth:`hold_for_history`): all of it,
        or, given the transaction's start ``start_ts``, only as long as a commit with that start
        would be held."""
        request = self._abort_request(txn_id, start_ts)
        answer = self.engine.status(txn_id)
        if answer is None and not self._history_loaded.is_set():
            self._wait_for_history(txn_id, request)
            if self._closed:  # closed while taking over: the history never loaded here
                raise SchedulerClosedError("the group-commit scheduler closed while taking over")
            answer = self.engine.status(txn_id)
        return answer

    def _wait_for_history(self, txn_id: int, request: _Request) -> None:
        """Until the history no longer holds ``request`` (``txn_id``, or it and its start), at most
        ``HISTORY_STATUS_WAIT_S``; ``CommitLogError`` (retryable) after that."""
        deadline = time.monotonic() + HISTORY_STATUS_WAIT_S
        while True:
            with self._history_moved:
                seen = self._history_progress
            if self._history_loaded.is_set() or not self.engine.needs_history(request):
                return
            with self._history_moved:
                while self._history_progress == seen:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        raise CommitLogError(
                            f"transaction {txn_id}: taking over: the decision history is still "
                            f"loading after {HISTORY_STATUS_WAIT_S:g} s; retry"
                        )
                    self._history_moved.wait(remaining)

    def _history_moved_on(self) -> None:
        """Wakes the status queries waiting for the history (:meth:`_wait_for_history`)."""
        with self._history_moved:
            self._history_progress += 1
            self._history_moved.notify_all()

    # ---- a new clustered leader's decision history --------------------------------------------

    def hold_for_history(self) -> None:
        """Until :meth:`history_loaded`, a request the engine says may need the decision history
        (``CommitEngine.needs_history``, after ``begin_history_load``) is held, the others are
        decided; ``status`` of an id the engine does not know waits."""
        self._history_loaded.clear()

    def history_loaded(self) -> None:
        """The engine's history is loaded (``end_history_load`` was called): the held requests
        go to the front of the queue."""
        with self._lock:
            held, self._history_held = self._history_held, []
            self._queue.park(-sum(entry[_SIZE] for entry in held))
            self._queue.put_front(held)
            self._history_loaded.set()
            self._wakeup.notify_all()
        self._history_moved_on()

    def history_progressed(self) -> None:
        """Part of the history is loaded (newest first, see ``CommitEngine.replay_pieces``): the
        held requests the engine no longer says may need it go to the front of the queue."""
        self._history_moved_on()
        with self._lock:
            if self._history_loaded.is_set() or not self._history_held:
                return
            held = list(self._history_held)
        ready = {id(entry) for entry in held if not self.engine.needs_history(entry[_PAYLOAD])}
        if not ready:
            return
        with self._lock:
            if self._history_loaded.is_set():  # history_loaded released every one meanwhile
                return
            released = [entry for entry in self._history_held if id(entry) in ready]
            self._history_held = [e for e in self._history_held if id(e) not in ready]
            self._queue.park(-sum(entry[_SIZE] for entry in released))
            self._queue.put_front(released)
            self._wakeup.notify_all()

    def _hold_needing_history(self, batch: PendingBatch) -> PendingBatch:
        """The entries of ``batch`` that may be decided now; the others are held."""
        entries = batch.entries()
        needs = [self.engine.needs_history(entry[_PAYLOAD]) for entry in entries]
        with self._lock:
            if self._history_loaded.is_set():  # loaded meanwhile: nothing is held any more
                return batch
            held = [entry for entry, wait in zip(entries, needs, strict=True) if wait]
            self._history_held.extend(held)
            self._queue.park(sum(entry[_SIZE] for entry in held))
        return PendingBatch([entry for entry, wait in zip(entries, needs, strict=True) if not wait])

    # ---- the writer thread ------------------------------------------------------------------

    def _take_batch(self) -> PendingBatch | None:
        """Blocks until there is work; None when closed and drained."""
        opts = self.options
        queue = self._queue
        with self._lock:
            # While the ceiling is being raised, new batches would only meet it too: the parked
            # requests go first once it rose. ``writer_waits`` tells the queue to notify the next
            # submission, in the same step as it says whether it is empty: none is missed.
            while True:
                empty = queue.writer_waits()
                if not empty and not self._raising:
                    break
                if self._closed and empty and not self._raising:
                    queue.writer_woke()
                    return None
                self._wakeup.wait()
            if opts.max_batch_delay_us and queue.queued < opts.max_batch_size:
                deadline = time.monotonic() + opts.max_batch_delay_us / 1e6
                while not self._closed:
                    queue.writer_waits()
                    remaining = deadline - time.monotonic()
                    if queue.queued >= opts.max_batch_size or remaining <= 0:
                        break
                    self._wakeup.wait(remaining)
            queue.writer_woke()
            batch = queue.take(opts.max_batch_size)
            self._in_flight = batch.size
            return batch

    def _run(self) -> None:
        engine = self.engine
        step = self.durable_step
        while True:
            batch = self._take_batch()
            if batch is None:
                return
            if not self._history_loaded.is_set():
                batch = self._hold_needing_history(batch)
                if not len(batch):
                    with self._lock:
                        self._in_flight = 0
                    continue
            parts, all_single = batch.parts()
            # The ceiling this batch is tried under: a retry after it rose is not counted.
            ceiling = self.clock.ceiling_physical
            finish = functools.partial(self._finish, batch, all_single, ceiling)
            step.decide(engine, parts, finish)
            with self._lock:
                self._in_flight = 0

    def _finish(
        self,
        batch: PendingBatch,
        all_single: bool,
        tried_ceiling: int | None,
        results: Answers,
    ) -> None:
        """A batch's answers may go out (called by the durable step, from any thread)."""
        entries: list[_Entry] | None = None
        if all_single and not isinstance(results, BaseException):
            # One list part: one answer per entry, in order.
            answers = cast("list[object]", results[0])
        else:
            entries = batch.entries()
            answers = _entry_answers(entries, results)
        if self.on_ceiling is not None and (
            entries is not None or CeilingReachedError in set(map(type, answers))
        ):
            if entries is None:
                entries = batch.entries()
            kept, kept_answers = self._retry_after_ceiling(entries, answers, tried_ceiling)
            if kept is not entries:
                PendingBatch(kept).deliver(kept_answers)
                return
        batch.deliver(answers)

    def _retry_after_ceiling(
        self, batch: list[_Entry], answers: list[object], tried_ceiling: int | None
    ) -> tuple[list[_Entry], list[object]]:
        """Entries refused because the clock reached its ceiling (the persisted timestamp window)
        are parked while ``on_ceiling`` raises it, and go back to the front of the queue when the
        raise completes (see :data:`CEILING_RETRIES`); the writer takes no new batch meanwhile.
        Nothing was logged for them, and resubmitting the decided members of a group only returns
        their decisions. When the raise fails (the window cannot be saved), they are answered
        with the refusal. Nothing here waits for the raise: this runs on whatever thread released
        the batch, the event loop that saves the window among them."""
        retry = [
            index
            for index, (entry, answer) in enumerate(zip(batch, answers, strict=True))
            if entry[_ATTEMPTS] < CEILING_RETRIES and _hit_ceiling(entry[_KIND], answer)
        ]
        on_ceiling = self.on_ceiling
        if not retry or on_ceiling is None:
            return batch, answers
        parked = [batch[i] for i in retry]
        refusals = [answers[i] for i in retry]
        with self._lock:
            self._raising += 1
            self._queue.park(sum(entry[_SIZE] for entry in parked))
        completed = threading.Event()  # exactly once, whoever reports

        def raised(error: BaseException | None) -> None:
            if completed.is_set():
                return
            completed.set()
            self._ceiling_raised(parked, refusals, tried_ceiling, error)

        try:
            on_ceiling(raised)
        except Exception as error:  # the raise could not even start
            raised(error)
        again = set(retry)
        kept = [i for i in range(len(batch)) if i not in again]
        return [batch[i] for i in kept], [answers[i] for i in kept]

    def _ceiling_raised(
        self,
        parked: list[_Entry],
        refusals: list[object],
        tried_ceiling: int | None,
        error: BaseException | None,
    ) -> None:
        """The raise started for ``parked`` is over (from any thread): re-queue them in front,
        counting the attempt only when the ceiling did not rise; or, when it failed, answer them
        with their refusal."""
        counted = 0 if self.clock.ceiling_physical != tried_ceiling else 1
        size = sum(entry[_SIZE] for entry in parked)
        with self._lock:
            self._raising -= 1
            self._queue.park(-size)
            if error is None:
                self._queue.put_front(
                    [
                        (kind, payload, entry_size, waiter, attempts + counted)
                        for kind, payload, entry_size, waiter, attempts in parked
                    ]
                )
            self._wakeup.notify_all()
        if error is not None:
            self._ceiling_failures += 1
            if self._ceiling_failures == 1 or time.monotonic() >= self._ceiling_report_at:
                self._ceiling_report_at = time.monotonic() + CEILING_REPORT_INTERVAL_S
                logger.warning(
                    "group commit: raising the clock ceiling failed (%d failures so far): %s: %s",
                    self._ceiling_failures,
                    type(error).__name__,
                    error,
                )
            PendingBatch(parked).deliver(refusals)

    # ---- lifecycle and figures ----------------------------------------------------------------

    @property
    def durability(self) -> str:
        """The engine's: "sync", "async", "memory", or "external" (clustered)."""
        return self.engine.durability

    @property
    def closed(self) -> bool:
        return self._closed

    def queue_length(self) -> int:
        """Requests waiting for a batch (not counting the one being written), parked ones too."""
        return self._queue.waiting

    def stats(self) -> dict[str, int | None]:
        """committed, aborted, batches, queued, in_flight, recovered_*, retained_decisions, ..."""
        figures: dict[str, int | None] = dict(self.engine.stats())
        figures["queued"] = self._queue.waiting
        figures["in_flight"] = self._in_flight
        return figures

    def close(self, timeout: float | None = 30.0) -> None:
        """Stops accepting requests, decides everything already queued, syncs. Idempotent."""
        with self._lock:
            self._closed = True
            self._queue.close()
            self._wakeup.notify_all()
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout)
        with self._lock:
            held, self._history_held = self._history_held, []
            self._queue.park(-sum(entry[_SIZE] for entry in held))
        if held:  # never decided: refused, so callers retry elsewhere
            refusal = SchedulerClosedError("the group-commit scheduler closed while taking over")
            PendingBatch(held).deliver(_entry_answers(held, refusal))
        self._history_loaded.set()  # status queries waiting for it are refused
        self._history_moved_on()
        self.durable_step.drain(self.engine, timeout)
        self.engine.close()

    async def aclose(self) -> None:
        await asyncio.to_thread(self.close)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()


def _entry_answers(batch: list[_Entry], results: Answers) -> list[object]:
    """Each entry's answer, walking the parts as ``PendingBatch.parts`` built them."""
    if isinstance(results, BaseException):
        return [[results] * entry[_SIZE] if entry[_KIND] == _GROUP else results for entry in batch]
    answers: list[object] = []
    part = -1
    position = 0
    objects: list[Answer] | None = None
    for kind, _, size, _, _ in batch:
        if kind == _STREAM:
            part += 1
            objects = None
            answers.append(results[part])
            continue
        if objects is None:
            part += 1
            objects = cast("list[Answer]", results[part])  # a list part, as parts() built it
            position = 0
        if kind == _SINGLE:
            answers.append(objects[position])
            position += 1
        else:
            answers.append(objects[position : position + size])
            position += size
    return answers


def _hit_ceiling(kind: int, answer: object) -> bool:
    if kind == _SINGLE:
        return isinstance(answer, CeilingReachedError)
    if kind == _GROUP:
        return any(isinstance(one, CeilingReachedError) for one in answer)  # type: ignore[attr-defined]
    return isinstance(answer, StreamResult) and answer.ceiling
