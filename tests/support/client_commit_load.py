"""Commit load through the client library, for the tests and benchmarks of commits across leader
changes: :class:`ClientCommitLoad`.

    with ClientCommitLoad(cluster.targets) as load:   # callers on a thread of their own
        load.run()                                      # they call until pause() or the end
        load.wait_for_more_than(len(load.decided) + 200)
        ...
    load.decided, load.answered, load.answers, load.unknown, load.errors

Each transaction takes a fresh start timestamp and writes keys of its own, so it conflicts with
nothing: a committed answer is the rule, an abort means it started under a leader that is gone
(too old). Unlike ``tests/support/grpc_commit_load.py``'s ``GrpcCommitLoad`` (plain gRPC,
resending itself), every retry here is the library's.
"""

from __future__ import annotations

import asyncio
import bisect
import collections
import itertools
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Self

from hlc_oracle import Aborted, Committed, Timestamp, Transaction
from hlc_oracle.client import AsyncOracleClient, OracleOutcomeUnknownError

from tests.support.started_fixture import StartedFixture

#: Far above any failover the tests and benchmarks cause: a call ends with an error only when
#: something is wrong.
CLIENT_TIMEOUT_S = 20.0
#: Open-loop commit calls in flight at most (see ``arrival_interval_s``).
MAX_ARRIVALS = 200
#: The call a caller makes, by the caller's name, for :meth:`ClientCommitLoad.errors_by_kind`.
CALL_NAMES = {"_commits": "commit", "_batches": "commit_many", "_unary": "commit_unary"}


