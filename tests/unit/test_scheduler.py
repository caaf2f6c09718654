"""GroupCommitScheduler and CommitEngine: decisions against the model, idempotency, fencing,
bad input, overload, durability modes and recovery."""

import asyncio
import gc
import threading
from collections.abc import Sequence
from pathlib import Path

import pytest
from hlc_oracle import (
    Aborted,
    CeilingReachedError,
    Clock,
    CommitEngine,
    CommitFuture,
    CommitOptions,
    Committed,
    ConflictKind,
    GroupCommitScheduler,
    HlcError,
    InvalidTransactionError,
    ManualClock,
    SchedulerClosedError,
    SchedulerOverloadedError,
    StartTimestampError,
    Timestamp,
    Transaction,
    TransactionMismatchError,
    TransactionTooLargeError,
)
from hlc_oracle.durable import ExternalDurableStep
from hlc_oracle.scheduler import CEILING_RETRIES, CeilingRaised
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support.models.group_commit import GroupCommitModel, ModelCommit, ModelRequest

KEYS = [b"a", b"b", b"c", b"d", b"e", b"f"]
KIND_NAMES = {
    "write-write": ConflictKind.WRITE_WRITE,
    "read-write": ConflictKind.READ_WRITE,
}

contents = st.tuples(
    st.lists(st.sampled_from(KEYS), max_size=3, unique=True),  # reads
    st.lists(st.sampled_from(KEYS), min_size=1, max_size=3, unique=True),  # writes
    st.integers(0, 3),  # how many batches back its snapshot was taken
)
request_plan = st.lists(
    st.lists(st.tuples(st.integers(1, 20), st.booleans()), min_size=1, max_size=12),
    min_size=1,
    max_size=8,
)


@settings(max_examples=60, suppress_health_check=[HealthCheck.too_slow])
@given(
    pool=st.lists(contents, min_size=20, max_size=20),
    plan=request_plan,
    isolation=st.sampled_from(["snapshot", "serializable"]),
    abort_share=st.integers(0, 4),
)
def test_decisions_match_the_reference_model(
    pool: list[tuple[list[bytes], list[bytes], int]],
    plan: list[list[tuple[int, bool]]],
    isolation: str,
    abort_share: int,
) -> None:
    clock = Clock(node=1)
    engine = CommitEngine(None, clock, durability="memory", isolation=isolation)
    model = GroupCommitModel(isolation)
    snapshots = [(0, clock.now())]  # (model counter, real start timestamp) after each batch
    real_txns: dict[int, Transaction] = {}
    model_txns: dict[int, ModelCommit] = {}
    model_to_real: dict[int, Timestamp] = {}
    last_real_commit: Timestamp | None = None
    for batch_number, batch in enumerate(plan):
        real_requests: list[Transaction | int] = []
        model_requests: list[ModelRequest] = []
        for txn_id, is_abort in batch:
            # Some of the plan's booleans become aborts, as often as abort_share says.
            if is_abort and txn_id % 5 < abort_share:
                real_requests.append(txn_id)
                model_requests.append(txn_id)
                continue
            if txn_id not in real_txns:
                reads, writes, lag = pool[txn_id - 1]
                counter, start = snapshots[max(0, len(snapshots) - 1 - lag)]
                real_txns[txn_id] = Transaction(txn_id, start, reads, writes)
                model_txns[txn_id] = ModelCommit(txn_id, counter, tuple(reads), tuple(writes))
            real_requests.append(real_txns[txn_id])
            model_requests.append(model_txns[txn_id])
        answers = engine.process(real_requests)
        expected = model.process(model_requests)
        for answer, (kind, detail) in zip(answers, expected, strict=True):
            if kind == "committed":
                assert isinstance(answer, Committed), (batch_number, answer, detail)
                assert isinstance(detail, int)
                if detail in model_to_real:
                    assert model_to_real[detail] == answer.commit_ts  # a resubmission
                else:
                    model_to_real[detail] = answer.commit_ts
                    if last_real_commit is not None:
                        assert answer.commit_ts > last_real_commit
                    last_real_commit = answer.commit_ts
                    assert answer.commit_ts > real_txns[answer.txn_id].start_ts
            elif kind == "requested":
                assert isinstance(answer, Aborted) and answer.reason == "requested", answer
                assert answer.conflict is None
            else:
                assert isinstance(answer, Aborted) and answer.reason == "conflict", answer
                assert isinstance(detail, tuple)
                conflict_kind, key, (lost_kind, lost_value) = detail
                conflict = answer.conflict
                assert conflict is not None
                assert conflict.kind == KIND_NAMES[conflict_kind]
                assert conflict.key == key
                if lost_kind == "commit":
                    assert conflict.commit_ts == model_to_real[lost_value]
                else:
                    assert conflict.winner_txn_id == lost_value
        snapshots.append((model.counter, clock.now()))


