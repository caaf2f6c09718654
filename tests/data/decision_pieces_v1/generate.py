"""Writes the version-1 decision pieces and checkpoints in this directory, with the encoder of
the release that wrote them (run once, at commit b9bd321, then committed as test data: a later
release must read them as they are, for a rolling upgrade). Run again only to compare:
``.venv/bin/python tests/data/decision_pieces_v1/generate.py OUT_DIR``.

Every kind of decision a piece holds: commits (one with many written keys), aborts by a
conflict (write-write with a recorded commit, with an earlier member of the batch, read-write
under serializable isolation, too old), aborts by id, and a batch split into several pieces.
``expected.json`` names each transaction (so a test can resubmit it) and its first decision."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from hlc_oracle import Aborted, Clock, CommitEngine, Committed, ManualClock, Timestamp, Transaction

START_US = 1_765_000_000_000_000  # fixed, so the files do not change from run to run
NODE = 7


def transaction_json(txn: Transaction) -> dict[str, Any]:
    return {
        "txn_id": txn.txn_id,
        "start_ts": str(txn.start_ts),
        "read_set": [key.hex() for key in txn.read_set],
        "write_set": [key.hex() for key in txn.write_set],
    }


def outcome_json(outcome: object) -> dict[str, Any]:
    if isinstance(outcome, Committed):
        return {"outcome": "committed", "commit_ts": str(outcome.commit_ts)}
    assert isinstance(outcome, Aborted), outcome
    conflict = outcome.conflict
    if conflict is None:
        return {"outcome": "aborted", "reason": outcome.reason}
    return {
        "outcome": "aborted",
        "reason": outcome.reason,
        "kind": str(conflict.kind.value),
        "key": None if conflict.key is None else conflict.key.hex(),
        "conflict_commit_ts": None if conflict.commit_ts is None else str(conflict.commit_ts),
        "winner_txn_id": conflict.winner_txn_id,
    }


def main(out: Path) -> None:
    physical = ManualClock(START_US)
    pieces: list[tuple[int, bytes]] = []
    expected: list[dict[str, Any]] = []

    def run(engine: CommitEngine, requests: list[Transaction | int]) -> None:
        _, handed, released = engine.decide(requests)
        pieces.extend(handed)
        answers: list[Any] = []
        for seq, _ in handed:
            for _, batch in engine.confirm(seq):
                answers.extend(batch)
        for _, batch in released:
            answers.extend(batch)
        for request, answer in zip(requests, answers, strict=True):
            entry = (
                transaction_json(request)
                if isinstance(request, Transaction)
                else {"txn_id": request, "abort_by_id": True}
            )
            entry.update(outcome_json(answer))
            expected.append(entry)
        physical.advance(1_000)

    clock = Clock(node=NODE, max_offset_us=500_000, physical_clock=physical)
    engine = CommitEngine(None, clock, durability="external", max_batch_bytes=256)
    t0 = clock.now()
    many = [b"wide/%03d" % k for k in range(40)]
    run(
        engine,
        [
            Transaction(101, t0, [b"r/1"], [b"w/1", b"w/2"]),
            Transaction(102, t0, [], [b"w/3"]),
            Transaction(103, t0, [b"r/2", b"r/3"], many),  # alone past the 256-byte cap
        ],
    )
    run(
        engine,
        [
            Transaction(201, t0, [], [b"w/1"]),  # write-write with 101's commit
            Transaction(202, clock.now(), [], [b"x/1"]),
            Transaction(203, clock.now(), [], [b"x/1", b"x/2"]),  # loses to 202, same batch
            2_000_000_000_000_000_001,  # abort by id
        ],
    )
    engine.raise_low_watermark(clock.now())
    run(engine, [Transaction(301, t0, [], [b"y/1"])])  # too old
    run(engine, [102, 2**64 - 1])  # abort of a decided id: its first decision; a large id
    serializable = CommitEngine(
        None,
        clock,
        durability="external",
        isolation="serializable",
        first_batch_seq=engine.next_batch_seq,
    )
    t1 = clock.now()
    run(serializable, [Transaction(401, t1, [], [b"z/1"])])
    run(serializable, [Transaction(402, t1, [b"z/1"], [b"z/2"])])  # read-write with 401

    out.mkdir(parents=True, exist_ok=True)
    for seq, data in pieces:
        (out / f"piece-{seq:04d}.bin").write_bytes(data)
    through = clock.last()
    checkpoints = {
        # Before ``forgotten_through`` existed, and since.
        "checkpoint-without-forgotten-through.json": {"epoch": 12, "seq": 3},
        "checkpoint.json": {
            "epoch": 12,
            "seq": 3,
            "forgotten_through": [through.physical, through.logical, through.node],
        },
    }
    for name, value in checkpoints.items():
        (out / name).write_bytes(json.dumps(value).encode())
    (out / "expected.json").write_text(
        json.dumps(
            {
                "node": NODE,
                "clock_last": str(clock.last()),
                "forgotten_through": str(Timestamp(through.physical, through.logical, NODE)),
                "decisions": expected,
            },
            indent=1,
        )
        + "\n"
    )


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).parent)
