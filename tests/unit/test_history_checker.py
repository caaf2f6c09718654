"""The fault suite's checker (tests/support/history.py) on small hand-made histories: a valid
one passes, and each property broken alone is caught under its own kind, and only that kind."""

from __future__ import annotations

import grpc
import pytest
from hlc_oracle import Aborted, Committed, Timestamp, TimestampRange
from hlc_oracle.client import (
    OracleNotServingError,
    OracleOutcomeUnknownError,
    OracleTimestampRegressionError,
)

from tests.support.history import History, Instant, Operation, check

#: True time of the hand-made histories: wall clock microseconds at monotonic 0.
T0_US = 1_800_000_000_000_000
MS = 1_000_000  # monotonic nanoseconds


def at(ms: int) -> Instant:
    """The instant ``ms`` milliseconds into the run (monotonic and wall clock agree)."""
    return Instant(ms * MS, T0_US + ms * 1000)


def ts(ms: float, logical: int = 0, node: int = 1) -> Timestamp:
    """A timestamp whose physical part is ``ms`` milliseconds into the run."""
    return Timestamp(T0_US + int(ms * 1000), logical, node)


def stamps(process: int, invoke: int, complete: int, first: Timestamp, count: int) -> Operation:
    return Operation.timestamps(process, at(invoke), at(complete), TimestampRange(first, count))


def commit(process: int, invoke: int, complete: int, decision: Committed | Aborted) -> Operation:
    return Operation.commit(process, at(invoke), at(complete), decision)


def valid_history() -> History:
    """Two processes, overlapping calls, a commit of each kind, everything read back."""
    history = History()
    for op in [
        stamps(1, 0, 2, ts(1), 4),
        stamps(2, 1, 3, ts(1, 4), 4),  # concurrent with the first: either order is fine
        commit(1, 3, 5, Committed(10, ts(4))),
        commit(2, 4, 6, Aborted(11, "requested")),
        stamps(2, 7, 8, ts(7, node=2), 1),  # another node, after a failover
    ]:
        history.add(op)
    history.read_back(10, Committed(10, ts(4)), at(100))
    history.read_back(11, Aborted(11, "requested"), at(100))
    return history


def test_a_valid_history_passes_with_its_figures() -> None:
    result = check(valid_history())
    result.assert_valid()
    assert result.figures["operations"] == 5
    assert result.figures["committed"] == 1 and result.figures["aborted"] == 1
    assert result.figures["largest_gap_ms"] == 2.0


def broken(*ops: Operation, reads: dict[int, Committed | Aborted | None] | None = None) -> set[str]:
    """The kinds of anomaly the checker finds in ``ops`` (and ``reads``)."""
    history = History()
    for op in ops:
        history.add(op)
    for txn_id, decision in (reads or {}).items():
        history.read_back(txn_id, decision, at(100))
    return check(history).kinds


@pytest.mark.parametrize(
    ("ops", "kind"),
    [
        # Two ranges share a timestamp.
        ((stamps(1, 0, 2, ts(1), 4), stamps(2, 0, 2, ts(1, 3), 4)), "duplicate"),
        # One range inside another, on another node: the same (physical, logical) twice.
        ((stamps(1, 0, 2, ts(1), 10), stamps(2, 0, 2, ts(1, 5, node=2), 1)), "duplicate"),
        # A commit timestamp inside a range handed out concurrently.
        ((stamps(1, 0, 2, ts(1), 4), commit(2, 0, 2, Committed(5, ts(1, 2)))), "duplicate"),
    ],
)
def test_a_timestamp_handed_out_twice_is_caught(ops: tuple[Operation, ...], kind: str) -> None:
    reads = {op.txn_id: op.decision for op in ops if op.txn_id is not None}
    assert broken(*ops, reads=reads) == {kind}


def test_a_later_call_with_a_smaller_timestamp_is_caught() -> None:
    # Process 1 returned at 2 ms; process 2 began at 3 ms and got a lower timestamp.
    assert broken(stamps(1, 0, 2, ts(2), 1), stamps(2, 3, 4, ts(1), 1)) == {"real-time"}
    # Equal (physical, logical) on two nodes is no order at all.
    assert broken(stamps(1, 0, 2, ts(2), 1), stamps(2, 3, 4, ts(2, node=2), 1)) == {
        "real-time",
        "duplicate",
    }
    # Across kinds: a commit acknowledged before a timestamp call began.
    assert broken(
        commit(1, 0, 2, Committed(7, ts(5))), stamps(2, 3, 4, ts(3), 1), reads={7: None}
    ) >= {"real-time"}