def make_txn(
    clock: Clock, txn_id: int, writes: list[bytes], reads: Sequence[bytes] = ()
) -> Transaction:
    return Transaction(txn_id, clock.now(), list(reads), writes)


def test_async_submit_commits_and_conflicts(tmp_path: Path) -> None:
    async def scenario() -> None:
        clock = Clock(node=2)
        async with GroupCommitScheduler(tmp_path, clock) as scheduler:
            start = clock.now()
            first = Transaction(1, start, [], [b"x"])
            second = Transaction(2, start, [], [b"x", b"y"])
            one = await scheduler.submit(first)
            two = await scheduler.submit(second)
            assert isinstance(one, Committed) and one.commit_ts > start
            assert isinstance(two, Aborted) and two.reason == "conflict"
            assert two.conflict is not None and two.conflict.key == b"x"
            assert two.conflict.commit_ts == one.commit_ts
            assert scheduler.status(1) == one
            assert scheduler.status(2) == two
            assert scheduler.status(3) is None
            # Concurrent submitters share batches.
            results = await asyncio.gather(
                *(scheduler.submit(make_txn(clock, 100 + i, [b"k%d" % i])) for i in range(200))
            )
            assert all(isinstance(r, Committed) for r in results)
            stamps = [r.commit_ts for r in results if isinstance(r, Committed)]
            assert len(set(stamps)) == 200
            assert scheduler.stats()["batches"] < 200

    asyncio.run(scenario())


