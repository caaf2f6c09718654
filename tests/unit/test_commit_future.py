"""The future ``GroupCommitScheduler.submit`` returns (``CommitFuture``): asyncio's future protocol
(await, ``wait_for``, ``gather``, ``shield``, ``ensure_future``, cancellation, done callbacks),
and its answer running the awaiting tasks' wake-ups in the batch's one call."""

import asyncio
import contextvars
from collections.abc import Iterator

import pytest
from hlc_oracle import (
    Aborted,
    Clock,
    CommitFuture,
    CommitOptions,
    Committed,
    GroupCommitScheduler,
    Transaction,
    TransactionMismatchError,
)

WAIT_S = 10.0
#: The writer waits up to 0.3 s for a batch to fill, so what one test submits shares a batch.
GATHERING = CommitOptions(durability="memory", max_batch_size=1000, max_batch_delay_us=300_000)


@pytest.fixture
def scheduler() -> Iterator[GroupCommitScheduler]:
    with GroupCommitScheduler(None, Clock(node=1), CommitOptions(durability="memory")) as sched:
        yield sched


def txn(scheduler: GroupCommitScheduler, txn_id: int, key: bytes) -> Transaction:
    return Transaction(txn_id, scheduler.clock.now(), [], [key])


def test_it_is_an_asyncio_future_of_the_running_loop(scheduler: GroupCommitScheduler) -> None:
    async def scenario() -> None:
        future = scheduler.submit(txn(scheduler, 1, b"a"))
        assert isinstance(future, CommitFuture) and asyncio.isfuture(future)
        assert future.get_loop() is asyncio.get_running_loop()
        assert not future.done() and not future.cancelled()
        assert repr(future) == "<CommitFuture pending>"
        with pytest.raises(asyncio.InvalidStateError, match="Result is not set"):
            future.result()
        with pytest.raises(asyncio.InvalidStateError, match="Exception is not set"):
            future.exception()
        outcome = await future
        assert isinstance(outcome, Committed) and outcome.txn_id == 1
        assert future.done() and future.result() is outcome and future.exception() is None
        assert repr(future) == "<CommitFuture finished>"
        assert await future is outcome  # awaiting a done future again returns its answer
        assert asyncio.ensure_future(future) is future

    asyncio.run(scenario())


def test_wait_for_gather_and_shield_take_it(scheduler: GroupCommitScheduler) -> None:
    async def scenario() -> None:
        first = await asyncio.wait_for(scheduler.submit(txn(scheduler, 1, b"a")), WAIT_S)
        assert isinstance(first, Committed)
        both = await asyncio.gather(
            scheduler.submit(txn(scheduler, 2, b"b")), scheduler.submit(txn(scheduler, 3, b"b"))
        )
        assert isinstance(both[0], Committed) and isinstance(both[1], Aborted)
        shielded = await asyncio.shield(scheduler.submit(txn(scheduler, 4, b"c")))
        assert isinstance(shielded, Committed)

    asyncio.run(scenario())


def test_a_refusal_is_raised_where_it_is_awaited(scheduler: GroupCommitScheduler) -> None:
    async def scenario() -> None:
        start = scheduler.clock.now()
        assert isinstance(await scheduler.submit(Transaction(1, start, [], [b"a"])), Committed)
        future = scheduler.submit(Transaction(1, start, [], [b"other"]))
        with pytest.raises(TransactionMismatchError):
            await future
        assert isinstance(future.exception(), TransactionMismatchError)
        with pytest.raises(TransactionMismatchError):
            future.result()
        assert repr(future) == "<CommitFuture finished with an exception>"

    asyncio.run(scenario())


