"""A pure-Python conflict detector: the reference for property tests and the benchmark baseline.

Same rules as ``rust/src/conflict.rs``, on plain values: keys are ``bytes``, timestamps are any
totally ordered values (the tests use ``(packed, node)`` tuples, which order like ``Timestamp``).
Outcomes are ``None`` (accepted) or ``(kind, key, lost_to)`` with ``kind`` one of
``"write-write"``, ``"read-write"``, ``"too-old"`` and ``lost_to`` one of ``("commit", ts)``,
``("batch", txn_id)``, ``("watermark", ts)``.

Memory bound: which keys a bounded detector forgets is its own choice (the Rust table forgets by
bucket); the rule is that forgetting a key raises the low watermark to the key's last commit. The
model remembers everything until told to :meth:`ModelDetector.forget` a key, and applies that rule,
so a test can replay the real detector's choices and compare every decision exactly.
"""

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from tests.support.models.vclock import CONCURRENT, DictVectorClock

Outcome = tuple[str, bytes | None, tuple[str, Any]] | None


@dataclass(frozen=True)
class ModelTransaction:
    txn_id: int
    start: Any
    reads: tuple[bytes, ...] = ()
    writes: tuple[bytes, ...] = ()
    clock: DictVectorClock | None = field(default=None, compare=False)


def _check_unique(txns: Sequence[ModelTransaction]) -> None:
    ids = [txn.txn_id for txn in txns]
    if len(set(ids)) != len(ids):
        raise ValueError("duplicate transaction id in one batch")


class ModelDetector:
    def __init__(self, isolation: str = "snapshot") -> None:
        self.serializable = isolation == "serializable"
        self.last_commit: dict[bytes, Any] = {}
        self.low_watermark: Any = None

    def _first_conflict(self, txn: ModelTransaction, batch_writes: dict[bytes, int]) -> Outcome:
        if self.low_watermark is not None and txn.start <= self.low_watermark:
            return ("too-old", None, ("watermark", self.low_watermark))
        sets = [("write-write", txn.writes)]
        if self.serializable:
            sets.append(("read-write", txn.reads))
        for kind, keys in sets:
            for key in keys:
                commit = self.last_commit.get(key)
                if commit is not None and commit > txn.start:
                    return (kind, key, ("commit", commit))
                if key in batch_writes:
                    return (kind, key, ("batch", batch_writes[key]))
        return None

    def check(self, txn: ModelTransaction) -> Outcome:
        return self._first_conflict(txn, {})

    def check_batch(self, txns: Sequence[ModelTransaction]) -> list[Outcome]:
        _check_unique(txns)
        batch_writes: dict[bytes, int] = {}
        outcomes: list[Outcome] = []
        for txn in txns:
            outcome = self._first_conflict(txn, batch_writes)
            if outcome is None:
                for key in txn.writes:
                    batch_writes[key] = txn.txn_id
            outcomes.append(outcome)
        return outcomes

    def record(self, txn: ModelTransaction, commit: Any) -> None:
        if commit <= txn.start:
            raise ValueError("commit_ts must be after start_ts")
        for key in txn.writes:
            last = self.last_commit.get(key)
            if last is None or last < commit:
                self.last_commit[key] = commit

    def forget(self, key: bytes) -> None:
        """Forgets ``key`` (a bounded detector's choice) and raises the low watermark to its last
        commit: a transaction that could conflict with it started at or below that commit."""
        commit = self.last_commit.pop(key)
        if self.low_watermark is None or commit > self.low_watermark:
            self.low_watermark = commit

    def partition(self, txns: Sequence[ModelTransaction]) -> list[list[int]]:
        _check_unique(txns)
        groups: list[tuple[set[bytes], set[bytes], list[int]]] = []
        for index, txn in enumerate(txns):
            writes, reads = set(txn.writes), set(txn.reads)
            fits = [
                not writes & group_writes
                and not (self.serializable and (reads & group_writes or writes & group_reads))
                for group_writes, group_reads, _ in groups
            ]
            if True in fits:
                group = groups[fits.index(True)]
            else:
                group = (set(), set(), [])
                groups.append(group)
            group[0].update(writes)
            if self.serializable:
                group[1].update(reads)
            group[2].append(index)
        return [members for _, _, members in groups]


def concurrent_writes(txns: Sequence[ModelTransaction]) -> list[tuple[int, int, list[bytes]]]:
    _check_unique(txns)
    found = []
    for i, first in enumerate(txns):
        for j in range(i + 1, len(txns)):
            second = txns[j]
            if first.clock is None or second.clock is None:
                continue
            if first.clock.compare(second.clock) != CONCURRENT:
                continue
            theirs = set(second.writes)
            keys = [key for key in dict.fromkeys(first.writes) if key in theirs]
            if keys:
                found.append((i, j, keys))
    return found
