"""A recorded history of client operations against the cluster, and the one checker every fault
scenario runs over it (after Jepsen: record what the clients saw, then judge the whole history).

    history = History()
    started = Instant.now()
    got = await client.get_timestamps(4)
    history.add(Operation.timestamps(process=1, invoke=started, complete=Instant.now(), got=got))
    ...                                     # commits: Operation.commit(...), errors: .failed(...)
    history.read_back(txn_id, await client.transaction_status(txn_id))   # after the run
    check(history).assert_valid()           # or .anomalies, .figures

An operation has an invoke instant (monotonic and wall clock, taken before the call) and, when
it returned, a completion instant (taken after): the operation took effect somewhere in between,
so recording late only widens the interval and can never make a correct history look wrong. An
operation that raised an error whose outcome is unknown (a commit whose connection was lost, a
timeout) is *indeterminate*: it may take effect at any time after its invoke, or never.

The properties (:func:`check`; each broken one is an :class:`Anomaly` of that ``kind``):

- ``duplicate``: no timestamp handed out twice. Timestamp ranges and commit timestamps come from
  the same clock; two of them overlapping in (physical, logical) is a breach even on different
  nodes, since the 64-bit form (``Timestamp.to_int``, a database key) carries no node id.
- ``real-time``: an operation that completed before another was invoked has the smaller
  timestamps (all of its below all of the other's). The client's own guard against a node
  answering at or below what it returned before raises :class:`OracleTimestampRegressionError`;
  such an error in the history is the same breach, seen by the client (``regression``).
- ``ahead``: no timestamp more than ``max_offset/2`` ahead of true time (the test host's clock):
  its physical part minus the wall clock at the operation's completion (the latest moment it can
  have been made) must not pass the bound, else the breach is certain.
- ``lost``, ``changed``, ``flipped``: every acknowledged decision (committed, or aborted) reads
  back after the run the same (``lost``: unknown; ``changed``: otherwise different), and no
  aborted one reads back committed (``flipped``, the worst kind of change).
- ``decided-twice``: no transaction id acknowledged with two different decisions.

An indeterminate commit that reads back committed joins the timestamp checks with its commit
timestamp: invoked when it was first sent, never completed (nothing is required to follow it in
real time), made before the read (the ``ahead`` check uses the read's instant).
"""

from __future__ import annotations

import itertools
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Literal

from hlc_oracle import Aborted, Committed, Timestamp, TimestampRange
from hlc_oracle.client import OracleOutcomeUnknownError, OracleTimeoutError

#: The cluster's default ``clock.max_offset_us``; the ``ahead`` bound is half of it.
DEFAULT_MAX_OFFSET_US = 500_000
#: Anomalies of one kind quoted in an assertion message (the count says how many there were).
QUOTED = 5

Kind = Literal["timestamps", "commit"]
Decision = Committed | Aborted