def test_blocking_submit_from_threads(tmp_path: Path) -> None:
    clock = Clock(node=3)
    with GroupCommitScheduler(tmp_path, clock) as scheduler:
        results: list[Committed | Aborted] = []
        lock = threading.Lock()

        def worker(base: int) -> None:
            for i in range(20):
                outcome = scheduler.submit_blocking(
                    make_txn(clock, base + i, [b"t%d" % (base + i)])
                )
                with lock:
                    results.append(outcome)

        threads = [threading.Thread(target=worker, args=(1000 * (n + 1),)) for n in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        assert len(results) == 160
        assert all(isinstance(r, Committed) for r in results)


def test_resubmission_returns_the_first_decision(tmp_path: Path) -> None:
    clock = Clock(node=1)
    with GroupCommitScheduler(tmp_path, clock) as scheduler:
        txn = make_txn(clock, 7, [b"k"], [b"r"])
        first = scheduler.submit_blocking(txn)
        assert scheduler.submit_blocking(txn) == first
        same_contents = Transaction(7, txn.start_ts, [b"r"], [b"k"])
        assert scheduler.submit_blocking(same_contents) == first
        with pytest.raises(TransactionMismatchError, match="transaction 7 was already submitted"):
            scheduler.submit_blocking(Transaction(7, txn.start_ts, [], [b"other"]))
        loser = Transaction(8, txn.start_ts, [], [b"k"])
        lost = scheduler.submit_blocking(loser)
        assert isinstance(lost, Aborted)
        assert scheduler.submit_blocking(loser) == lost
    # Still the same after a restart (the decisions index is rebuilt from the log).
    with GroupCommitScheduler(tmp_path, Clock(node=1)) as scheduler:
        assert scheduler.submit_blocking(txn) == first
        assert scheduler.submit_blocking(loser) == lost
        with pytest.raises(TransactionMismatchError):
            scheduler.submit_blocking(Transaction(7, txn.start_ts, [], [b"other"]))


def test_abort_fences_a_late_commit(tmp_path: Path) -> None:
    async def scenario() -> None:
        clock = Clock(node=1)
        async with GroupCommitScheduler(tmp_path, clock) as scheduler:
            in_doubt = make_txn(clock, 50, [b"k"])
            fenced = await scheduler.abort(50)
            assert fenced == Aborted(50, "requested")
            assert await scheduler.submit(in_doubt) == fenced
            done = await scheduler.submit(make_txn(clock, 51, [b"j"]))
            assert isinstance(done, Committed)
            assert await scheduler.abort(51) == done  # an abort never undoes a commit
            assert scheduler.status(50) == fenced
        with GroupCommitScheduler(tmp_path, Clock(node=1)) as scheduler:
            assert scheduler.status(50) == fenced
            assert scheduler.submit_blocking(in_doubt) == fenced

    asyncio.run(scenario())


def test_bad_input_gets_clear_errors_and_is_not_logged(tmp_path: Path) -> None:
    physical = ManualClock(5_000_000_000)
    clock = Clock(node=1, max_offset_us=1_000, physical_clock=physical)
    options = CommitOptions(max_read_keys=3, max_write_keys=3, max_key_bytes=8)
    with GroupCommitScheduler(tmp_path, clock, options) as scheduler:
        next_seq = scheduler.stats()["next_seq"]
        start = clock.now()
        future = Timestamp(5_000_000_000 + 1_001, 0, 1)
        cases: list[tuple[object, type[BaseException], str]] = [
            (Transaction(0, start, [], [b"k"]), InvalidTransactionError, "0 is reserved"),
            (Transaction(1, start, [b"r"], []), InvalidTransactionError, "write_set is empty"),
            (
                Transaction(2, start, [b"1", b"2", b"3", b"4"], [b"k"]),
                TransactionTooLargeError,
                "read_set has 4 keys, over the limit of 3",
            ),
            (
                Transaction(3, start, [], [b"1", b"2", b"3", b"4"]),
                TransactionTooLargeError,
                "write_set has 4 keys, over the limit of 3",
            ),
            (
                Transaction(4, start, [], [b"k", b"123456789"]),
                TransactionTooLargeError,
                r"write_set\[1\] is 9 bytes, over the limit of 8",
            ),
            (Transaction(5, future, [], [b"k"]), StartTimestampError, "in the future"),
            ("not a transaction", TypeError, "txn must be a Transaction, got str"),
        ]
        for txn, error, message in cases:
            with pytest.raises(error, match=message):
                scheduler.submit_blocking(txn)  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="txn_id must be an int"):
            scheduler.abort_blocking("7")  # type: ignore[arg-type]
        with pytest.raises(ValueError, match=r"txn_id must be in 1\.\.2\*\*64-1"):
            scheduler.abort_blocking(-1)
        with pytest.raises(InvalidTransactionError, match="0 is reserved"):
            scheduler.abort_blocking(0)
        assert issubclass(InvalidTransactionError, HlcError)
        assert scheduler.stats()["next_seq"] == next_seq, "nothing was logged"
        ok = scheduler.submit_blocking(Transaction(6, clock.now(), [], [b"k"]))
        assert isinstance(ok, Committed)
        # A changed resubmission and a start below the low watermark are not logged either.
        next_seq = scheduler.stats()["next_seq"]
        with pytest.raises(TransactionMismatchError, match="transaction 6 was already submitted"):
            scheduler.submit_blocking(Transaction(6, start, [], [b"other"]))
        assert scheduler.stats()["next_seq"] == next_seq, "nothing was logged"


