"""ConflictDetector: every decision against the pure-Python model (hypothesis: random batches with
overlapping read and write sets, both isolation levels, eviction and the low watermark), partition,
vector-clock write conflicts, the scenarios spelled out as tables, threads, and bad input."""

import bisect
import enum
import pickle
import sys
import threading
import time
from typing import Any

import pytest
from hlc_oracle import (
    BatchDecision,
    Conflict,
    ConflictDetector,
    ConflictKind,
    Timestamp,
    Transaction,
    VectorClock,
)
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.support.models import conflict as model
from tests.support.models.vclock import DictVectorClock

ISOLATIONS = ["snapshot", "serializable"]
KIND_NAMES = {
    ConflictKind.WRITE_WRITE: "write-write",
    ConflictKind.READ_WRITE: "read-write",
    ConflictKind.TOO_OLD: "too-old",
}


def ts(packed: int, node: int = 0) -> Timestamp:
    return Timestamp.from_int(packed, node=node)


def model_ts(timestamp: Timestamp) -> tuple[int, int]:
    return (timestamp.to_int(), timestamp.node)


def as_bytes(key: bytes | str) -> bytes:
    return key.encode() if isinstance(key, str) else key


def outcome(conflict: Conflict | None) -> model.Outcome:
    """A core `Conflict` in the model's terms."""
    if conflict is None:
        return None
    if conflict.winner_txn_id is not None:
        lost_to: tuple[str, Any] = ("batch", conflict.winner_txn_id)
    else:
        assert conflict.commit_ts is not None
        where = "watermark" if conflict.kind is ConflictKind.TOO_OLD else "commit"
        lost_to = (where, model_ts(conflict.commit_ts))
    return (KIND_NAMES[conflict.kind], conflict.key, lost_to)


def pair(
    txn_id: int,
    start: tuple[int, int],
    reads: list[bytes | str],
    writes: list[bytes | str],
    clock: dict[int, int] | None = None,
) -> tuple[Transaction, model.ModelTransaction]:
    """The same transaction for the core and for the model."""
    core = Transaction(
        txn_id,
        ts(*start),
        reads,
        writes,
        None if clock is None else VectorClock(clock),
    )
    reference = model.ModelTransaction(
        txn_id,
        start,
        tuple(map(as_bytes, reads)),
        tuple(map(as_bytes, writes)),
        None if clock is None else DictVectorClock(clock),
    )
    return core, reference


# A few keys, so that read and write sets overlap often; "a" and b"a" are the same key.
keys = st.lists(
    st.sampled_from([b"a", b"b", b"c", b"d", b"e", "a", "\u00e9", b"\xc3\xa9"]), max_size=4
)
# A transaction: how far its start lags behind the latest commit (so it may miss some), its start's
# node (ties on (physical, logical) are broken by node), reads, writes.
txn_specs = st.tuples(st.integers(0, 12), st.integers(0, 2), keys, keys)
batches = st.lists(st.lists(txn_specs, min_size=1, max_size=8), min_size=1, max_size=6)


@settings(max_examples=150)
@given(
    isolation=st.sampled_from(ISOLATIONS),
    max_keys=st.sampled_from([1, 2, 3, 5, 1000]),
    rounds=batches,
    reverse=st.booleans(),
)
def test_decisions_match_the_model(
    isolation: str,
    max_keys: int,
    rounds: list[list[tuple[int, int, list[Any], list[Any]]]],
    reverse: bool,
) -> None:
    detector = ConflictDetector(isolation, max_keys=max_keys)
    reference = model.ModelDetector(isolation)
    now, next_id = 20, 1
    for specs in rounds:
        pairs = []
        for lag, node, reads, writes in specs:
            pairs.append(pair(next_id, (max(0, now - lag), node), reads, writes))
            next_id += 1
        core_txns = [core for core, _ in pairs]
        model_txns = [ref for _, ref in pairs]
        for core, ref in pairs:
            assert outcome(detector.check(core)) == reference.check(ref)
        decision = detector.check_batch(core_txns)
        expected = reference.check_batch(model_txns)
        assert [outcome(c) for c in decision.outcomes] == expected
        accepted = [i for i, o in enumerate(expected) if o is None]
        assert [t.txn_id for t in decision.accepted] == [core_txns[i].txn_id for i in accepted]
        assert [(t.txn_id, outcome(c)) for t, c in decision.rejected] == [
            (core_txns[i].txn_id, o) for i, o in enumerate(expected) if o is not None
        ]
        # Commit the accepted ones after every start (node 1: other ties), in submission order
        # or, to exercise a key's last commit only moving forward, in reverse.
        commits = [now + 1 + n for n in range(len(accepted))]
        for i, commit in zip(accepted, reversed(commits) if reverse else commits, strict=True):
            detector.record(core_txns[i], ts(commit, 1))
            reference.record(model_txns[i], (commit, 1))
            # The keys the detector chose to forget (its memory bound), forgotten by the model
            # too: the low watermarks must then agree, and so must every later decision.
            for key in list(reference.last_commit):
                remembered = detector.last_commit(key)
                if remembered is None:
                    reference.forget(key)
                else:
                    assert model_ts(remembered) == reference.last_commit[key]
        now += len(accepted) + 1
        assert len(detector) == len(reference.last_commit) <= max_keys
        lw = detector.low_watermark
        assert (None if lw is None else model_ts(lw)) == reference.low_watermark


