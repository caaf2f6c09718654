"""ConflictDetector.check_batch of 1,000 transactions with 8 keys each (4 reads, 4 writes,
serializable, so 8,000 key checks a batch) against a history of 100,000 remembered keys, beside
the pure-Python model (``tests/support/models/conflict.py``, the group's baseline) deciding the
same batch.

Every transaction starts after the history, so each of its keys is looked up (about one in ten
is found) and nearly all are accepted: the rare one that loses inside the batch stops at its first
conflicting key. Key checks per second = 8,000 / the median time of one call."""

import random
from typing import Any

from hlc_oracle import ConflictDetector, Timestamp, Transaction

from tests.support.models.conflict import ModelDetector, ModelTransaction

BATCH = 1_000
READS = WRITES = 4
HISTORY = 100_000
KEY_SPACE = 1_000_000
GROUP = "check-batch-1000x8"


def key(n: int) -> bytes:
    return b"user:%08d" % n


def workload() -> tuple[list[tuple[int, int, list[bytes], list[bytes]]], list[bytes]]:
    """(txn_id, start, reads, writes) for one batch, and the keys already in the history."""
    rng = random.Random(42)
    history = [key(rng.randrange(KEY_SPACE)) for _ in range(HISTORY)]
    batch = []
    for n in range(BATCH):
        keys = [key(rng.randrange(KEY_SPACE)) for _ in range(READS + WRITES)]
        batch.append((n, 2 * HISTORY + n, keys[:READS], keys[READS:]))
    return batch, history


def test_model_check_batch(baseline: Any) -> None:
    baseline.group = GROUP
    batch, history = workload()
    detector = ModelDetector("serializable")
    for n, k in enumerate(history):
        detector.record(ModelTransaction(-n - 1, 0, writes=(k,)), HISTORY + n)
    txns = [ModelTransaction(n, start, tuple(r), tuple(w)) for n, start, r, w in batch]
    outcomes = baseline(detector.check_batch, txns)
    assert len(outcomes) == BATCH


def test_check_batch(benchmark: Any) -> None:
    benchmark.group = GROUP
    benchmark.extra_info["key_checks"] = BATCH * (READS + WRITES)
    batch, history = workload()
    detector = ConflictDetector("serializable", max_keys=2 * HISTORY)
    for n, k in enumerate(history):
        detector.record(Transaction(2**40 + n, Timestamp(0), write_set=[k]), Timestamp(HISTORY + n))
    txns = [Transaction(n, Timestamp(start), r, w) for n, start, r, w in batch]
    decision = benchmark(detector.check_batch, txns)
    assert len(decision) == BATCH

    # The same decisions as the model (the benchmark measures the real thing).
    model = ModelDetector("serializable")
    for n, k in enumerate(history):
        model.record(ModelTransaction(-n - 1, 0, writes=(k,)), HISTORY + n)
    expected = model.check_batch(
        [ModelTransaction(n, start, tuple(r), tuple(w)) for n, start, r, w in batch]
    )
    assert [c is None for c in decision.outcomes] == [o is None for o in expected]
