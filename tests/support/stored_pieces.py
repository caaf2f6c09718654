"""The decision pieces and checkpoints earlier releases wrote (``tests/data/decision_pieces_v*``,
committed as written): what a test needs to replay them and check their first decisions."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from hlc_oracle import Timestamp, Transaction

# An answer in expected.json's terms: the generator's own encoding, not a second copy of it.
from tests.data.decision_pieces_v1.generate import outcome_json as as_expected

DATA = Path(__file__).resolve().parents[1] / "data"
#: The committed fixtures of each earlier piece version.
FIXTURES = {1: DATA / "decision_pieces_v1", 2: DATA / "decision_pieces_v2"}
V1 = FIXTURES[1]
#: The fields of a decision in ``expected.json`` (the rest describe the request).
DECISION_FIELDS = (
    "outcome",
    "commit_ts",
    "reason",
    "kind",
    "key",
    "conflict_commit_ts",
    "winner_txn_id",
)


def stored_pieces(version: int = 1) -> list[tuple[int, bytes]]:
    paths = sorted(FIXTURES[version].glob("*.bin"))
    return [(int(path.stem.split("-")[1]), path.read_bytes()) for path in paths]


def expected() -> dict[str, Any]:
    # Both versions' fixtures hold the same scenario: the same expected.json.
    result: dict[str, Any] = json.loads((V1 / "expected.json").read_text())
    return result


def first_decisions() -> dict[int, dict[str, Any]]:
    """Each id's first decision (a later abort of a decided id only repeats it)."""
    first: dict[int, dict[str, Any]] = {}
    for entry in expected()["decisions"]:
        first.setdefault(entry["txn_id"], entry)
    return first


def decision(entry: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in entry.items() if key in DECISION_FIELDS}


def transaction(entry: dict[str, Any]) -> Transaction:
    return Transaction(
        entry["txn_id"],
        Timestamp.parse(entry["start_ts"]),
        [bytes.fromhex(key) for key in entry["read_set"]],
        [bytes.fromhex(key) for key in entry["write_set"]],
    )


__all__ = [
    "FIXTURES",
    "V1",
    "as_expected",
    "decision",
    "expected",
    "first_decisions",
    "stored_pieces",
    "transaction",
]
