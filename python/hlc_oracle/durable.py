"""Where a batch becomes durable: the group-commit scheduler's one seam between standalone and
clustered mode.

The :class:`~hlc_oracle.CommitEngine` decides a batch (validation, idempotency, conflicts,
timestamps) and encodes its new decisions as records (``rust/src/commit/durable.rs``). A
:class:`DurableStep` opens the engine and runs each batch through it:

- :class:`LocalDurableStep` (standalone): the engine appends the records to its local commit log
  (one ``write``). In ``sync`` durability the answers are parked, as an external step's are, and
  released by the step's sync thread once an ``fdatasync`` that began after the write returns;
  the next batch is decided and written meanwhile. The sync thread waits for writes inside the
  engine (without the GIL), so it starts each ``fdatasync`` as soon as the write is done; it
  takes the GIL only to hand out the answers. Otherwise they go out at once.
- :class:`ExternalDurableStep` (clustered): the engine, opened with durability ``"external"``,
  hands out each batch's records as numbered pieces ``(batch_seq, bytes)``; the step writes each
  piece with ``store`` (a coroutine on the store's event loop: one fenced etcd txn in clustered
  mode) and reports it durable (:meth:`~hlc_oracle.CommitEngine.confirm`) or failed
  (:meth:`~hlc_oracle.CommitEngine.fail`). Up to ``max_in_flight`` batches are pending at once;
  later batches are decided against them; answers go out in decision order, each once its pieces
  are durable. A failed write, or one whose outcome is unknown (timeout, cancellation), answers
  every pending batch :class:`~hlc_oracle.CommitOutcomeUnknownError` (``UNAVAILABLE``) and stops
  the engine: nothing is guessed, and the node must stop serving (``on_failure``).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Protocol, cast

from hlc_oracle._core import (
    Aborted,
    Clock,
    CommitEngine,
    CommitLogError,
    CommitOutcomeUnknownError,
    Committed,
    StreamResult,
    Timestamp,
    Transaction,
)

if TYPE_CHECKING:
    import os

    from hlc_oracle.commit_options import CommitOptions

__all__ = [
    "Answer",
    "Answers",
    "DecisionStore",
    "DurableStep",
    "ExternalDurableStep",
    "LocalDurableStep",
    "PartResult",
    "Parts",
]

#: One request's answer: the decision, or the exception that refused it (returned, not raised).
Answer = Committed | Aborted | BaseException
#: One part's result (see ``CommitEngine.process_parts``): a list part's answers in request order,
#: a serialized message's :class:`~hlc_oracle.scheduler.StreamResult`, or the ``ValueError`` of a
#: malformed message.
PartResult = list[Answer] | StreamResult | ValueError
#: One batch's results, per part; or one exception for the whole batch.
Answers = list[PartResult] | BaseException
#: One request: a commit, an abort by id, or an abort by id naming the transaction's start.
Request = Transaction | int | tuple[int, Timestamp]
#: A batch's parts: lists of requests, or serialized ``CommitStreamRequest`` messages.
Parts = list[list[Request] | bytes]
#: The largest piece by default: etcd refuses requests over 1.5 MiB by default.
DEFAULT_MAX_BATCH_BYTES = 1 << 20
#: Writes one piece ``(batch_seq, data)``; returns once it is durable, raises when it is not (or
#: when its outcome is unknown).
DecisionStore = Callable[[int, bytes], Awaitable[None]]


class DurableStep(Protocol):
    """How the scheduler's writer thread turns a batch of requests into durable answers."""

    def open_engine(
        self, path: str | os.PathLike[str] | None, clock: Clock, options: CommitOptions
    ) -> CommitEngine:
        """The engine this step drives (replaying what it can recover)."""
        ...

    def decide(
        self,
        engine: CommitEngine,
        parts: Parts,
        finish: Callable[[Answers], None],
    ) -> None:
        """Decides the batch ``parts``; calls ``finish`` with their answers (from any thread) once
        they may go out. May block the writer thread while too many batches are pending."""
        ...

    def drain(self, engine: CommitEngine, timeout: float | None) -> None:
        """Before closing: waits for the pending batches' answers (none are left unanswered)."""
        ...


def _engine_options(options: CommitOptions) -> dict[str, Any]:
    return {
        "isolation": options.isolation,
        "max_keys": options.max_keys,
        "max_read_keys": options.max_read_keys,
        "max_write_keys": options.max_write_keys,
        "max_key_bytes": options.max_key_bytes,
        "retained_decisions": options.retained_decisions,
    }