@settings(max_examples=150)
@given(isolation=st.sampled_from(ISOLATIONS), specs=st.lists(txn_specs, max_size=12))
def test_partition_matches_the_model_and_groups_are_independent(
    isolation: str, specs: list[tuple[int, int, list[Any], list[Any]]]
) -> None:
    pairs = [pair(i, (10, node), reads, writes) for i, (_, node, reads, writes) in enumerate(specs)]
    groups = ConflictDetector(isolation).partition([core for core, _ in pairs])
    indices = [[txn.txn_id for txn in group] for group in groups]
    assert indices == model.ModelDetector(isolation).partition([ref for _, ref in pairs])
    assert sorted(i for group in indices for i in group) == list(range(len(specs)))
    for group in groups:
        for n, a in enumerate(group):
            for b in group[n + 1 :]:
                assert not set(a.write_set) & set(b.write_set)
                if isolation == "serializable":
                    assert not set(a.read_set) & set(b.write_set)
                    assert not set(a.write_set) & set(b.read_set)


clocks = st.one_of(st.none(), st.dictionaries(st.integers(0, 3), st.integers(0, 2), max_size=3))


@settings(max_examples=150)
@given(st.lists(st.tuples(keys, clocks), max_size=10))
def test_concurrent_writes_match_the_model(
    specs: list[tuple[list[bytes | str], dict[int, int] | None]],
) -> None:
    pairs = [pair(i, (1, 0), [], writes, clock) for i, (writes, clock) in enumerate(specs)]
    found = ConflictDetector().check_concurrent_writes([core for core, _ in pairs])
    assert [(a.txn_id, b.txn_id, keys) for a, b, keys in found] == model.concurrent_writes(
        [ref for _, ref in pairs]
    )


# (isolation, recorded (key, commit), candidate (start, reads, writes), expected outcome)
CHECK_TABLE: list[tuple[str, list[tuple[str, int]], tuple[int, list[str], list[str]], Any]] = [
    ("snapshot", [], (5, ["a"], ["a"]), None),
    ("snapshot", [("a", 10)], (5, [], ["a"]), ("write-write", b"a", ("commit", (10, 0)))),
    ("snapshot", [("a", 10)], (10, [], ["a"]), None),  # committed at its start: not after it
    ("snapshot", [("a", 10)], (5, ["a"], ["b"]), None),  # snapshot ignores reads
    ("serializable", [("a", 10)], (5, ["a"], ["b"]), ("read-write", b"a", ("commit", (10, 0)))),
    (
        "serializable",
        [("a", 10), ("b", 12)],
        (5, ["a"], ["b"]),
        ("write-write", b"b", ("commit", (12, 0))),
    ),
    ("serializable", [("a", 10)], (11, ["a"], ["a"]), None),
]


@pytest.mark.parametrize(("isolation", "history", "candidate", "expected"), CHECK_TABLE)
def test_check_table(
    isolation: str,
    history: list[tuple[str, int]],
    candidate: tuple[int, list[str], list[str]],
    expected: Any,
) -> None:
    detector = ConflictDetector(isolation)
    for n, (key, commit) in enumerate(history):
        detector.record(Transaction(100 + n, ts(commit - 1), write_set=[key]), ts(commit))
    start, reads, writes = candidate
    assert outcome(detector.check(Transaction(1, ts(start), reads, writes))) == expected


