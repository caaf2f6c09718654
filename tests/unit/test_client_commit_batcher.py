"""CommitBatcher and the commit stream pool on their own: which messages hold a slot, and which
stream a message goes on, when a node holds some messages (a new leader holding what was sent
under the old one until its decision history has loaded).

The send function decides with a real in-process scheduler (the server's group commit), behind
an ``await``; it holds the messages that carry a transaction started under the "old leader"
until the test releases them, and has the client retry the ones the "old leader" refused.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

import grpc
import pytest
from hlc_oracle import Clock, Committed, GroupCommitScheduler, Timestamp, Transaction
from hlc_oracle._core import encode_commit_request
from hlc_oracle.client import CommitBatcher, OracleTimeoutError, commit_streams
from hlc_oracle.client.wire import CommitAnswers

WAIT_S = 10.0
#: The calls' timeout where the test does not look at it: far above any wait here.
CALL_TIMEOUT_S = 60.0


class HoldingNode:
    """A real scheduler behind ``send``: a message with a transaction started at or below
    ``old_below`` is held until :attr:`release` is set; one with an id in :attr:`refused_ids`
    has its first attempt refused (``retrying`` is called, as the client does before its second
    attempt), and is then held too."""

    def __init__(self, scheduler: GroupCommitScheduler, old_below: Timestamp) -> None:
        self.scheduler = scheduler
        self.old_below = old_below
        self.release = asyncio.Event()
        self.refused_ids: set[int] = set()
        self.sent: list[list[int]] = []
        self.deadlines: list[float] = []
        self.held = 0

    async def send(
        self,
        transactions: list[Transaction],
        retrying: Callable[[], None],
        message: bytes | None = None,
        deadline: float = float("inf"),
    ) -> CommitAnswers:
        self.deadlines.append(deadline)
        self.sent.append([txn.txn_id for txn in transactions])
        await asyncio.sleep(0.001)
        if any(txn.txn_id in self.refused_ids for txn in transactions):
            retrying()
        if any(txn.start_ts <= self.old_below for txn in transactions):
            self.held += 1
            await self.release.wait()
            self.held -= 1
        return await self.scheduler.submit_many(transactions)


async def until(condition: Callable[[], bool]) -> None:
    for _ in range(int(WAIT_S / 0.005)):
        if condition():
            return
        await asyncio.sleep(0.005)
    raise AssertionError("condition not reached")


@pytest.mark.parametrize("how", ["refused then held", "held on a first attempt"])
def test_held_messages_leave_their_slots_to_new_work(tmp_path: Path, how: str) -> None:
    """Six messages held (more than the four slots): new work still goes out and is decided
    while they wait; then they are decided too, each caller with its own transaction. A retried
    message leaves its slot at once (here the time rule is out of reach); one held on its first
    attempt after ``held_after_s``."""
    clock = Clock(node=1)

    async def main() -> None:
        async with GroupCommitScheduler(tmp_path, clock) as scheduler:
            old_start = clock.now()
            node = HoldingNode(scheduler, old_start)
            held_after_s = 60.0 if how == "refused then held" else 0.05
            batcher = CommitBatcher(node.send, max_in_flight=4, held_after_s=held_after_s)
            old = [Transaction(n, old_start, [], [b"old/%d" % n]) for n in range(1, 7)]
            if how == "refused then held":
                node.refused_ids = {txn.txn_id for txn in old}
            held = []
            for txn in old:  # one at a time: each its own message
                held.append(batcher.submit(txn, CALL_TIMEOUT_S))
                await until(lambda: node.held == len(held) or len(node.sent) > len(held))
            await until(lambda: node.held == len(old))
            fresh = Transaction(100, clock.now(), [], [b"fresh"])
            decided = await asyncio.wait_for(batcher.submit(fresh, CALL_TIMEOUT_S), WAIT_S)
            assert isinstance(decided, Committed) and decided.txn_id == 100
            assert not any(future.done() for future in held)
            node.release.set()
            answers = await asyncio.wait_for(asyncio.gather(*held), WAIT_S)
            assert [answer.txn_id for answer in answers] == [txn.txn_id for txn in old]
            assert all(isinstance(answer, Committed) for answer in answers)
            await batcher.close()

    asyncio.run(main())


def test_at_most_twice_the_slots_are_in_flight(tmp_path: Path) -> None:
    """However many messages are held, at most ``2 * max_in_flight`` are in flight; the others
    wait merged, and go out once held ones are answered."""
    clock = Clock(node=1)

    async def main() -> None:
        async with GroupCommitScheduler(tmp_path, clock) as scheduler:
            old_start = clock.now()
            node = HoldingNode(scheduler, old_start)
            batcher = CommitBatcher(node.send, max_in_flight=2, held_after_s=0.02)
            futures = []
            for n in range(1, 21):
                futures.append(
                    batcher.submit(Transaction(n, old_start, [], [b"k/%d" % n]), CALL_TIMEOUT_S)
                )
                await asyncio.sleep(0.01)
            await until(lambda: node.held == 4)
            await asyncio.sleep(0.1)  # more time for the timers: still four
            assert node.held == 4 and len(node.sent) == 4
            node.release.set()
            answers = await asyncio.wait_for(asyncio.gather(*futures), WAIT_S)
            assert [answer.txn_id for answer in answers] == list(range(1, 21))
            assert sorted(n for message in node.sent for n in message) == list(range(1, 21))
            await batcher.close()

    asyncio.run(main())


def test_concurrent_batches_go_out_merged_each_caller_answered_its_own_part(
    tmp_path: Path,
) -> None:
    """``submit_many``: while a message is in flight (one slot), the batches that arrive go out
    together in the next message, their encodings joined; each caller gets the answers of its
    own batch, in order. A caller cancelled while it waited is left out of the message; the
    byte limit starts a new message."""
    clock = Clock(node=1)

    async def main() -> None:
        async with GroupCommitScheduler(tmp_path, clock) as scheduler:
            start = clock.now()
            node = HoldingNode(scheduler, Timestamp(0, 0, 0))
            encoded: list[bytes | None] = []

            async def send(
                transactions: list[Transaction],
                retrying: Callable[[], None],
                message: bytes | None,
                deadline: float,
            ) -> CommitAnswers:
                encoded.append(message)
                assert message == encode_commit_request(transactions)
                return await node.send(transactions, retrying, message, deadline)

            limit = [1 << 20]
            batcher = CommitBatcher(
                send, max_batch=10_000, max_in_flight=1, max_bytes=lambda: limit[0]
            )

            def batch(first: int, count: int) -> list[Transaction]:
                return [
                    Transaction(n, start, [], [b"m/%d" % n]) for n in range(first, first + count)
                ]

            def submit(txns: list[Transaction]) -> asyncio.Future[CommitAnswers]:
                started = time.monotonic()
                return batcher.submit_many(
                    txns, encode_commit_request(txns), CALL_TIMEOUT_S, started
                )

            batches = [batch(1 + 100 * b, 10 + b) for b in range(5)]
            futures = [submit(txns) for txns in batches]
            futures[3].cancel()
            answers = await asyncio.wait_for(
                asyncio.gather(*futures, return_exceptions=True), WAIT_S
            )
            # The first alone (the slot was free), then the others but the cancelled one, merged.
            assert node.sent == [
                [t.txn_id for t in batches[0]],
                [t.txn_id for b in (1, 2, 4) for t in batches[b]],
            ]
            for b in (0, 1, 2, 4):
                assert [a.txn_id for a in answers[b]] == [t.txn_id for t in batches[b]]
                assert all(isinstance(a, Committed) for a in answers[b])
            assert isinstance(answers[3], asyncio.CancelledError)
            # A byte limit under two batches' size: each goes on its own.
            limit[0] = len(encode_commit_request(batches[0])) + 10
            node.sent.clear()
            more = [batch(1000 + 100 * b, 10) for b in range(3)]
            answers = await asyncio.wait_for(asyncio.gather(*map(submit, more)), WAIT_S)
            assert node.sent == [[t.txn_id for t in txns] for txns in more]
            assert [len(a) for a in answers] == [10, 10, 10]
            await batcher.close()

    asyncio.run(main())


@pytest.mark.parametrize(("slots", "settled"), [(2, {40}), (3, {20, 30})])
def test_callers_answered_together_share_the_slots_evenly(
    tmp_path: Path, slots: int, settled: set[int]
) -> None:
    """Eight callers of 10 transactions in a loop: the first ones go alone (each found a slot
    free), then every message carries about an even share of the work outstanding (two slots:
    four callers; three: three, three and two), instead of settling into one of seven callers
    and one of one (each group of callers answered together coming back together)."""
    clock = Clock(node=1)

    async def main() -> None:
        async with GroupCommitScheduler(tmp_path, clock) as scheduler:
            start = clock.now()
            node = HoldingNode(scheduler, Timestamp(0, 0, 0))
            # No message moves to a held slot, however slow the host.
            batcher = CommitBatcher(
                node.send, max_batch=10_000, max_in_flight=slots, held_after_s=WAIT_S
            )
            ids = iter(range(1, 1_000_000))

            async def caller() -> None:
                for _ in range(6):
                    txns = [Transaction(next(ids), start, [], [b"e"]) for _ in range(10)]
                    answers = await batcher.submit_many(
                        txns, encode_commit_request(txns), CALL_TIMEOUT_S, time.monotonic()
                    )
                    assert [a.txn_id for a in answers] == [t.txn_id for t in txns]

            await asyncio.wait_for(asyncio.gather(*(caller() for _ in range(8))), WAIT_S)
            sizes = [len(message) for message in node.sent]
            assert sum(sizes) == 8 * 6 * 10
            assert sizes[:slots] == [10] * slots
            assert set(sizes[slots:-slots]) == settled, sizes  # the last: what is left
            await batcher.close()

    asyncio.run(main())


def test_the_wait_for_a_slot_counts_toward_the_call_s_timeout(tmp_path: Path) -> None:
    """A caller still waiting for a slot when its timeout runs out fails as a timed-out call
    does, saying it was never sent, and is not sent; a message gets its callers' earliest
    deadline (each call's start plus its timeout)."""
    clock = Clock(node=1)

    async def main() -> None:
        async with GroupCommitScheduler(tmp_path, clock) as scheduler:
            old_start = clock.now()
            node = HoldingNode(scheduler, old_start)
            batcher = CommitBatcher(node.send, max_in_flight=1, held_after_s=60.0)
            started = time.monotonic()
            held = batcher.submit(Transaction(1, old_start, [], [b"d/1"]), CALL_TIMEOUT_S)
            await until(lambda: node.held == 1)
            assert node.deadlines == [pytest.approx(started + CALL_TIMEOUT_S, abs=1.0)]
            queued_at = time.monotonic()
            # The call's own timeout, as given: not a float's leftover digits.
            with pytest.raises(
                OracleTimeoutError, match=r"no answer within 0\.2 s: .*never sent"
            ) as raised:
                await asyncio.wait_for(
                    batcher.submit(Transaction(2, clock.now(), [], [b"d/2"]), 0.2), WAIT_S
                )
            assert raised.value.code is grpc.StatusCode.DEADLINE_EXCEEDED
            assert time.monotonic() - queued_at < WAIT_S / 2  # its timeout, not the held message's
            # Two more wait, the second with a shorter timeout: merged, the message gets the
            # earlier deadline.
            longer = batcher.submit(Transaction(3, clock.now(), [], [b"d/3"]), CALL_TIMEOUT_S)
            shorter_started = time.monotonic()
            shorter = batcher.submit(Transaction(4, clock.now(), [], [b"d/4"]), 30.0)
            node.release.set()
            answers = await asyncio.wait_for(asyncio.gather(held, longer, shorter), WAIT_S)
            assert [answer.txn_id for answer in answers] == [1, 3, 4]
            assert node.sent == [[1], [3, 4]]  # the one that timed out waiting never went
            assert node.deadlines[1] == pytest.approx(shorter_started + 30.0, abs=1.0)
            assert scheduler.status(2) is None
            await batcher.close()

    asyncio.run(main())


def test_held_after_must_be_positive() -> None:
    async def send(
        transactions: list[Transaction],
        retrying: Callable[[], None],
        message: bytes | None,
        deadline: float,
    ) -> CommitAnswers:
        raise AssertionError("not called")

    with pytest.raises(ValueError, match="held_after_s must be above 0"):
        CommitBatcher(send, held_after_s=0)


def test_a_stream_pool_prefers_an_idle_stream_then_a_new_one_then_the_one_that_answered_last() -> (
    None
):
    async def main() -> None:
        channel = grpc.aio.insecure_channel("127.0.0.1:1")  # never connected: streams open lazily
        pool = commit_streams(channel, size=3)
        first = pool.pick()
        assert pool.pick() is first  # idle: reused, no second stream
        first.outstanding = 1  # a message waits on it
        second = pool.pick()
        assert second is not first and len(pool.streams) == 2
        second.outstanding = 2
        third = pool.pick()
        assert len(pool.streams) == 3
        third.outstanding = 1
        first.progressed, second.progressed, third.progressed = 5.0, 9.0, 1.0
        assert pool.pick() is second  # all busy, the pool full: the one that answered last
        third.outstanding = 0
        assert pool.pick() is third
        for stream in pool.streams:
            stream.outstanding = 0
        await pool.close()
        await channel.close()

    asyncio.run(main())


def test_a_request_timed_out_before_its_call_started_leaves_no_task_behind() -> None:
    # A call that never starts (nothing listens): its first write waits for the start in a task
    # of its own, which must end with the request, not linger until garbage collection destroys
    # it pending ("Task was destroyed but it is pending!").
    async def main() -> None:
        channel = grpc.aio.insecure_channel("127.0.0.1:1")
        pool = commit_streams(channel, size=1)
        with pytest.raises(OracleTimeoutError):
            await pool.request(b"", timeout=0.2)
        await pool.close()
        assert asyncio.all_tasks() == {asyncio.current_task()}
        await channel.close()

    asyncio.run(main())