def test_an_undecided_start_below_the_low_watermark_is_aborted_and_logged(tmp_path: Path) -> None:
    clock = Clock(node=1)
    stale = Transaction(99, clock.now(), [], [b"fresh"])
    with GroupCommitScheduler(tmp_path, clock, CommitOptions(max_keys=2)) as s:
        for i in range(1, 6):
            assert isinstance(s.submit_blocking(make_txn(clock, i, [b"key%d" % i])), Committed)
        assert s.engine.low_watermark is not None and s.engine.low_watermark >= stale.start_ts
        next_seq = s.stats()["next_seq"]
        aborted = s.submit_blocking(stale)
        assert isinstance(aborted, Aborted) and aborted.conflict is not None
        assert aborted.conflict.kind is ConflictKind.TOO_OLD
        assert s.stats()["next_seq"] == next_seq + 1, "the abort was logged"
    with GroupCommitScheduler(tmp_path, clock, CommitOptions(max_keys=2)) as s:
        assert s.status(99) == aborted
        assert s.submit_blocking(stale) == aborted


def test_a_start_below_forgotten_decisions_is_refused_and_not_logged(tmp_path: Path) -> None:
    clock = Clock(node=1)
    with GroupCommitScheduler(tmp_path, clock, CommitOptions(retained_decisions=1)) as s:
        old_start = clock.now()
        for i in range(1, 3):
            assert isinstance(s.submit_blocking(make_txn(clock, i, [b"key%d" % i])), Committed)
        next_seq = s.stats()["next_seq"]
        with pytest.raises(StartTimestampError, match="low watermark"):
            s.submit_blocking(Transaction(99, old_start, [], [b"fresh"]))
        assert s.stats()["next_seq"] == next_seq, "nothing was logged"


def test_full_queue_raises_overload_instead_of_growing() -> None:
    async def scenario() -> None:
        clock = Clock(node=1)
        # The writer waits up to 2 s for a batch of 1000 to fill, so the queue holds still.
        options = CommitOptions(
            durability="memory", max_queue=3, max_batch_size=1000, max_batch_delay_us=2_000_000
        )
        scheduler = GroupCommitScheduler(None, clock, options)
        try:
            pending = [
                asyncio.ensure_future(scheduler.submit(make_txn(clock, i, [b"q%d" % i])))
                for i in range(1, 4)
            ]
            await asyncio.sleep(0.05)
            with pytest.raises(SchedulerOverloadedError, match="queue is full"):
                await scheduler.submit(make_txn(clock, 4, [b"q4"]))
            scheduler.close()  # decides what is queued
            outcomes = await asyncio.gather(*pending)
            assert all(isinstance(o, Committed) for o in outcomes)
            with pytest.raises(SchedulerClosedError):
                await scheduler.submit(make_txn(clock, 5, [b"q5"]))
        finally:
            scheduler.close()

    asyncio.run(scenario())


def test_max_batch_size_caps_batches() -> None:
    async def scenario() -> None:
        clock = Clock(node=1)
        options = CommitOptions(durability="memory", max_batch_size=10)
        async with GroupCommitScheduler(None, clock, options) as scheduler:
            await asyncio.gather(
                *(scheduler.submit(make_txn(clock, i, [b"m%d" % i])) for i in range(1, 101))
            )
            batches = scheduler.stats()["batches"]
            assert batches is not None and batches >= 10
            # A group is never split: it goes alone when larger than the cap.
            group = [make_txn(clock, i, [b"n%d" % i]) for i in range(200, 230)]
            answers = await scheduler.submit_many(group)
            assert all(isinstance(a, Committed) for a in answers)

    asyncio.run(scenario())