def test_batch_first_committer_wins_and_records_nothing() -> None:
    detector = ConflictDetector("serializable")
    detector.record(Transaction(100, ts(1), write_set=[b"h"]), ts(20))
    batch = [
        Transaction(1, ts(30), [b"x"], [b"a"]),
        Transaction(2, ts(30), [], [b"a"]),  # loses to 1: write-write inside the batch
        Transaction(3, ts(30), [b"a"], [b"b"]),  # loses to 1: reads what 1 writes
        Transaction(4, ts(10), [], [b"h"]),  # loses to the recorded commit at 20
        Transaction(5, ts(30), [b"b"], [b"c"]),  # 3 was rejected: its write of b does not count
        Transaction(6, ts(30), [], [b"x"]),  # writes what 1 read: 1 is serialized first
    ]
    decision = detector.check_batch(batch)
    assert isinstance(decision, BatchDecision) and len(decision) == 6
    assert [t.txn_id for t in decision.accepted] == [1, 5, 6]
    assert [(t.txn_id, outcome(c)) for t, c in decision.rejected] == [
        (2, ("write-write", b"a", ("batch", 1))),
        (3, ("read-write", b"a", ("batch", 1))),
        (4, ("write-write", b"h", ("commit", (20, 0)))),
    ]
    conflict = decision.rejected[0][1]
    assert conflict.kind is ConflictKind.WRITE_WRITE and conflict.commit_ts is None
    assert "winner_txn_id=1" in repr(conflict)
    assert len(detector) == 1 and detector.check(batch[1]) is None


def test_eviction_forgets_the_oldest_and_rejects_old_starts() -> None:
    detector = ConflictDetector(max_keys=2)
    assert detector.low_watermark is None
    detector.record(Transaction(1, ts(0), write_set=["a"]), ts(10))
    detector.record(Transaction(2, ts(0), write_set=["b"]), ts(11))
    detector.record(Transaction(3, ts(0), write_set=["a"]), ts(12))  # "b" is now the oldest
    detector.record(Transaction(4, ts(0), write_set=["c"]), ts(13))
    assert len(detector) == 2
    assert detector.low_watermark == ts(11)
    assert detector.last_commit("b") is None and detector.last_commit(b"a") == ts(12)
    too_old = detector.check(Transaction(5, ts(11), write_set=["unrelated"]))
    assert too_old is not None and too_old.kind is ConflictKind.TOO_OLD
    assert too_old.key is None and too_old.commit_ts == ts(11)
    assert detector.check(Transaction(6, ts(11, node=1), write_set=["b"])) is None
    detector.raise_low_watermark(ts(50))
    detector.raise_low_watermark(ts(20))
    assert detector.low_watermark == ts(50)


def test_memory_stays_bounded() -> None:
    detector = ConflictDetector(max_keys=1000)
    for n in range(20):
        txn = Transaction(n, ts(n * 1000), write_set=[f"k{n}-{i}" for i in range(500)])
        detector.record(txn, ts(n * 1000 + 1))
    assert len(detector) <= 1000
    # One table allocated at creation: 16 bytes a key at a multiple of 16 keys, at most 32 from 8
    # keys up (rust/src/conflict/table.rs).
    assert detector.memory_bytes <= 32 * 1000
    assert ConflictDetector().memory_bytes == 16 * 1_000_000
    for max_keys in (8, 9, 15, 17, 1001):
        assert ConflictDetector(max_keys=max_keys).memory_bytes <= 32 * max_keys


def test_keys_str_is_utf8_bytes_and_transaction_reads_back() -> None:
    clock = VectorClock({1: 2})
    txn = Transaction(7, ts(5, 3), ["é", b"x"], write_set=("w",), clock=clock)
    clock.increment(1)  # the transaction keeps its own copy
    assert txn.txn_id == 7 and txn.start_ts == ts(5, 3)
    assert txn.read_set == (b"\xc3\xa9", b"x") and txn.write_set == (b"w",)
    assert txn.clock == VectorClock({1: 2})
    assert Transaction(8, ts(1)).read_set == () and Transaction(8, ts(1)).clock is None
    assert "txn_id=7" in repr(txn)


def test_isolation_and_defaults() -> None:
    detector = ConflictDetector()
    assert (detector.isolation, detector.max_keys) == ("snapshot", 1_000_000)
    assert ConflictDetector("serializable", max_keys=5).isolation == "serializable"
    assert repr(detector).startswith("ConflictDetector(isolation='snapshot'")


