"""The durable step's seam: the external (clustered) implementation driven by the scheduler, with a
plain coroutine standing in for the store (the etcd store's own tests run against a real etcd)."""

import asyncio
import threading
from collections.abc import Callable
from pathlib import Path
from typing import cast

import pytest
from hlc_oracle import (
    Aborted,
    Clock,
    CommitEngine,
    CommitLogCorruptError,
    CommitLogError,
    CommitOptions,
    CommitOutcomeUnknownError,
    Committed,
    GroupCommitScheduler,
    Timestamp,
    Transaction,
)
from hlc_oracle.durable import ExternalDurableStep, LocalDurableStep


def _txn(clock: Clock, txn_id: int, *writes: bytes) -> Transaction:
    return Transaction(txn_id, clock.now(), [], list(writes))


class _Store:
    """Keeps the pieces it is given; each write waits until `gate` is set."""

    def __init__(self) -> None:
        self.pieces: dict[int, bytes] = {}
        self.gate = asyncio.Event()
        self.fail_with: BaseException | None = None

    async def write(self, batch_seq: int, data: bytes) -> None:
        await self.gate.wait()
        if self.fail_with is not None:
            raise self.fail_with
        self.pieces[batch_seq] = data


async def _until(condition: Callable[[], bool], what: str) -> None:
    for _ in range(2000):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"timed out waiting for {what}")


def _scheduler(store: _Store, **kwargs: int) -> tuple[GroupCommitScheduler, ExternalDurableStep]:
    step = ExternalDurableStep(store.write, asyncio.get_running_loop(), **kwargs)
    clock = Clock(node=1)
    return GroupCommitScheduler(None, clock, CommitOptions(), durable_step=step), step


def test_answers_wait_for_the_store_and_a_new_engine_replays_the_pieces() -> None:
    async def run() -> None:
        store = _Store()
        scheduler, step = _scheduler(store, max_in_flight=2)
        clock = scheduler.clock
        assert scheduler.durability == "external"
        rival = _txn(clock, 2, b"x")  # started before 1 commits
        one = _txn(clock, 1, b"x")
        first = asyncio.ensure_future(scheduler.submit(one))
        await _until(lambda: step.pending() == 1, "the first batch to be pending")
        # A later batch is decided against the pending one (conflict on x) and waits too.
        late = asyncio.ensure_future(scheduler.submit_many([rival, _txn(clock, 3, b"y")]))
        await _until(lambda: step.pending() == 2, "the second batch to be pending")
        await asyncio.sleep(0.05)
        assert not first.done() and not late.done(), "nothing answered before durable"
        assert scheduler.status(1) is None, "a pending decision is not reported"
        store.gate.set()
        committed = await first
        assert isinstance(committed, Committed)
        aborted, other = await late
        assert isinstance(aborted, Aborted) and aborted.conflict is not None
        assert aborted.conflict.key == b"x" and isinstance(other, Committed)
        assert scheduler.status(1) == committed
        # Idempotent resubmission once durable.
        assert await scheduler.submit(one) == committed
        await scheduler.aclose()
        assert sorted(store.pieces) == [1, 2]

        # The next leader: replay, then the same decisions and a clock above them.
        successor = CommitEngine(None, Clock(node=2), durability="external", first_batch_seq=3)
        replayed = [successor.replay_piece(seq, data) for seq, data in sorted(store.pieces.items())]
        assert replayed == [(1, 0), (1, 1)]
        assert successor.status(1) == committed
        assert successor.next_batch_seq == 3
        assert successor.clock.now() > other.commit_ts
        with pytest.raises(CommitLogCorruptError, match="7"):
            successor.replay_piece(7, b"\x01\x05\x00")

    asyncio.run(run())


