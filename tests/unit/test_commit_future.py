"""The future ``GroupCommitScheduler.submit`` returns (``CommitFuture``): asyncio's future protocol
(await, ``wait_for``, ``gather``, ``shield``, ``ensure_future``, cancellation, done callbacks),
and its answer running the awaiting tasks' wake-ups in the batch's one call; an exception never
retrieved is reported when it is dropped, as asyncio's futures do."""

import asyncio
import contextvars
import gc
import subprocess
import sys
import textwrap
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


async def _refused(scheduler: GroupCommitScheduler, txn_id: int) -> CommitFuture:
    """A future refused (a transaction id decided before with other keys), its exception not
    retrieved: waited for with ``done()`` only."""
    start = scheduler.clock.now()
    assert isinstance(await scheduler.submit(Transaction(txn_id, start, [], [b"a"])), Committed)
    future = scheduler.submit(Transaction(txn_id, start, [], [b"other"]))
    for _ in range(int(WAIT_S / 0.005)):
        if future.done():
            return future
        await asyncio.sleep(0.005)
    raise AssertionError("the refusal never came")


def test_an_exception_never_retrieved_is_reported_when_the_future_is_dropped(
    scheduler: GroupCommitScheduler,
) -> None:
    async def scenario() -> None:
        reports: list[dict[str, object]] = []
        asyncio.get_running_loop().set_exception_handler(lambda _, context: reports.append(context))
        future = await _refused(scheduler, 1)
        assert future._log_traceback
        error = future.exception()  # retrieved: not reported
        assert isinstance(error, TransactionMismatchError) and not future._log_traceback
        del future
        forgotten = await _refused(scheduler, 2)
        del forgotten
        gc.collect()
        assert len(reports) == 1, reports
        (report,) = reports
        assert report["message"] == "CommitFuture exception was never retrieved"
        assert isinstance(report["exception"], TransactionMismatchError)
        # The future itself is gone: a finished stand-in of the same loop, with its exception.
        stand_in = report["future"]
        assert isinstance(stand_in, CommitFuture) and stand_in.done()
        assert stand_in.get_loop() is asyncio.get_running_loop()
        assert stand_in.exception() is report["exception"]
        reports.clear()
        del report, stand_in
        gc.collect()
        assert reports == []  # the stand-in's exception was retrieved above

    asyncio.run(scenario())


def test_an_exception_retrieved_any_way_or_an_answer_is_not_reported(
    scheduler: GroupCommitScheduler,
) -> None:
    async def scenario() -> None:
        reports: list[dict[str, object]] = []
        asyncio.get_running_loop().set_exception_handler(lambda _, context: reports.append(context))
        awaited = await _refused(scheduler, 1)
        with pytest.raises(TransactionMismatchError):
            await awaited
        resulted = await _refused(scheduler, 2)
        with pytest.raises(TransactionMismatchError):
            resulted.result()
        gathered = await _refused(scheduler, 3)
        (outcome,) = await asyncio.gather(gathered, return_exceptions=True)
        assert isinstance(outcome, TransactionMismatchError)
        marked = await _refused(scheduler, 4)
        marked._log_traceback = False  # as asyncio lets a caller say it was seen
        with pytest.raises(ValueError, match="only be set to False"):
            marked._log_traceback = True
        answered = scheduler.submit(txn(scheduler, 5, b"b"))
        while not answered.done():
            await asyncio.sleep(0.005)
        cancelled = scheduler.submit(txn(scheduler, 6, b"c"))
        cancelled.cancel()
        del awaited, resulted, gathered, outcome, marked, answered, cancelled
        gc.collect()
        assert reports == []

    asyncio.run(scenario())


def test_nothing_is_reported_at_interpreter_shutdown() -> None:
    """A future still held when the interpreter exits (its loop closed, modules being torn
    down) is dropped without a report and without an error."""
    program = textwrap.dedent(
        """
        import asyncio
        from hlc_oracle import Clock, CommitOptions, GroupCommitScheduler, Transaction

        KEPT = []

        async def main():
            options = CommitOptions(durability="memory")
            scheduler = GroupCommitScheduler(None, Clock(node=1), options)
            start = scheduler.clock.now()
            await scheduler.submit(Transaction(1, start, [], [b"a"]))
            future = scheduler.submit(Transaction(1, start, [], [b"other"]))
            while not future.done():
                await asyncio.sleep(0.005)
            KEPT.append(future)
            scheduler.close()

        asyncio.run(main())
        print("done")
        """
    )
    ran = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, timeout=60, check=False
    )
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.strip() == "done"
    assert ran.stderr == ""