def test_a_cancelled_caller_gets_cancelled_error_and_the_others_answers() -> None:
    async def scenario() -> None:
        errors: list[dict[str, object]] = []
        asyncio.get_running_loop().set_exception_handler(lambda _, context: errors.append(context))
        with GroupCommitScheduler(None, Clock(node=1), GATHERING) as scheduler:
            waiting = asyncio.ensure_future(scheduler.submit(txn(scheduler, 1, b"a")))
            cancelled = scheduler.submit(txn(scheduler, 2, b"b"))
            task = asyncio.create_task(_await(cancelled))
            await asyncio.sleep(0)  # the task awaits the future
            assert task.cancel("enough")
            with pytest.raises(asyncio.CancelledError):
                await task
            assert cancelled.cancelled() and not cancelled.cancel()
            with pytest.raises(asyncio.CancelledError, match="enough"):
                cancelled.result()
            assert repr(cancelled) == "<CommitFuture cancelled>"
            assert isinstance(await asyncio.wait_for(waiting, WAIT_S), Committed)
            assert isinstance(scheduler.status(2), Committed)  # decided, only nobody listened
        assert errors == []

    asyncio.run(scenario())


async def _await(future: CommitFuture) -> object:
    return await future


def test_wait_for_times_out_by_cancelling_it() -> None:
    async def scenario() -> None:
        options = CommitOptions(
            durability="memory", max_batch_size=1000, max_batch_delay_us=2_000_000
        )
        with GroupCommitScheduler(None, Clock(node=1), options) as scheduler:
            future = scheduler.submit(txn(scheduler, 1, b"a"))
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(future, 0.01)
            assert future.cancelled()

    asyncio.run(scenario())


def test_done_callbacks_run_in_their_context_once_answered(
    scheduler: GroupCommitScheduler,
) -> None:
    variable: contextvars.ContextVar[str] = contextvars.ContextVar("variable", default="unset")

    async def scenario() -> None:
        seen: list[tuple[str, object]] = []

        def callback(done: CommitFuture) -> None:
            seen.append((variable.get(), done.result()))

        def removed(_: CommitFuture) -> None:
            seen.append(("removed", None))

        future = scheduler.submit(txn(scheduler, 1, b"a"))
        variable.set("at add")
        future.add_done_callback(callback)
        future.add_done_callback(removed)
        future.add_done_callback(removed)
        assert future.remove_done_callback(removed) == 2
        variable.set("later")
        outcome = await future
        assert seen == [("at add", outcome)]
        future.add_done_callback(callback)  # done already: scheduled
        assert len(seen) == 1
        await asyncio.sleep(0)
        assert seen == [("at add", outcome), ("later", outcome)]

    asyncio.run(scenario())


def test_a_failing_callback_goes_to_the_exception_handler_and_the_rest_run() -> None:
    async def scenario() -> None:
        errors: list[dict[str, object]] = []
        asyncio.get_running_loop().set_exception_handler(lambda _, context: errors.append(context))
        with GroupCommitScheduler(None, Clock(node=1), GATHERING) as scheduler:
            first = scheduler.submit(txn(scheduler, 1, b"a"))
            second = scheduler.submit(txn(scheduler, 2, b"b"))

            def fails(_: CommitFuture) -> None:
                raise ValueError("callback failed")

            first.add_done_callback(fails)
            assert isinstance(await asyncio.wait_for(second, WAIT_S), Committed)
            assert isinstance(first.result(), Committed)
        assert len(errors) == 1 and isinstance(errors[0]["exception"], ValueError)
        assert errors[0]["future"] is first

    asyncio.run(scenario())


def test_callbacks_run_in_order_and_a_failed_removal_keeps_them(
    scheduler: GroupCommitScheduler,
) -> None:
    async def scenario() -> None:
        order: list[str] = []

        class RefusesComparing:
            def __eq__(self, other: object) -> bool:
                raise RuntimeError("no comparing")

            __hash__ = None  # type: ignore[assignment]

            def __call__(self, _: CommitFuture) -> None:
                order.append("refuses comparing")

        future = scheduler.submit(txn(scheduler, 1, b"a"))
        future.add_done_callback(lambda _: order.append("first"))
        future.add_done_callback(RefusesComparing())
        future.add_done_callback(lambda _: order.append("last"))
        with pytest.raises(RuntimeError, match="no comparing"):
            future.remove_done_callback(print)
        await future
        assert order == ["first", "refuses comparing", "last"]

    asyncio.run(scenario())