def test_a_failed_write_answers_every_pending_batch_outcome_unknown_and_stops() -> None:
    async def run() -> None:
        store = _Store()
        failures: list[str] = []
        scheduler, step = _scheduler(store, max_in_flight=4)
        step.on_failure = failures.append
        clock = scheduler.clock
        pending = [
            asyncio.ensure_future(scheduler.submit(_txn(clock, i, f"k{i}".encode())))
            for i in range(1, 4)
        ]
        await _until(lambda: step.pending() >= 1, "pending batches")
        store.fail_with = TimeoutError("etcd txn deadline exceeded")
        store.gate.set()
        for future in pending:
            with pytest.raises(CommitOutcomeUnknownError, match="etcd txn deadline exceeded"):
                await future
        assert failures and "TimeoutError" in failures[0]
        assert step.failure == failures[0]
        # Stopped until reopened: nothing more is decided, nothing is guessed.
        with pytest.raises(CommitLogError, match="reopened"):
            await scheduler.submit(_txn(clock, 9, b"z"))
        assert scheduler.status(1) is None
        assert store.pieces == {}
        await scheduler.aclose()

    asyncio.run(run())


def test_a_large_batch_is_split_into_pieces_never_refused() -> None:
    async def run() -> None:
        store = _Store()
        store.gate.set()
        scheduler, _ = _scheduler(store, max_batch_bytes=1024)
        clock = scheduler.clock
        txns = [_txn(clock, i, f"key-{i:05d}".encode() * 4) for i in range(1, 201)]
        answers = await scheduler.submit_many(txns)
        assert all(isinstance(answer, Committed) for answer in answers)
        assert len(store.pieces) > 1
        assert all(len(piece) <= 1024 for piece in store.pieces.values())
        await scheduler.aclose()

    asyncio.run(run())


def test_bad_configurations_are_refused() -> None:
    async def run() -> None:
        store = _Store()
        loop = asyncio.get_running_loop()
        with pytest.raises(ValueError, match="max_in_flight"):
            ExternalDurableStep(store.write, loop, max_in_flight=0)
        with pytest.raises(ValueError, match="keeps no local log"):
            GroupCommitScheduler(
                "somewhere", Clock(), durable_step=ExternalDurableStep(store.write, loop)
            )

    asyncio.run(run())
    with pytest.raises(ValueError, match="max_batch_bytes must be at least 256"):
        CommitEngine(None, Clock(), durability="external", max_batch_bytes=10)
    engine = CommitEngine(None, Clock(), durability="memory")
    with pytest.raises(ValueError, match="not pending"):
        engine.confirm(1)
    assert engine.pending_batches == 0 and engine.next_batch_seq is None
    assert engine.fail("nothing pending") == []


def test_the_local_step_answers_at_once() -> None:
    clock = Clock()
    with GroupCommitScheduler(
        None, clock, CommitOptions(durability="memory"), durable_step=LocalDurableStep()
    ) as scheduler:
        answer = scheduler.submit_blocking(_txn(clock, 1, b"a"))
        assert isinstance(answer, Committed)
        ticket, pieces, released = scheduler.engine.decide([_txn(clock, 2, b"b"), 1])
        assert pieces == []
        assert [t for t, _ in released] == [ticket]
        assert released[0][1][1] == answer
        scheduler.engine.raise_low_watermark(Timestamp(clock.now().physical + 10**6))
        assert scheduler.engine.low_watermark is not None


def test_closing_with_unconfirmed_writes_answers_them_outcome_unknown() -> None:
    async def run() -> None:
        store = _Store()  # its gate never opens: the write stays in flight
        scheduler, step = _scheduler(store)
        pending = asyncio.ensure_future(scheduler.submit(_txn(scheduler.clock, 1, b"a")))
        await _until(lambda: step.pending() == 1, "the batch to be pending")
        await asyncio.to_thread(scheduler.close, 0.2)
        with pytest.raises(CommitOutcomeUnknownError, match="closed while decision writes"):
            await pending
        store.gate.set()  # the late write finds the engine closed: nothing more is answered
        await asyncio.sleep(0.05)
        assert list(store.pieces) == [1]

    asyncio.run(run())