def test_one_batch_answers_callers_of_two_loops_and_a_blocking_caller() -> None:
    """The writer hands a batch of one loop's futures over in one wake-up; a batch mixing loops
    and a blocking caller's future takes the general path. Each caller gets its own answer."""
    clock = Clock(node=1)
    # The writer waits (up to 10 s) until the three callers are queued, then takes them at once.
    options = CommitOptions(durability="memory", max_batch_size=3, max_batch_delay_us=10_000_000)
    answers: dict[int, object] = {}

    def on_a_loop(txn_id: int) -> None:
        async def submit() -> object:
            return await scheduler.submit(make_txn(clock, txn_id, [b"mixed%d" % txn_id]))

        answers[txn_id] = asyncio.run(submit())

    def blocking(txn_id: int) -> None:
        txn = make_txn(clock, txn_id, [b"mixed%d" % txn_id])
        answers[txn_id] = scheduler.submit_blocking(txn, timeout=30)

    with GroupCommitScheduler(None, clock, options) as scheduler:
        callers = [
            threading.Thread(target=on_a_loop, args=(1,)),
            threading.Thread(target=on_a_loop, args=(2,)),
            threading.Thread(target=blocking, args=(3,)),
        ]
        for caller in callers:
            caller.start()
        for caller in callers:
            caller.join(30)
        assert scheduler.stats()["batches"] == 1
    for txn_id in (1, 2, 3):
        answer = answers[txn_id]
        assert isinstance(answer, Committed) and answer.txn_id == txn_id


@pytest.mark.parametrize("durability", ["sync", "async"])
def test_recovery_restores_decisions_history_and_clock_floor(
    tmp_path: Path, durability: str
) -> None:
    options = CommitOptions(durability=durability, segment_size=4096)  # type: ignore[arg-type]
    clock = Clock(node=4)
    with GroupCommitScheduler(tmp_path, clock, options) as scheduler:
        start = clock.now()
        committed = [
            scheduler.submit_blocking(make_txn(clock, i, [b"r%d" % i])) for i in range(1, 150)
        ]
        newest = max(c.commit_ts for c in committed if isinstance(c, Committed))
    # The physical clock of the new process is behind: the floor still wins.
    physical = ManualClock(newest.physical - 100)
    clock = Clock(node=4, physical_clock=physical)
    with GroupCommitScheduler(tmp_path, clock, options) as scheduler:
        assert scheduler.engine.floor == newest
        assert scheduler.stats()["recovered_commits"] == 149
        assert scheduler.engine.recovery is not None
        assert scheduler.engine.recovery.segments > 1
        for outcome in committed:
            assert scheduler.status(outcome.txn_id) == outcome
        late = scheduler.submit_blocking(Transaction(500, start, [], [b"r3"]))
        assert isinstance(late, Aborted)  # the conflict history survived the restart
        fresh = scheduler.submit_blocking(Transaction(501, clock.now(), [], [b"r3"]))
        assert isinstance(fresh, Committed) and fresh.commit_ts > newest


def test_options_are_validated() -> None:
    with pytest.raises(ValueError, match="durability must be"):
        CommitOptions(durability="fast")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="max_queue must be at least 1"):
        CommitOptions(max_queue=0)
    with pytest.raises(TypeError, match="max_batch_size must be an int"):
        CommitOptions(max_batch_size=1.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="a log directory is required"):
        GroupCommitScheduler(None, Clock())
    with pytest.raises(TypeError, match="clock must be a Clock"):
        CommitEngine(None, "clock", durability="memory")  # type: ignore[arg-type]


def test_submit_many_answers_a_group_in_order_with_errors_in_place() -> None:
    async def scenario() -> None:
        clock = Clock(node=1)
        async with GroupCommitScheduler(None, clock, CommitOptions(durability="memory")) as s:
            start = clock.now()
            answers = await s.submit_many(
                [
                    Transaction(1, start, [], [b"g"]),
                    Transaction(2, start, [], [b"g"]),
                    Transaction(0, start, [], [b"h"]),
                    3,
                    Transaction(3, start, [], [b"i"]),
                ]
            )
            assert isinstance(answers[0], Committed)
            assert isinstance(answers[1], Aborted) and answers[1].conflict is not None
            assert answers[1].conflict.winner_txn_id == 1
            assert isinstance(answers[2], InvalidTransactionError)
            assert answers[3] == Aborted(3, "requested")
            assert answers[4] == answers[3]  # fenced by the abort just before it
            assert await s.submit_many([]) == []
            with pytest.raises(TypeError, match="requests must be Transactions or int ids"):
                await s.submit_many(["x"])  # type: ignore[list-item]

    asyncio.run(scenario())


