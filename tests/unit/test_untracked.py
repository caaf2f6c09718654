"""The classes that hold no Python object are allocated untracked by the cyclic collector, on
every construction path: Python calling the class, a class method, pickling, and objects the
extension makes (clock readings, getters, decoded transactions, conflicts, answers)."""

import copy
import gc
import pickle
from collections.abc import Callable
from pathlib import Path

import pytest
from hlc_oracle import (
    Aborted,
    BatchDecision,
    Clock,
    CommitLog,
    Committed,
    Conflict,
    ConflictDetector,
    ManualClock,
    SystemClock,
    Timestamp,
    TimestampRange,
    Transaction,
    VectorClock,
)
from hlc_oracle._core import StreamResult, decode_commit_request, encode_commit_request

TS = Timestamp(1_700_000_000_000_000, 3, 7)


def txn(txn_id: int = 1, start: Timestamp = TS) -> Transaction:
    return Transaction(txn_id, start, [b"r"], [b"w"])


def clock() -> Clock:
    return Clock(node=1, physical_clock=ManualClock(1_700_000_000_000_000))


def conflict() -> Conflict:
    aborted = Aborted.from_conflict(2, "write_write", key=b"k", commit_ts=TS)
    assert aborted.conflict is not None
    return aborted.conflict


CONSTRUCTIONS: dict[str, Callable[[], object]] = {
    "Timestamp()": lambda: Timestamp(1, 2, 3),
    "Timestamp.from_int": lambda: Timestamp.from_int(12345, node=2),
    "Timestamp.from_bytes": lambda: Timestamp.from_bytes(TS.to_bytes()),
    "Timestamp unpickled": lambda: pickle.loads(pickle.dumps(TS)),
    "Clock.now": lambda: clock().now(),
    "Transaction.start_ts": lambda: txn().start_ts,
    "TimestampRange()": lambda: TimestampRange(TS, 4),
    "Clock.reserve": lambda: clock().reserve(4),
    "TimestampRange[1]": lambda: TimestampRange(TS, 4)[1],
    "iter(TimestampRange)": lambda: iter(TimestampRange(TS, 4)),
    "next(iter(TimestampRange))": lambda: next(iter(TimestampRange(TS, 4))),
    "Transaction()": txn,
    "decode_commit_request": lambda: decode_commit_request(encode_commit_request([txn()]))[0],
    "VectorClock()": lambda: VectorClock({1: 2}),
    "VectorClock.copy": lambda: copy.deepcopy(VectorClock({1: 2})),
    "Aborted.conflict": conflict,
    "Committed()": lambda: Committed(1, TS),
    "Committed.commit_ts": lambda: Committed(1, TS).commit_ts,
    "Aborted()": lambda: Aborted(1, "requested"),
    "Aborted.from_conflict": lambda: Aborted.from_conflict(1, "too_old", commit_ts=TS),
    "StreamResult()": lambda: StreamResult(b"", 1, 0, 0),
    "ConflictDetector()": ConflictDetector,
    "SystemClock()": SystemClock,
    "ManualClock()": ManualClock,
}


@pytest.mark.parametrize("make", CONSTRUCTIONS.values(), ids=CONSTRUCTIONS.keys())
def test_is_not_tracked(make: Callable[[], object]) -> None:
    assert not gc.is_tracked(make())


def test_commit_log_is_not_tracked(tmp_path: Path) -> None:
    log, recovery = CommitLog.open(tmp_path / "log")
    with log:
        assert not gc.is_tracked(log)
        assert gc.is_tracked(recovery)  # it holds the records it read


def test_classes_holding_python_objects_stay_tracked() -> None:
    decision = ConflictDetector().check_batch([txn(1), txn(2)])
    assert isinstance(decision, BatchDecision) and gc.is_tracked(decision)
    assert gc.is_tracked(clock())


def test_many_live_transactions_add_nothing_for_the_collector_to_traverse() -> None:
    gc.collect()
    before = len(gc.get_objects())
    # Built in a list comprehension: the list itself is the one new tracked object.
    txns = [Transaction(i, Timestamp(1, i % 100, 0), [b"r"], [b"w"]) for i in range(10_000)]
    assert len(gc.get_objects()) - before < 100
    assert len(txns) == 10_000 and not any(gc.is_tracked(t) for t in txns)


def test_making_many_does_not_count_toward_a_collection() -> None:
    """An untracked instance is not counted toward the young generation's threshold either: a
    burst of answers or timestamps triggers no collection of everything else young."""
    gc.disable()
    try:
        gc.collect()
        before = gc.get_count()[0]
        stamps = [Timestamp(1, i % 100, 0) for i in range(10_000)]
        answers = [Committed(i, stamp) for i, stamp in enumerate(stamps)]
        assert gc.get_count()[0] - before < 10
        del stamps, answers  # freeing them uncounts nothing below zero
        assert gc.get_count()[0] >= 0
    finally:
        gc.enable()