def test_overlapping_calls_may_come_back_in_either_order() -> None:
    assert broken(stamps(1, 0, 5, ts(2), 1), stamps(2, 1, 3, ts(1), 1)) == set()


def test_the_clients_own_regression_guard_firing_is_caught() -> None:
    error = OracleTimestampRegressionError(grpc.StatusCode.DATA_LOSS, "not above")
    assert broken(Operation.failed(1, "timestamps", at(0), at(1), error)) == {"regression"}


def test_a_timestamp_past_half_the_max_offset_ahead_is_caught() -> None:
    # 251 ms ahead of the host's clock at completion: past the 250 ms bound.
    assert broken(stamps(1, 0, 1, ts(252), 1)) == {"ahead"}
    # 250 ms exactly is within it; the limit follows max_offset.
    assert broken(stamps(1, 0, 1, ts(251), 1)) == set()
    history = History()
    history.add(stamps(1, 0, 1, ts(152), 1))
    assert check(history, max_offset_us=300_000).kinds == {"ahead"}
    # A 2 s ahead commit timestamp too.
    assert broken(commit(1, 0, 1, Committed(3, ts(2001))), reads={3: Committed(3, ts(2001))}) == {
        "ahead"
    }


def test_an_acknowledged_commit_that_does_not_read_back_is_caught() -> None:
    committed = commit(1, 0, 1, Committed(3, ts(0.5)))
    assert broken(committed, reads={3: None}) == {"lost"}
    assert broken(committed) == {"lost"}  # never read back at all
    assert broken(committed, reads={3: Committed(3, ts(0.7))}) == {"changed"}
    assert broken(committed, reads={3: Aborted(3, "requested")}) == {"changed"}


def test_an_acknowledged_abort_must_read_back_and_never_as_committed() -> None:
    aborted = commit(1, 0, 1, Aborted(4, "requested"))
    assert broken(aborted, reads={4: Committed(4, ts(0.5))}) == {"flipped"}
    assert broken(aborted, reads={4: None}) == {"lost"}


def test_a_transaction_decided_twice_differently_is_caught() -> None:
    first = commit(1, 0, 1, Committed(5, ts(0.5)))
    again = commit(1, 2, 3, Aborted(5, "requested"))
    assert broken(first, again, reads={5: Committed(5, ts(0.5))}) == {"decided-twice"}
    # The same decision twice (a resubmission) is fine, and counts its timestamp once.
    same = commit(1, 2, 3, Committed(5, ts(0.5)))
    assert broken(first, same, reads={5: Committed(5, ts(0.5))}) == set()


def test_an_indeterminate_commit_may_go_either_way_but_its_timestamp_is_checked() -> None:
    lost = OracleOutcomeUnknownError(grpc.StatusCode.UNAVAILABLE, "connection lost")
    unknown = Operation.failed(1, "commit", at(0), at(5), lost, txn_id=6)
    assert unknown.complete is None
    for decision in (None, Aborted(6, "requested"), Committed(6, ts(1))):
        assert broken(unknown, reads={6: decision}) == set()
    # Read back committed, it joins the timestamp checks: invoked at 0 ms, so a call that
    # returned before that must be lower ...
    assert broken(stamps(2, 0, 0, ts(2), 1), unknown, reads={6: Committed(6, ts(1))}) == set()
    before = stamps(2, -2, -1, ts(2), 1)
    assert broken(before, unknown, reads={6: Committed(6, ts(1))}) == {"real-time"}
    # ... and it must not share a timestamp with anything.
    beside = stamps(2, 1, 2, ts(1), 1)
    assert broken(beside, unknown, reads={6: Committed(6, ts(1))}) == {"duplicate"}


def test_a_refused_call_acknowledges_nothing() -> None:
    refused = OracleNotServingError(grpc.StatusCode.UNAVAILABLE, "not serving", "not-serving")
    op = Operation.failed(1, "commit", at(0), at(1), refused, txn_id=8)
    assert op.complete is not None and op.error_type == "OracleNotServingError"
    assert broken(op, reads={8: None}) == set()
    result = check(valid_history())
    assert result.figures["errors"] == {}