class ClientCommitLoad(StartedFixture):
    """Callers of one :class:`AsyncOracleClient` given ``targets``: ``commit_callers`` calling
    ``commit()``, ``batch_callers`` calling ``commit_many()`` of ``batch`` transactions, and
    (``unary_caller``) one alternating ``commit_unary()`` and ``abort()`` of a fresh id (naming
    the commit's start timestamp as its own); each
    waits for its call's answer before the next. With ``arrival_interval_s``, also an open loop
    on a client of its own (same event loop): a new ``commit()`` call every that many seconds,
    whatever the calls before it wait for (at most ``MAX_ARRIVALS`` at once), as new work reaches
    a service; their answer times go to :attr:`arrivals_answered`. They call while the load runs
    (:meth:`run`, :meth:`pause`).

    Records every acknowledged decision (:attr:`decided`: id to the transaction, None for an
    abort(), and its decision), when each call got its decisions (:attr:`answered`, monotonic
    ns), every committed answer's time and deciding node (:attr:`answers`: monotonic ns, the
    commit timestamp's node id; a resubmitted id answered by the next leader keeps the node that
    decided it), the ids whose outcome is unknown (:attr:`unknown`) and every other error
    (:attr:`errors`). A caller goes on after an error."""

    def __init__(
        self,
        targets: list[str],
        commit_callers: int = 8,
        batch_callers: int = 2,
        batch: int = 20,
        timeout: float = CLIENT_TIMEOUT_S,
        unary_caller: bool = True,
        arrival_interval_s: float | None = None,
    ) -> None:
        self.targets = targets
        self.commit_callers = commit_callers
        self.batch_callers = batch_callers
        self.unary_caller = unary_caller
        self.arrival_interval_s = arrival_interval_s
        self.batch = batch
        self.timeout = timeout
        self.decided: dict[int, tuple[Transaction | None, Committed | Aborted]] = {}
        self.answered: list[int] = []
        self.arrivals_answered: list[int] = []
        self.answers: list[tuple[int, int]] = []
        self.unknown: list[int] = []
        self.errors: list[BaseException] = []
        #: Beside each error, the call that failed (``commit``, ``abort``, ...).
        self.error_calls: list[str] = []
        self._ids = itertools.count(1)
        self._arrivals_in_flight: set[asyncio.Task[None]] = set()
        self._stop = threading.Event()
        self._running = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)

    def start(self) -> Self:
        self._thread.start()
        return self

    def close(self) -> None:
        self._stop.set()
        self._running.set()
        if self._thread.ident is not None:  # started
            self._thread.join(self.timeout * 2)
            assert not self._thread.is_alive(), "the load did not stop"

    def run(self) -> None:
        self._running.set()

    def pause(self) -> None:
        """The callers stop after the call each has in flight."""
        self._running.clear()

    def errors_by_kind(self) -> dict[str, int]:
        """Failed calls by the error's class and the call (``"OracleTimeoutError (abort)"``),
        unknown outcomes (per transaction) included."""
        kinds = collections.Counter(
            f"{type(error).__name__} ({call})"
            for error, call in zip(self.errors, self.error_calls, strict=True)
        )
        if self.unknown:
            kinds[OracleOutcomeUnknownError.__name__] += len(self.unknown)
        return dict(sorted(kinds.items()))

    def largest_gap_ms(self, from_ns: int, arrivals: bool = False) -> float:
        """The longest time between two consecutive answered calls (``arrivals``: of the open
        loop) at or after ``from_ns`` (monotonic): from the last answer before a failover, the
        old leader's last answer to the next one's first."""
        answered = self.arrivals_answered if arrivals else self.answered
        times = answered[bisect.bisect_left(answered, from_ns) :]
        return max(((b - a) / 1e6 for a, b in itertools.pairwise(times)), default=0.0)

    # The records are appended in time order on the load's thread, so a reader (another thread,
    # while the load runs) finds a time by bisection instead of scanning them all: a scan of the
    # hundreds of thousands a benchmark collects holds the GIL, and the load's callers with it.

    def answers_after(self, after_ns: int) -> list[tuple[int, int]]:
        """The committed answers (see :attr:`answers`) after ``after_ns`` (monotonic ns)."""
        answers = self.answers
        return answers[bisect.bisect_right(answers, after_ns, key=lambda answer: answer[0]) :]

    def last_answered(self, at_or_before_ns: int, arrivals: bool = False) -> int | None:
        """The last answered call's time (``arrivals``: of the open loop) at or before
        ``at_or_before_ns``; None when there is none."""
        answered = self.arrivals_answered if arrivals else self.answered
        index = bisect.bisect_right(answered, at_or_before_ns)
        return answered[index - 1] if index else None

    def wait_for_more_than(self, count: int, timeout_s: float = 30.0) -> None:
        """Until more than ``count`` decisions were acknowledged (bounded); fails at once on an
        error other than an unknown outcome."""
        deadline = time.monotonic() + timeout_s
        while len(self.decided) <= count:
            assert not self.errors, self.errors[:3]
            assert time.monotonic() < deadline, f"stuck at {len(self.decided)} decisions"
            time.sleep(0.02)

    async def _run(self) -> None:
        async with (
            AsyncOracleClient(self.targets, timeout=self.timeout) as client,
            AsyncOracleClient(self.targets, timeout=self.timeout) as arrivals,
        ):
            callers = [(self._commits, client) for _ in range(self.commit_callers)]
            callers += [(self._batches, client) for _ in range(self.batch_callers)]
            if self.unary_caller:
                callers.append((self._unary, client))
            if self.arrival_interval_s is not None:
                callers.append((self._arrivals, arrivals))
            await asyncio.gather(*(self._calling(caller, on) for caller, on in callers))
            await asyncio.gather(*self._arrivals_in_flight)

    async def _calling(
        self, caller: Callable[[AsyncOracleClient], Awaitable[None]], client: AsyncOracleClient
    ) -> None:
        while True:
            while not self._running.is_set():
                await asyncio.sleep(0.01)
            if self._stop.is_set():
                return
            try:
                await caller(client)
            except Exception as err:
                self._failed(CALL_NAMES.get(caller.__name__, caller.__name__), err)
                await asyncio.sleep(0.01)

    def _failed(self, call: str, error: BaseException) -> None:
        self.errors.append(error)
        self.error_calls.append(call)

    def _record(self, txn_id: int, txn: Transaction | None, result: Committed | Aborted) -> None:
        now = time.monotonic_ns()
        self.answered.append(now)
        self.decided[txn_id] = (txn, result)
        if isinstance(result, Committed):
            self.answers.append((now, result.commit_ts.node))

    def _transaction(self, start: Timestamp) -> Transaction:
        txn_id = next(self._ids)
        return Transaction(txn_id, start, [b"r/%d" % txn_id], [b"w/%d" % txn_id])

    async def _commits(self, client: AsyncOracleClient) -> None:
        txn = self._transaction(await client.get_timestamp())
        try:
            self._record(txn.txn_id, txn, await client.commit(txn))
        except OracleOutcomeUnknownError:
            self.unknown.append(txn.txn_id)

    async def _arrivals(self, client: AsyncOracleClient) -> None:
        """The open loop: a new commit() call now, unless ``MAX_ARRIVALS`` are in flight; then
        the interval (the calls are awaited at the end of the run)."""
        assert self.arrival_interval_s is not None
        if len(self._arrivals_in_flight) < MAX_ARRIVALS:
            arrival = asyncio.create_task(self._guarded(self._arrival, client))
            self._arrivals_in_flight.add(arrival)
            arrival.add_done_callback(self._arrivals_in_flight.discard)
        await asyncio.sleep(self.arrival_interval_s)

    async def _guarded(
        self, caller: Callable[[AsyncOracleClient], Awaitable[None]], client: AsyncOracleClient
    ) -> None:
        try:
            await caller(client)
        except Exception as err:
            self._failed("commit (open loop)", err)

    async def _arrival(self, client: AsyncOracleClient) -> None:
        txn = self._transaction(await client.get_timestamp())
        try:
            result = await client.commit(txn)
        except OracleOutcomeUnknownError:
            self.unknown.append(txn.txn_id)
            return
        self.arrivals_answered.append(time.monotonic_ns())
        self.decided[txn.txn_id] = (txn, result)

    async def _batches(self, client: AsyncOracleClient) -> None:
        start = await client.get_timestamp()
        batch = [self._transaction(start) for _ in range(self.batch)]
        try:
            results = await client.commit_many(batch)
        except OracleOutcomeUnknownError:
            self.unknown.extend(txn.txn_id for txn in batch)
            return
        for txn, result in zip(batch, results, strict=True):
            if isinstance(result, OracleOutcomeUnknownError):
                self.unknown.append(txn.txn_id)
            elif isinstance(result, Committed | Aborted):
                self._record(txn.txn_id, txn, result)
            else:
                self._failed("commit_many", result)

    async def _unary(self, client: AsyncOracleClient) -> None:
        txn = self._transaction(await client.get_timestamp())
        aborted_id = next(self._ids)
        call = "commit_unary"
        try:
            self._record(txn.txn_id, txn, await client.commit_unary(txn))
            # The aborted id's transaction started with the commit's: a new leader holds the
            # abort only until no decision it still loads can be about that start.
            call = "abort"
            self._record(aborted_id, None, await client.abort(aborted_id, txn.start_ts))
        except OracleOutcomeUnknownError:
            self.unknown.extend((txn.txn_id, aborted_id))
        except Exception as err:
            self._failed(call, err)
            await asyncio.sleep(0.01)