class _ParkedAnswers:
    """The answers of batches decided and parked until durable, handed to each batch's
    ``finish`` in decision order as the engine releases them (from whichever thread releases
    them); the writer waits while ``max_in_flight`` batches are parked."""

    def __init__(self, max_in_flight: int) -> None:
        if not isinstance(max_in_flight, int) or not 1 <= max_in_flight <= 64:
            raise ValueError(f"max_in_flight must be an int in 1..64, got {max_in_flight!r}")
        self.max_in_flight = max_in_flight
        self._lock = threading.Lock()
        self._settled = threading.Condition(self._lock)
        self._finishers: dict[int, Callable[[Answers], None]] = {}
        # Answers released before their ticket's finisher was registered (a release on another
        # thread can come while the writer thread is still inside decide).
        self._early: dict[int, list[PartResult]] = {}
        # Set once the parked batches were given up on: a batch parked later is answered with it.
        self._given_up: BaseException | None = None

    def pending(self) -> int:
        """Batches decided and not yet answered."""
        with self._lock:
            return len(self._finishers)

    def _wait_for_room(self) -> None:
        with self._settled:
            while len(self._finishers) >= self.max_in_flight:
                self._settled.wait()

    def _park(self, ticket: int, finish: Callable[[Answers], None]) -> None:
        with self._lock:
            given_up = self._given_up
            early = self._early.pop(ticket, None)
            if early is None and given_up is None:
                self._finishers[ticket] = finish
        if early is not None:
            finish(early)
        elif given_up is not None:
            finish(given_up)

    def _give_up(self, error: BaseException) -> None:
        """Answers every parked batch, and every batch parked from now on, with ``error``."""
        with self._settled:
            self._given_up = error
            finishers = list(self._finishers.values())
            self._finishers.clear()
            self._settled.notify_all()
        for finish in finishers:
            finish(error)

    def _release(self, released: list[tuple[int, list[Answer] | list[PartResult]]]) -> None:
        if not released:
            return
        ready: list[tuple[Callable[[Answers], None], list[PartResult]]] = []
        with self._settled:
            for ticket, batch_answers in released:
                # Every parked batch is decided by decide_parts: its answers are per part.
                answers = cast("list[PartResult]", batch_answers)
                finish = self._finishers.pop(ticket, None)
                if finish is None and self._given_up is None:
                    self._early[ticket] = answers
                elif finish is not None:
                    ready.append((finish, answers))
            self._settled.notify_all()
        for finish, answers in ready:
            finish(answers)

    def _wait_settled(self, timeout: float | None) -> bool:
        """Waits until no batch is parked; False when some still are after ``timeout``."""
        with self._settled:
            self._settled.wait_for(lambda: not self._finishers, timeout)
            return not self._finishers


class LocalDurableStep(_ParkedAnswers):
    """Standalone: the local commit log. In ``sync`` durability (with ``pipelined``, the
    default) the engine only writes each batch inside its call and parks its answers; a sync
    thread ``fdatasync``s the log outside the engine's lock and releases the answers of every
    batch written before that sync began (``CommitEngine.sync_parked``), so the next batch is
    decided and written while one syncs. At most ``max_in_flight`` batches are unsynced: the
    writer waits beyond. A failed ``fdatasync`` aborts the process (never retried). Otherwise
    (``async``, ``memory``, or not pipelined) the log is written, and synced, inside the
    engine's call and the answers go out at once."""

    def __init__(self, *, pipelined: bool = True, max_in_flight: int = 2) -> None:
        super().__init__(max_in_flight)
        self._sync_after = False
        self._pipelined = pipelined
        self._syncer: threading.Thread | None = None

    def open_engine(
        self, path: str | os.PathLike[str] | None, clock: Clock, options: CommitOptions
    ) -> CommitEngine:
        self._sync_after = options.durability == "async"
        engine = CommitEngine(
            path,
            clock,
            durability=options.durability,
            segment_size=options.segment_size,
            retain_segments=options.retain_segments,
            **_engine_options(options),
        )
        if self._pipelined and engine.pipeline_syncs():
            self._syncer = threading.Thread(
                target=self._sync_loop, args=(engine,), name="hlc-oracle-log-sync", daemon=True
            )
            self._syncer.start()
        return engine

    def decide(
        self,
        engine: CommitEngine,
        parts: Parts,
        finish: Callable[[Answers], None],
    ) -> None:
        if self._syncer is None:
            try:
                answers: Answers = engine.process_parts(parts)
            except BaseException as error:  # every waiter must hear about it
                answers = error
            finish(answers)
            if self._sync_after:
                engine.sync()
            return
        self._wait_for_room()
        try:
            ticket, _pieces, released = engine.decide_parts(parts)
        except BaseException as error:
            finish(error)
            return
        # The engine woke the sync thread when it wrote the batch.
        self._park(ticket, finish)
        self._release(released)

    def _sync_loop(self, engine: CommitEngine) -> None:
        try:
            # Each call waits in the engine, without the GIL, for a written batch.
            while (released := engine.sync_parked()) is not None:
                self._release(released)
        except BaseException as error:  # every waiter must hear about it
            self._stop(
                engine, f"the commit log's sync thread failed: {type(error).__name__}: {error}"
            )
            if not isinstance(error, Exception):
                raise

    def _stop(self, engine: CommitEngine, reason: str) -> None:
        """Answers every parked batch "outcome unknown" (it may or may not be on disk) and closes
        the engine, so no batch is written that nobody would answer."""
        self._give_up(CommitOutcomeUnknownError(reason))
        with contextlib.suppress(Exception):  # the engine's own failure: answered above
            engine.close()

    def drain(self, engine: CommitEngine, timeout: float | None) -> None:
        """Waits until every written batch is synced and answered, then stops the sync thread."""
        syncer = self._syncer
        if syncer is None:
            return
        if not self._wait_settled(timeout):
            self._stop(engine, "closed while commit log syncs were unfinished")
        engine.stop_sync_waits()
        syncer.join(timeout)