# ---- the clock's ceiling: requests refused at it wait for a raise, which nobody waits on ----


def _at_the_ceiling() -> tuple[ManualClock, Clock, Timestamp]:
    """A clock whose physical time is past its ceiling, and a start taken before."""
    physical = ManualClock(1_000_000)
    clock = Clock(node=1, physical_clock=physical, ceiling_physical=1_000_010)
    start = clock.now()
    physical.advance(100)
    return physical, clock, start


def test_a_ceiling_raise_is_started_not_waited_for() -> None:
    async def scenario() -> None:
        physical, clock, start = _at_the_ceiling()
        async with GroupCommitScheduler(None, clock, CommitOptions(durability="memory")) as sched:
            returned = threading.Event()
            timers: list[threading.Timer] = []

            def on_ceiling(done: CeilingRaised) -> None:
                def later() -> None:
                    # The caller of on_ceiling went on before the ceiling rose.
                    assert returned.wait(5)
                    clock.raise_ceiling(physical.now_us() + 1_000_000)
                    done(None)

                timers.append(threading.Timer(0.05, later))
                timers[-1].start()
                returned.set()

            sched.on_ceiling = on_ceiling
            outcome = await sched.submit(Transaction(1, start, [], [b"a"]))
            assert isinstance(outcome, Committed) and len(timers) == 1
            for timer in timers:
                timer.join()

    asyncio.run(scenario())


def test_a_ceiling_raised_on_the_loop_that_releases_the_batch() -> None:
    """Clustered, a batch refused at the ceiling behind one whose decision write is pending is
    released on the event loop that confirms that write, and the window is saved on that loop
    too: the raise must run there while nothing waits for it."""

    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        physical = ManualClock(1_000_000)
        clock = Clock(node=1, physical_clock=physical, ceiling_physical=1_000_010)
        start = clock.now()
        writing, release = asyncio.Event(), asyncio.Event()
        on_loop: list[bool] = []

        async def store(batch_seq: int, data: bytes) -> None:
            writing.set()
            await release.wait()

        async def extend() -> None:
            await asyncio.sleep(0.01)  # a save: a round trip on this loop
            clock.raise_ceiling(physical.now_us() + 1_000_000)

        def on_ceiling(done: CeilingRaised) -> None:
            on_loop.append(threading.current_thread() is threading.main_thread())
            future = asyncio.run_coroutine_threadsafe(extend(), loop)
            future.add_done_callback(lambda saved: done(saved.exception()))

        step = ExternalDurableStep(store, loop)
        sched = GroupCommitScheduler(None, clock, durable_step=step)
        sched.on_ceiling = on_ceiling
        try:
            first = asyncio.ensure_future(sched.submit(Transaction(1, start, [], [b"a"])))
            await asyncio.wait_for(writing.wait(), 5)
            physical.advance(100)  # past the ceiling
            second = asyncio.ensure_future(sched.submit(Transaction(2, start, [], [b"b"])))
            for _ in range(500):  # the second batch decided (refused) behind the first
                if step.pending() == 2:
                    break
                await asyncio.sleep(0.01)
            assert step.pending() == 2
            release.set()
            outcomes = await asyncio.wait_for(asyncio.gather(first, second), timeout=5)
            assert all(isinstance(o, Committed) for o in outcomes)
            assert on_loop == [True]
        finally:
            await sched.aclose()

    asyncio.run(scenario())


def test_a_failed_ceiling_raise_answers_with_the_refusal() -> None:
    async def scenario() -> None:
        _, clock, start = _at_the_ceiling()
        async with GroupCommitScheduler(None, clock, CommitOptions(durability="memory")) as sched:
            sched.on_ceiling = lambda done: done(OSError("the window cannot be saved"))
            with pytest.raises(CeilingReachedError):
                await sched.submit(Transaction(1, start, [], [b"a"]))
            # The writer goes on with the next request.
            sched.on_ceiling = lambda done: done(RuntimeError("still not"))
            with pytest.raises(CeilingReachedError):
                await sched.submit(Transaction(2, start, [], [b"b"]))

    asyncio.run(scenario())