class _GatedLocalStep(LocalDurableStep):
    """The local step whose sync thread starts syncing only once `gate` is set."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = threading.Event()

    def _sync_loop(self, engine: CommitEngine) -> None:
        self.gate.wait()
        super()._sync_loop(engine)


def test_the_local_step_syncs_beside_the_writer_and_answers_only_after_the_sync(
    tmp_path: Path,
) -> None:
    async def run() -> None:
        step = _GatedLocalStep()
        clock = Clock(node=1)
        scheduler = GroupCommitScheduler(tmp_path, clock, CommitOptions(), durable_step=step)
        try:
            winner, loser = _txn(clock, 1, b"x"), _txn(clock, 2, b"x")
            first = asyncio.ensure_future(scheduler.submit(winner))
            await _until(lambda: step.pending() == 1, "the first batch to be written")
            # Decided against the unsynced first batch; the resubmission of id 1 waits for it.
            second = asyncio.ensure_future(scheduler.submit_many([loser, winner]))
            await _until(lambda: step.pending() == 2, "the second batch to be written")
            # Two batches unsynced: the writer waits before deciding a third.
            third = asyncio.ensure_future(scheduler.submit(_txn(clock, 3, b"y")))
            await asyncio.sleep(0.2)
            assert step.pending() == 2 and scheduler.engine.status(3) is None
            assert not (first.done() or second.done() or third.done())
            assert scheduler.engine.status(1) is None, "not reported before it is synced"
            step.gate.set()
            answer = await first
            assert isinstance(answer, Committed)
            lost, again = await second
            assert isinstance(lost, Aborted) and again == answer
            assert isinstance(await third, Committed)
            assert scheduler.engine.status(1) == answer
        finally:
            step.gate.set()
            await asyncio.to_thread(scheduler.close)
        assert step.pending() == 0
        reopened = CommitEngine(tmp_path, Clock(node=1))
        assert reopened.status(1) == answer and isinstance(reopened.status(3), Committed)
        reopened.close()

    asyncio.run(run())


def test_the_local_step_answers_everything_before_close_returns(tmp_path: Path) -> None:
    async def run() -> None:
        clock = Clock(node=1)
        step = LocalDurableStep()
        scheduler = GroupCommitScheduler(tmp_path, clock, CommitOptions(), durable_step=step)
        futures = [scheduler.submit(_txn(clock, i, b"k%d" % i)) for i in range(1, 50)]
        await asyncio.to_thread(scheduler.close)
        assert step.pending() == 0 and scheduler.engine.closed
        answers = await asyncio.gather(*futures)
        assert all(isinstance(answer, Committed) for answer in answers)

    asyncio.run(run())


class _BrokenSync:
    """An engine whose `sync_parked` fails (everything else is the real engine's)."""

    def __init__(self, engine: CommitEngine) -> None:
        self.engine = engine

    def sync_parked(self) -> list[object] | None:
        raise RuntimeError("the sync broke")

    def close(self) -> None:
        self.engine.close()


class _BrokenSyncStep(_GatedLocalStep):
    def _sync_loop(self, engine: CommitEngine) -> None:
        self.gate.wait()
        LocalDurableStep._sync_loop(self, cast("CommitEngine", _BrokenSync(engine)))


def test_a_failed_sync_thread_answers_every_parked_batch_outcome_unknown_and_closes(
    tmp_path: Path,
) -> None:
    async def run() -> None:
        step = _BrokenSyncStep()
        clock = Clock(node=1)
        scheduler = GroupCommitScheduler(tmp_path, clock, CommitOptions(), durable_step=step)
        try:
            first = asyncio.ensure_future(scheduler.submit(_txn(clock, 1, b"x")))
            await _until(lambda: step.pending() == 1, "the first batch to be written")
            step.gate.set()
            with pytest.raises(CommitOutcomeUnknownError, match="the sync broke"):
                await first
            # The engine is closed: later batches are refused, never left unanswered.
            with pytest.raises(CommitLogError):
                await scheduler.submit(_txn(clock, 2, b"y"))
            assert scheduler.engine.closed and step.pending() == 0
        finally:
            step.gate.set()
            await asyncio.to_thread(scheduler.close)

    asyncio.run(run())