def test_threads_record_and_check_concurrently() -> None:
    detector = ConflictDetector(max_keys=100_000)
    errors: list[BaseException] = []

    def work(worker: int) -> None:
        try:
            for n in range(200):
                txn = Transaction(worker * 1000 + n, ts(1), [f"r{n}"], [f"w{worker}-{n}", "shared"])
                detector.check_batch([txn])
                detector.record(txn, ts(2 + n))
        except BaseException as err:  # pragma: no cover - reported below
            errors.append(err)

    threads = [threading.Thread(target=work, args=(w,)) for w in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not errors
    assert len(detector) == 4 * 200 + 1
    assert detector.last_commit("shared") == ts(201)


@pytest.fixture(scope="module")
def large_batch() -> list[Transaction]:
    """20,000 transactions, 20 writers per shared key: each batch call takes milliseconds."""
    return [
        Transaction(i, ts(1), [b"r%d" % i], [b"w%d" % i, b"x%d" % (i % 1000)],
                    VectorClock({i % 7 + 1: i}))
        for i in range(1, 20_001)
    ]  # fmt: skip


@pytest.mark.parametrize("method", ["check_batch", "partition", "check_concurrent_writes"])
def test_batch_calls_release_the_gil(method: str, large_batch: list[Transaction]) -> None:
    """While one thread is inside a batch call, another runs Python. A call that kept the GIL
    would stop the other thread for its whole length: Rust code never yields it by itself.

    The other thread stamps the time each time it runs; the caller stamps each call's start and
    end. A stamp strictly inside a call proves the call let the GIL go, since the switch interval
    is set far above a call's length: the caller holds the GIL from its start stamp until the
    call itself releases it. The calls repeat (bounded) until such stamps are seen, so a busy
    host that keeps the other thread off the CPU through one short call only makes it take longer.
    """
    detector = ConflictDetector(isolation="serializable")
    calls: list[tuple[float, float]] = []
    done = threading.Event()

    def call() -> None:
        deadline = time.monotonic() + 20
        while not done.is_set() and len(calls) < 200 and time.monotonic() < deadline:
            began = time.perf_counter()
            getattr(detector, method)(large_batch)
            calls.append((began, time.perf_counter()))
        done.set()

    stamps: list[float] = []
    interval = sys.getswitchinterval()
    sys.setswitchinterval(5.0)
    try:
        worker = threading.Thread(target=call)
        worker.start()
        while not done.is_set():
            time.sleep(0)  # lets the worker take the GIL back whenever it wants it
            stamps.append(time.perf_counter())
            if len(stamps) % 1000 == 0 and inside(stamps, list(calls)) >= 3:
                done.set()
        worker.join()
    finally:
        sys.setswitchinterval(interval)
    assert inside(stamps, calls) >= 3, f"the other thread never ran during {method}"


def inside(stamps: list[float], calls: list[tuple[float, float]]) -> int:
    """How many of ``stamps`` fall strictly inside one of ``calls`` (start, end), both sorted."""
    starts = [began for began, _ in calls]
    count = 0
    for stamp in stamps:
        index = bisect.bisect_right(starts, stamp) - 1
        if index >= 0 and stamp < calls[index][1]:
            count += 1
    return count


# Bad input: a clear TypeError or ValueError naming the problem, and nothing recorded.


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"txn_id": -1}, ValueError, "txn_id must be a non-negative integer"),
        ({"txn_id": "t1"}, TypeError, "txn_id must be an int, got str"),
        ({"start_ts": 5}, TypeError, "start_ts must be a Timestamp, got int"),
        ({"read_set": [b"a", 3]}, TypeError, r"read_set\[1\] must be bytes or str, got int"),
        ({"write_set": [bytearray(b"a")]}, TypeError, r"write_set\[0\] must be bytes or str"),
        (
            {"write_set": "abc"},
            TypeError,
            "write_set must be an iterable of keys, not a single str",
        ),
        (
            {"read_set": b"abc"},
            TypeError,
            "read_set must be an iterable of keys, not a single bytes",
        ),
        ({"read_set": 5}, TypeError, "read_set must be an iterable of bytes or str keys, got int"),
        ({"write_set": ["\ud800"]}, ValueError, r"write_set\[0\] is a str that cannot be encoded"),
        ({"clock": {1: 1}}, TypeError, "clock must be a VectorClock or None, got dict"),
    ],
)
def test_bad_transactions(kwargs: dict[str, Any], error: type[Exception], message: str) -> None:
    arguments: dict[str, Any] = {"txn_id": 1, "start_ts": ts(1), **kwargs}
    with pytest.raises(error, match=message):
        Transaction(**arguments)


