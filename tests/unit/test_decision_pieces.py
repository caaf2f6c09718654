"""Decision pieces and checkpoints as etcd holds them, read by this release: the pieces and
checkpoints of ``tests/data/decision_pieces_v1`` (written by the release before the compact
format) and ``tests/data/decision_pieces_v2`` (the same scenario, written by the release before
the pieces recorded their clock reading; see each ``generate.py``) replay into the same
decisions, so a rolling upgrade keeps every decision, its fingerprint and its conflict."""

from __future__ import annotations

from typing import Any

import pytest
from hlc_oracle import (
    Clock,
    CommitEngine,
    Committed,
    Timestamp,
    Transaction,
    TransactionMismatchError,
)
from hlc_oracle.cluster.decisions import Checkpoint, DecisionDecodeError

from tests.support.stored_pieces import (
    FIXTURES,
    V1,
    as_expected,
    decision,
    expected,
    first_decisions,
    stored_pieces,
    transaction,
)


def answers(engine: CommitEngine, requests: list[Transaction | int]) -> list[Any]:
    """Requests of ids already decided: answered at once, nothing handed out."""
    _, pieces, released = engine.decide(requests)
    assert pieces == []
    return [answer for _, batch in released for answer in batch]


@pytest.fixture(params=sorted(FIXTURES), ids=lambda version: f"v{version}")
def replayed(request: pytest.FixtureRequest) -> CommitEngine:
    engine = CommitEngine(None, Clock(node=9), durability="external")
    for seq, data in stored_pieces(request.param):
        engine.replay_piece(seq, data)
    return engine


@pytest.mark.parametrize("version", sorted(FIXTURES))
def test_the_fixtures_hold_every_kind_of_decision(version: int) -> None:
    kinds = {
        entry.get("kind", entry.get("reason", entry["outcome"]))
        for entry in first_decisions().values()
    }
    assert kinds == {"committed", "write_write", "read_write", "too_old", "requested"}
    assert len(stored_pieces(version)) >= 5
    assert all(data[0] == version for _, data in stored_pieces(version))
    assert (FIXTURES[version] / "expected.json").read_text() == (V1 / "expected.json").read_text()


def test_stored_pieces_replay_into_their_first_decisions(replayed: CommitEngine) -> None:
    for txn_id, entry in first_decisions().items():
        assert as_expected(replayed.status(txn_id)) == decision(entry), txn_id
    # The clock runs above every replayed commit.
    assert replayed.clock.last() > Timestamp.parse(expected()["clock_last"])


def test_stored_resubmissions_get_their_first_decision_and_other_contents_are_refused(
    replayed: CommitEngine,
) -> None:
    decided = [entry for entry in first_decisions().values() if "start_ts" in entry]
    got = answers(replayed, [transaction(entry) for entry in decided])
    for entry, answer in zip(decided, got, strict=True):
        assert as_expected(answer) == decision(entry)
    # The fingerprint survived: the same id with other contents is refused.
    changed = transaction(decided[0])
    other = Transaction(changed.txn_id, changed.start_ts, [], [b"another key"])
    (refused,) = answers(replayed, [other])
    assert isinstance(refused, TransactionMismatchError)
    # Aborts by id are kept as such.
    by_id = [entry for entry in first_decisions().values() if entry.get("abort_by_id")]
    got = answers(replayed, [entry["txn_id"] for entry in by_id])
    assert [as_expected(answer) for answer in got] == [decision(entry) for entry in by_id]


@pytest.mark.parametrize("version", sorted(FIXTURES))
def test_stored_checkpoints_decode(version: int) -> None:
    stored = FIXTURES[version]
    old = Checkpoint.decode((stored / "checkpoint-without-forgotten-through.json").read_bytes())
    assert (old.epoch, old.seq, old.forgotten_through) == (12, 3, None)
    new = Checkpoint.decode((stored / "checkpoint.json").read_bytes())
    assert (new.epoch, new.seq) == (12, 3)
    assert new.forgotten_through == Timestamp.parse(expected()["forgotten_through"])
    with pytest.raises(DecisionDecodeError, match="checkpoint"):
        Checkpoint.decode(b'{"epoch": 1}')


def test_this_release_writes_version_3_pieces_that_replay() -> None:
    writer = CommitEngine(None, Clock(node=3), durability="external")
    start = writer.clock.now()
    requests: list[Transaction | int] = [
        Transaction(1, start, [b"a"], [b"b", b"c"]),
        Transaction(2, start, [], [b"b"]),  # loses to 1 in the same batch
        77,  # abort by id
    ]
    _, pieces, _ = writer.decide(requests)
    assert [data[0] for _, data in pieces] == [3]
    first = [answer for seq, _ in pieces for _, batch in writer.confirm(seq) for answer in batch]
    reader = CommitEngine(None, Clock(node=4), durability="external")
    for seq, data in pieces:
        assert reader.replay_piece(seq, data) == (1, 2)
    assert [reader.status(txn_id) for txn_id in (1, 2, 77)] == first


def test_pieces_replay_a_page_at_a_time_up_to_the_first_that_does_not_decode() -> None:
    writer = CommitEngine(None, Clock(node=3), durability="external")
    pieces = []
    for first in (1, 3, 5):
        start = writer.clock.now()
        txns = [Transaction(txn_id, start, [], [b"k%d" % txn_id]) for txn_id in (first, first + 1)]
        ticket, written, _ = writer.decide(txns)
        writer.confirm(ticket)
        pieces.extend(written)
    reader = CommitEngine(None, Clock(node=4), durability="external")
    assert reader.replay_pieces(pieces) == (6, 0, None)
    assert all(isinstance(reader.status(txn_id), Committed) for txn_id in range(1, 7))

    # A piece that does not decode: the ones before it replay, it and those after it do not.
    broken = [pieces[0], (pieces[1][0], b"\x09not a piece"), pieces[2]]
    reader = CommitEngine(None, Clock(node=4), durability="external")
    commits, aborts, bad = reader.replay_pieces(broken)
    assert (commits, aborts) == (2, 0)
    assert bad is not None and bad[0] == 1 and "version" in bad[1], bad
    assert reader.status(1) is not None and reader.status(5) is None
