"""The records of ``tests/support/client_commit_load.py``'s load, read while it runs: the lookups
by time that the failover benchmarks use (by bisection: a scan of every record holds the GIL, and
the load's callers with it)."""

from __future__ import annotations

from tests.support.client_commit_load import ClientCommitLoad


def load_with(answered: list[int], answers: list[tuple[int, int]]) -> ClientCommitLoad:
    load = ClientCommitLoad(["127.0.0.1:1"])  # never started: its records are filled here
    load.answered.extend(answered)
    load.answers.extend(answers)
    return load


def test_answers_after_a_time_are_those_strictly_later() -> None:
    load = load_with([], [(10, 1), (20, 1), (20, 2), (30, 3)])
    assert load.answers_after(20) == [(30, 3)]
    assert load.answers_after(19) == [(20, 1), (20, 2), (30, 3)]
    assert load.answers_after(0) == load.answers
    assert load.answers_after(30) == []


def test_last_answered_at_or_before_a_time() -> None:
    load = load_with([10, 20, 20, 30], [])
    assert load.last_answered(25) == 20
    assert load.last_answered(30) == 30
    assert load.last_answered(9) is None
    load.arrivals_answered.extend([15, 40])
    assert load.last_answered(39, arrivals=True) == 15


def test_largest_gap_counts_from_the_given_time() -> None:
    ms = 1_000_000
    load = load_with([0, 500 * ms, 510 * ms, 900 * ms, 905 * ms], [])
    assert load.largest_gap_ms(0) == 500.0
    assert load.largest_gap_ms(500 * ms) == 390.0
    assert load.largest_gap_ms(901 * ms) == 0.0


def test_failed_calls_are_counted_by_error_and_call() -> None:
    load = load_with([], [])
    load._failed("abort", TimeoutError())
    load._failed("abort", TimeoutError())
    load._failed("commit", ValueError())
    load.unknown.extend([7, 8])
    assert load.errors_by_kind() == {
        "OracleOutcomeUnknownError": 2,
        "TimeoutError (abort)": 2,
        "ValueError (commit)": 1,
    }