@pytest.mark.parametrize(
    ("args", "error", "message"),
    [
        (
            ("eventual",),
            ValueError,
            "isolation must be 'snapshot' or 'serializable', got \"eventual\"",
        ),
        ((1,), TypeError, "isolation must be a str, got int"),
        (("snapshot", 0), ValueError, "max_keys must be at least 1, got 0"),
        (("snapshot", -5), ValueError, "max_keys must be a non-negative integer"),
        (("snapshot", "10"), TypeError, "max_keys must be an int, got str"),
    ],
)
def test_bad_detector_arguments(
    args: tuple[Any, ...], error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        ConflictDetector(*args)


def detector_with_history() -> ConflictDetector:
    detector = ConflictDetector("serializable", max_keys=10)
    detector.record(Transaction(1, ts(1), write_set=["a"]), ts(5))
    return detector


@pytest.mark.parametrize("method", ["check_batch", "partition", "check_concurrent_writes"])
def test_batch_calls_reject_bad_batches_and_record_nothing(method: str) -> None:
    detector = detector_with_history()
    call = getattr(detector, method)
    duplicate = [Transaction(7, ts(9), write_set=["x"]), Transaction(7, ts(9), write_set=["y"])]
    with pytest.raises(ValueError, match="duplicate transaction id 7 in one batch"):
        call(duplicate)
    with pytest.raises(TypeError, match=r"txns\[1\] must be a Transaction, got int"):
        call([Transaction(8, ts(9)), 3])
    with pytest.raises(TypeError, match="txns must be an iterable of Transaction, got int"):
        call(3)
    assert len(detector) == 1 and detector.low_watermark is None
    assert detector.last_commit("x") is None


def test_record_rejects_bad_commits_and_records_nothing() -> None:
    detector = detector_with_history()
    txn = Transaction(2, ts(9), write_set=["b"])
    with pytest.raises(
        ValueError, match=r"commit_ts .* of transaction 2 must be after its start_ts"
    ):
        detector.record(txn, ts(9))
    with pytest.raises(TypeError, match="commit_ts must be a Timestamp, got int"):
        detector.record(txn, 10)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"^txn must be a Transaction, got str$"):
        detector.record("txn", ts(10))  # type: ignore[arg-type]
    assert len(detector) == 1 and detector.last_commit("b") is None


# Each row: a call with an argument of the wrong type, and the TypeError naming that argument.
WRONG_ARGUMENT_TYPES: list[tuple[str, tuple[Any, ...], str]] = [
    ("check", (None,), "txn must be a Transaction, got NoneType"),
    ("check", (ts(1),), "txn must be a Transaction, got Timestamp"),
    ("record", (None, ts(10)), "txn must be a Transaction, got NoneType"),
    ("record", (Transaction(2, ts(9)), None), "commit_ts must be a Timestamp, got NoneType"),
    ("raise_low_watermark", (None,), "ts must be a Timestamp, got NoneType"),
    ("raise_low_watermark", (7,), "ts must be a Timestamp, got int"),
]


@pytest.mark.parametrize(("method", "args", "message"), WRONG_ARGUMENT_TYPES)
def test_wrong_argument_types_name_the_argument(
    method: str, args: tuple[Any, ...], message: str
) -> None:
    detector = detector_with_history()
    with pytest.raises(TypeError, match=f"^{message}$"):
        getattr(detector, method)(*args)
    assert len(detector) == 1 and detector.low_watermark is None


def test_conflict_kind_is_an_enum_whose_values_are_the_wire_names() -> None:
    assert isinstance(ConflictKind.TOO_OLD, enum.Enum)
    assert [k.value for k in ConflictKind] == ["write_write", "read_write", "too_old"]
    assert ConflictKind["READ_WRITE"] is ConflictKind("read_write") is ConflictKind.READ_WRITE
    assert pickle.loads(pickle.dumps(ConflictKind.WRITE_WRITE)) is ConflictKind.WRITE_WRITE