@dataclass(frozen=True, order=True)
class Instant:
    """A moment on the test host: monotonic nanoseconds (for order) and wall-clock microseconds
    (true time, for the ``ahead`` bound)."""

    monotonic_ns: int
    wall_us: int

    @classmethod
    def now(cls) -> Instant:
        return cls(time.monotonic_ns(), time.time_ns() // 1000)


@dataclass(frozen=True)
class Operation:
    """One call of one client task (``process``).

    ``first``/``last``: the timestamps it got (a range, or a committed transaction's commit
    timestamp twice); ``decision``: a commit's acknowledged decision; ``error``: what a failed
    call raised (``"TypeName: message"``); ``complete`` is ``None`` for an indeterminate one.
    """

    process: int
    kind: Kind
    invoke: Instant
    complete: Instant | None
    first: Timestamp | None = None
    last: Timestamp | None = None
    txn_id: int | None = None
    decision: Decision | None = None
    error: str | None = None

    @classmethod
    def timestamps(
        cls, process: int, invoke: Instant, complete: Instant, got: TimestampRange
    ) -> Operation:
        return cls(process, "timestamps", invoke, complete, got.first, got.last)

    @classmethod
    def commit(
        cls, process: int, invoke: Instant, complete: Instant, decision: Decision
    ) -> Operation:
        ts = decision.commit_ts if isinstance(decision, Committed) else None
        return cls(process, "commit", invoke, complete, ts, ts, decision.txn_id, decision)

    @classmethod
    def failed(
        cls,
        process: int,
        kind: Kind,
        invoke: Instant,
        complete: Instant,
        error: BaseException,
        txn_id: int | None = None,
    ) -> Operation:
        """A call that raised ``error``. A commit whose outcome is unknown (its answer lost, or
        timed out) is indeterminate: no completion. Any other failed commit is treated the same
        way by the checker (nothing acknowledged), but keeps its completion for the figures."""
        unknown = kind == "commit" and isinstance(
            error, OracleOutcomeUnknownError | OracleTimeoutError
        )
        return cls(
            process,
            kind,
            invoke,
            None if unknown else complete,
            txn_id=txn_id,
            error=f"{type(error).__name__}: {error}",
        )

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def error_type(self) -> str | None:
        return None if self.error is None else self.error.split(":", 1)[0]


@dataclass(frozen=True)
class ReadBack:
    """A transaction's status read after the run: its decision, or ``None`` (unknown)."""

    decision: Decision | None
    at: Instant


@dataclass(frozen=True)
class Anomaly:
    kind: str
    message: str


@dataclass
class History:
    operations: list[Operation] = field(default_factory=list)
    reads: dict[int, ReadBack] = field(default_factory=dict)

    def add(self, operation: Operation) -> None:
        self.operations.append(operation)  # list.append is atomic: safe from several threads

    def read_back(self, txn_id: int, decision: Decision | None, at: Instant | None = None) -> None:
        self.reads[txn_id] = ReadBack(decision, at or Instant.now())

    def commit_ids(self) -> set[int]:
        """Every transaction id a commit operation named: what :meth:`read_back` must cover."""
        return {op.txn_id for op in self.operations if op.kind == "commit" and op.txn_id}

    def successes(self) -> int:
        return sum(op.ok for op in self.operations)

    def largest_gap_ms(self, after: Instant | None = None, until: Instant | None = None) -> float:
        """The longest time between two consecutive successful completions between ``after``
        and ``until`` (monotonic): around a fault, from the last success before to the first
        after."""
        since = 0 if after is None else after.monotonic_ns
        end = None if until is None else until.monotonic_ns
        ends = sorted(
            op.complete.monotonic_ns
            for op in list(self.operations)
            if op.ok
            and op.complete is not None
            and op.complete.monotonic_ns >= since
            and (end is None or op.complete.monotonic_ns <= end)
        )
        return max(((b - a) / 1e6 for a, b in itertools.pairwise(ends)), default=0.0)


@dataclass(frozen=True)
class _Stamped:
    """An operation's timestamps as the checker orders them: 64-bit (physical, logical)."""

    low: int
    high: int
    invoke_ns: int
    complete_ns: int | None  # None: never completed (an indeterminate commit)
    made_before_us: int  # wall clock by which it was certainly made
    high_physical: int
    what: str


@dataclass
class CheckResult:
    anomalies: list[Anomaly]
    figures: dict[str, object]

    def of_kind(self, kind: str) -> list[Anomaly]:
        return [anomaly for anomaly in self.anomalies if anomaly.kind == kind]

    @property
    def kinds(self) -> set[str]:
        return {anomaly.kind for anomaly in self.anomalies}

    def summary(self) -> str:
        counts = Counter(anomaly.kind for anomaly in self.anomalies)
        lines = [f"{count} {kind}" for kind, count in sorted(counts.items())]
        for kind in sorted(counts):
            lines += [f"  {a.message}" for a in self.of_kind(kind)[:QUOTED]]
        return "\n".join(lines) + f"\nfigures: {self.figures}"

    def assert_valid(self) -> None:
        assert not self.anomalies, self.summary()


def check(
    history: History,
    max_offset_us: int = DEFAULT_MAX_OFFSET_US,
    require_read_back: bool = True,
) -> CheckResult:
    """Every property of the module docstring over ``history``; ``require_read_back``: a
    decision acknowledged but never read back counts as ``lost`` (the run forgot to read)."""
    anomalies: list[Anomaly] = []
    stamped = list(_stamped(history))
    anomalies += _duplicates(stamped)
    anomalies += _real_time(stamped)
    anomalies += _regressions(history.operations)
    anomalies += _ahead(stamped, max_offset_us // 2)
    anomalies += _decisions(history, require_read_back)
    return CheckResult(anomalies, _figures(history, stamped))


def _describe(op: Operation) -> str:
    got = f"{op.first}..{op.last}" if op.first is not None else (op.error or "nothing")
    name = f"txn {op.txn_id} " if op.txn_id is not None else ""
    return f"process {op.process} {op.kind} {name}-> {got}"


def _stamped(history: History) -> Iterable[_Stamped]:
    first_invoke: dict[int, int] = {}
    for op in history.operations:
        if op.txn_id is not None:
            previous = first_invoke.get(op.txn_id, op.invoke.monotonic_ns)
            first_invoke[op.txn_id] = min(previous, op.invoke.monotonic_ns)
    committed_ids: set[int] = set()
    for op in history.operations:
        if op.first is None or op.last is None or op.complete is None:
            continue
        invoke_ns = op.invoke.monotonic_ns
        if op.txn_id is not None:
            if op.txn_id in committed_ids:
                continue  # a resubmission answered with the first decision: counted once
            committed_ids.add(op.txn_id)
            invoke_ns = first_invoke[op.txn_id]
        yield _Stamped(
            op.first.to_int(),
            op.last.to_int(),
            invoke_ns,
            op.complete.monotonic_ns,
            op.complete.wall_us,
            op.last.physical,
            _describe(op),
        )
    # Indeterminate commits that read back committed: their commit timestamps exist too.
    for txn_id, read in history.reads.items():
        if isinstance(read.decision, Committed) and txn_id not in committed_ids:
            committed_ids.add(txn_id)
            ts = read.decision.commit_ts
            yield _Stamped(
                ts.to_int(),
                ts.to_int(),
                first_invoke.get(txn_id, read.at.monotonic_ns),
                None,
                read.at.wall_us,
                ts.physical,
                f"txn {txn_id} (indeterminate) read back committed at {ts}",
            )


def _duplicates(stamped: list[_Stamped]) -> list[Anomaly]:
    found = []
    widest: _Stamped | None = None  # of those before, the one reaching highest
    for item in sorted(stamped, key=lambda s: (s.low, s.high)):
        if widest is not None and widest.high >= item.low:
            found.append(Anomaly("duplicate", f"{widest.what} overlaps {item.what}"))
        if widest is None or item.high > widest.high:
            widest = item
    return found


def _real_time(stamped: list[_Stamped]) -> list[Anomaly]:
    found = []
    by_invoke = sorted(stamped, key=lambda s: s.invoke_ns)
    by_complete = sorted(
        (s for s in stamped if s.complete_ns is not None), key=lambda s: s.complete_ns or 0
    )
    latest: _Stamped | None = None  # of those completed before, the one with the highest stamp
    index = 0
    for item in by_invoke:
        while index < len(by_complete) and (by_complete[index].complete_ns or 0) < item.invoke_ns:
            if latest is None or by_complete[index].high > latest.high:
                latest = by_complete[index]
            index += 1
        if latest is not None and latest.high >= item.low:
            found.append(Anomaly("real-time", f"{latest.what} returned before {item.what} began"))
    return found


def _regressions(operations: list[Operation]) -> list[Anomaly]:
    return [
        Anomaly("regression", _describe(op))
        for op in operations
        if op.error_type == "OracleTimestampRegressionError"
    ]


def _ahead(stamped: list[_Stamped], bound_us: int) -> list[Anomaly]:
    return [
        Anomaly(
            "ahead",
            f"{item.what}: {item.high_physical - item.made_before_us} us ahead of the test "
            f"host's clock at completion (bound {bound_us} us)",
        )
        for item in stamped
        if item.high_physical - item.made_before_us > bound_us
    ]


def _decisions(history: History, require_read_back: bool) -> list[Anomaly]:
    found = []
    acknowledged: dict[int, Decision] = {}
    for op in history.operations:
        if op.decision is None or op.txn_id is None:
            continue
        first = acknowledged.setdefault(op.txn_id, op.decision)
        if first != op.decision:
            found.append(
                Anomaly("decided-twice", f"txn {op.txn_id}: {first} and then {op.decision}")
            )
    for txn_id, decision in acknowledged.items():
        read = history.reads.get(txn_id)
        if read is None:
            if require_read_back:
                found.append(Anomaly("lost", f"txn {txn_id}: {decision} was never read back"))
            continue
        if read.decision is None:
            found.append(Anomaly("lost", f"txn {txn_id}: {decision} reads back unknown"))
        elif isinstance(decision, Aborted) and isinstance(read.decision, Committed):
            found.append(Anomaly("flipped", f"txn {txn_id}: {decision} reads back {read.decision}"))
        elif read.decision != decision:
            found.append(Anomaly("changed", f"txn {txn_id}: {decision} reads back {read.decision}"))
    return found


def _figures(history: History, stamped: list[_Stamped]) -> dict[str, object]:
    ops = history.operations
    errors = Counter(f"{op.kind} {op.error_type}" for op in ops if op.error_type is not None)
    decisions = Counter(type(op.decision).__name__.lower() for op in ops if op.decision is not None)
    lead = max((s.high_physical - s.made_before_us for s in stamped), default=None)
    return {
        "operations": len(ops),
        "ok": sum(op.ok for op in ops),
        "timestamps": sum(op.kind == "timestamps" and op.ok for op in ops),
        **{name: count for name, count in sorted(decisions.items())},
        "indeterminate": sum(op.complete is None for op in ops),
        "errors": dict(sorted(errors.items())),  # by the call's kind and the error's type
        "max_lead_us": lead,
        "largest_gap_ms": round(history.largest_gap_ms(), 1),
    }