def external_engine(
    clock: Clock,
    options: CommitOptions,
    max_batch_bytes: int = DEFAULT_MAX_BATCH_BYTES,
    first_batch_seq: int = 1,
) -> CommitEngine:
    """An engine whose batches become durable outside it (:class:`ExternalDurableStep`)."""
    return CommitEngine(
        None,
        clock,
        durability="external",
        max_batch_bytes=max_batch_bytes,
        first_batch_seq=first_batch_seq,
        **_engine_options(options),
    )


class ExternalDurableStep(_ParkedAnswers):
    """Clustered: each batch's records are written by ``store`` on ``loop``; see the module
    docstring. ``first_batch_seq`` continues after the pieces already stored (a new leader);
    ``max_batch_bytes`` caps one piece (etcd refuses requests over 1.5 MiB by default).
    ``standby``: an engine built ahead (:func:`external_engine`, on the same clock and options,
    nothing decided), used instead of a new one, its pieces numbered from ``first_batch_seq``."""

    def __init__(
        self,
        store: DecisionStore,
        loop: asyncio.AbstractEventLoop,
        *,
        max_in_flight: int = 4,
        max_batch_bytes: int = DEFAULT_MAX_BATCH_BYTES,
        first_batch_seq: int = 1,
        on_failure: Callable[[str], None] | None = None,
        standby: CommitEngine | None = None,
    ) -> None:
        super().__init__(max_in_flight)
        self._store = store
        self._loop = loop
        self.max_batch_bytes = max_batch_bytes
        self.first_batch_seq = first_batch_seq
        self._standby = standby
        #: Called once (from the store's loop) with the reason when a write fails: the node must
        #: stop serving.
        self.on_failure = on_failure
        #: Why the engine stopped, once a write failed.
        self.failure: str | None = None

    def open_engine(
        self, path: str | os.PathLike[str] | None, clock: Clock, options: CommitOptions
    ) -> CommitEngine:
        if path is not None:
            raise ValueError(f"the external durable step keeps no local log, got path={path!r}")
        standby, self._standby = self._standby, None
        if standby is not None:
            standby.start_batches_at(self.first_batch_seq)
            return standby
        return external_engine(clock, options, self.max_batch_bytes, self.first_batch_seq)

    def decide(
        self,
        engine: CommitEngine,
        parts: Parts,
        finish: Callable[[Answers], None],
    ) -> None:
        self._wait_for_room()
        try:
            ticket, pieces, released = engine.decide_parts(parts)
        except BaseException as error:
            finish(error)
            return
        self._park(ticket, finish)
        self._release(released)
        for batch_seq, data in pieces:
            asyncio.run_coroutine_threadsafe(self._write(engine, batch_seq, data), self._loop)

    async def _write(self, engine: CommitEngine, batch_seq: int, data: bytes) -> None:
        try:
            await self._store(batch_seq, data)
        except BaseException as error:  # failed, or cancelled: the outcome is unknown either way
            reason = f"decision batch {batch_seq}: {type(error).__name__}: {error}"
            first = self.failure is None
            if first:
                self.failure = reason
            self._release(engine.fail(reason))
            if first and self.on_failure is not None:
                self.on_failure(reason)
            if not isinstance(error, Exception):
                raise
            return
        try:
            released = engine.confirm(batch_seq)
        except (CommitLogError, ValueError):
            # Stopped by an earlier failure, or closed after a drain that timed out: its callers
            # were answered "outcome unknown" then.
            return
        self._release(released)

    def drain(self, engine: CommitEngine, timeout: float | None) -> None:
        """Waits for the pending batches; when they outlast ``timeout``, they are answered
        outcome unknown. Must not run on the store's loop (the confirmations run there)."""
        if not self._wait_settled(timeout):
            self._release(engine.fail("closed while decision writes were unconfirmed"))