def test_only_a_raise_that_left_the_ceiling_where_it_was_counts_as_a_retry() -> None:
    async def scenario() -> None:
        physical, clock, start = _at_the_ceiling()
        async with GroupCommitScheduler(None, clock, CommitOptions(durability="memory")) as sched:
            calls: list[int] = []

            def stalled(done: CeilingRaised) -> None:
                calls.append(0)
                done(None)  # "raised", but the ceiling stays

            sched.on_ceiling = stalled
            with pytest.raises(CeilingReachedError):
                await sched.submit(Transaction(1, start, [], [b"a"]))
            assert len(calls) == CEILING_RETRIES

            rising: list[int] = []

            def creeping(done: CeilingRaised) -> None:
                # Rises each time, but too little: never counted, until it rises enough.
                rising.append(clock.raise_ceiling(clock.ceiling_physical + 10))  # type: ignore[operator]
                if len(rising) == 2 * CEILING_RETRIES:
                    clock.raise_ceiling(physical.now_us() + 1_000_000)
                done(None)

            sched.on_ceiling = creeping
            outcome = await sched.submit(Transaction(2, start, [], [b"b"]))
            assert isinstance(outcome, Committed) and len(rising) == 2 * CEILING_RETRIES

    asyncio.run(scenario())


def test_a_caller_cancelled_before_its_answer_leaves_the_others_answered() -> None:
    async def scenario() -> None:
        clock = Clock(node=1)
        # The writer waits up to 0.3 s for a batch to fill, so all three share one batch.
        options = CommitOptions(
            durability="memory", max_batch_size=1000, max_batch_delay_us=300_000
        )
        errors: list[dict[str, object]] = []
        asyncio.get_running_loop().set_exception_handler(lambda _, context: errors.append(context))
        with GroupCommitScheduler(None, clock, options) as scheduler:
            futures = [scheduler.submit(make_txn(clock, i, [b"c%d" % i])) for i in range(1, 4)]
            futures[1].cancel()
            first, third = await asyncio.wait_for(asyncio.gather(futures[0], futures[2]), 10)
            assert isinstance(first, Committed) and isinstance(third, Committed)
            assert isinstance(scheduler.status(2), Committed)  # decided, only nobody listened
        assert errors == []

    asyncio.run(scenario())


def test_a_caller_whose_loop_closed_leaves_the_others_answered() -> None:
    """``submit`` needs a running event loop (and queues nothing without one); a batch whose
    callers' loop closed before their answers still answers the others, and is decided."""
    clock = Clock(node=1)
    # The writer waits up to 0.3 s for a batch to fill, so both callers share one batch.
    options = CommitOptions(durability="memory", max_batch_size=1000, max_batch_delay_us=300_000)
    with GroupCommitScheduler(None, clock, options) as scheduler:
        with pytest.raises(RuntimeError, match="no running event loop"):
            scheduler.submit(make_txn(clock, 1, [b"a"]))
        assert scheduler.queue_length() == 0

        async def submit_and_leave() -> CommitFuture:
            return scheduler.submit(make_txn(clock, 2, [b"b"]))

        gone = asyncio.new_event_loop()
        orphan = gone.run_until_complete(submit_and_leave())
        gone.close()
        outcome = scheduler.submit_blocking(make_txn(clock, 3, [b"c"]), timeout=10)
        assert isinstance(outcome, Committed)
        assert isinstance(scheduler.status(2), Committed)  # decided, only nobody listened
        assert not orphan.done()


def test_a_committed_answer_is_not_tracked_by_the_collector() -> None:
    """A ``Committed`` holds no Python object: the cyclic collector never traverses one."""
    clock = Clock(node=1)
    with GroupCommitScheduler(None, clock, CommitOptions(durability="memory")) as scheduler:
        outcome = scheduler.submit_blocking(make_txn(clock, 1, [b"a"]), timeout=10)
        assert isinstance(outcome, Committed) and not gc.is_tracked(outcome)
        assert scheduler.status(1) == outcome
