"""``commit_many`` on a real server: answers in order, each transaction its own result or error,
batches split by encoded bytes under the message limit, concurrent calls pipelined, and the
``bench --mode commit-batch`` command."""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import threading
import time
from collections.abc import Callable

import grpc
import pytest
from hlc_oracle import Aborted, Committed, Timestamp, Transaction, TransactionTooLargeError
from hlc_oracle.client import (
    AsyncOracleClient,
    CommitManyResults,
    OracleClient,
    OracleError,
    OracleOutcomeUnknownError,
    RetryPolicy,
)

from tests.support.oracle_process import OracleProcess
from tests.support.tcp_proxy import TcpProxy


def test_results_come_in_order_each_transaction_with_its_own_result_or_error(
    start_oracle: Callable[..., OracleProcess],
) -> None:
    oracle = start_oracle("--set", "commit.max_write_keys=2", "--set", "commit.max_key_bytes=8")
    with OracleClient(oracle.target) as client:
        start = client.get_timestamp()
        decided = client.commit(Transaction(9, start, [], [b"d"]))
        assert isinstance(decided, Committed)
        future = Timestamp(start.physical + 3_600_000_000, 0, 0)
        batch = [
            Transaction(500, start, [], [b"a"]),
            Transaction(0, start, [], [b"k"]),  # id 0
            Transaction(3, start, [], [b"b", b"shared"]),
            Transaction(12, start, [], [b"x", b"y", b"z"]),  # more write keys than 2
            Transaction(77, start, [], [b"c", b"shared"]),  # loses "shared" to 3
            Transaction(13, start, [], [b"123456789"]),  # key over 8 bytes
            Transaction(14, future, [], [b"e"]),  # starts in the future
            Transaction(9, start, [], [b"other"]),  # a decided id with other keys
            Transaction(9, start, [], [b"d"]),  # the same: its first decision
            Transaction(41, start, [], [b"f"]),
        ]
        results = client.commit_many(batch)
        assert len(results) == len(batch)
        codes = {
            1: grpc.StatusCode.INVALID_ARGUMENT,
            3: grpc.StatusCode.RESOURCE_EXHAUSTED,
            5: grpc.StatusCode.RESOURCE_EXHAUSTED,
            6: grpc.StatusCode.OUT_OF_RANGE,
            7: grpc.StatusCode.ALREADY_EXISTS,
        }
        for index, code in codes.items():
            error = results[index]
            assert isinstance(error, OracleError) and error.code == code, (index, error)
        for index in (0, 2, 9):
            result = results[index]
            assert isinstance(result, Committed) and result.txn_id == batch[index].txn_id, result
            assert result.commit_ts > start
        lost = results[4]
        assert isinstance(lost, Aborted) and lost.txn_id == 77 and lost.reason == "conflict"
        assert lost.conflict is not None and lost.conflict.key == b"shared"
        assert results[8] == decided
        # Refused transactions were not decided; the decided ones answer their status.
        for txn_id in (12, 13, 14):
            assert client.transaction_status(txn_id) is None
        assert client.transaction_status(41) == results[9]
        assert client.commit_many([]) == []
        with pytest.raises(TypeError, match="sequence of Transaction"):
            client.commit_many(batch[0])  # type: ignore[arg-type]


def test_a_batch_over_the_message_limit_commits_whole_in_several_messages(
    start_oracle: Callable[..., OracleProcess],
) -> None:
    limit = 64 * 1024
    oracle = start_oracle("--max-message-bytes", str(limit))

    async def scenario() -> None:
        async with AsyncOracleClient(oracle.target, max_message_bytes=limit) as client:
            start = await client.get_timestamp()
            # 2,000 transactions of 40 keys of about 30 bytes: about 2.6 MB, 40 times the limit.
            batch = [
                Transaction(
                    10_000 + i,
                    start,
                    [],
                    [b"batch-%06d-key-%03d-padding-xx" % (i, k) for k in range(40)],
                )
                for i in range(2000)
            ]
            # One transaction of 3,000 keys (about 100 KB) fits in no message: its own error,
            # and the rest still commits.
            huge = Transaction(
                9, start, [], [b"huge-%06d-padding-padding-xxxx" % k for k in range(3000)]
            )
            batch.insert(1000, huge)
            results = list(await client.commit_many(batch))
            too_large = results.pop(1000)
            assert isinstance(too_large, TransactionTooLargeError), too_large
            assert "transaction 9 encodes to" in str(too_large) and str(limit) in str(too_large)
            batch.pop(1000)
            assert [r.txn_id for r in results if isinstance(r, Committed)] == [
                t.txn_id for t in batch
            ]
            assert await client.transaction_status(9) is None
            # Resent whole, the same ids return their first decisions.
            assert await client.commit_many(batch[:10]) == results[:10]

    asyncio.run(scenario())


def test_concurrent_calls_pipeline_on_the_stream_and_answer_their_own(
    oracle: OracleProcess,
) -> None:
    async def scenario() -> None:
        async with AsyncOracleClient(oracle.target) as client:
            start = await client.get_timestamp()
            batches = [
                [
                    Transaction(100_000 + 1000 * b + i, start, [], [b"p%d/%d" % (b, i)])
                    for i in range(200)
                ]
                for b in range(16)
            ]
            answers = await asyncio.gather(*(client.commit_many(batch) for batch in batches))
            for batch, results in zip(batches, answers, strict=True):
                assert all(isinstance(r, Committed) for r in results), results
                assert [r.txn_id for r in results] == [t.txn_id for t in batch]  # type: ignore[union-attr]
            # Batches merge with each other, never with commit()'s callers.
            assert client.commit_batches == 0

    asyncio.run(scenario())


def test_a_batch_with_a_wrong_element_fails_alone_among_merged_ones(
    oracle: OracleProcess,
) -> None:
    """Concurrent calls, one message in flight at a time: the calls that wait go out merged,
    and the one whose list holds something other than a ``Transaction`` raises ``TypeError``
    naming it, without failing the others."""

    async def scenario() -> None:
        async with AsyncOracleClient(oracle.target, commit_many_in_flight=1) as client:
            start = await client.get_timestamp()
            batches: list[list[object]] = [
                [
                    Transaction(200_000 + 100 * b + i, start, [], [b"w%d/%d" % (b, i)])
                    for i in range(50)
                ]
                for b in range(6)
            ]
            batches[3][7] = "not a transaction"
            answers = await asyncio.gather(
                *(client.commit_many(batch) for batch in batches),  # type: ignore[arg-type]
                return_exceptions=True,
            )
            wrong = answers.pop(3)
            assert isinstance(wrong, TypeError) and "txns[7] must be a Transaction, got str" in str(
                wrong
            ), wrong
            batches.pop(3)
            for batch, results in zip(batches, answers, strict=True):
                assert isinstance(results, CommitManyResults)
                assert results == [await client.transaction_status(t.txn_id) for t in batch]  # type: ignore[attr-defined]
                assert results.committed == len(batch)

    asyncio.run(scenario())


def test_concurrent_calls_are_in_flight_together(
    start_oracle: Callable[..., OracleProcess],
) -> None:
    server = start_oracle()
    with TcpProxy(server.target) as proxy, OracleClient(server.target) as direct:
        start = direct.get_timestamp()
        batches = [
            [Transaction(700 + 10 * b + i, start, [], [b"f%d/%d" % (b, i)]) for i in range(10)]
            for b in range(4)
        ]
        with OracleClient(proxy.target, timeout=30) as client:
            client.status()  # connected through the proxy
            proxy.hold_answers()
            with concurrent.futures.ThreadPoolExecutor(len(batches)) as pool:
                calls = [pool.submit(client.commit_many, batch) for batch in batches]
                # The server decides every batch while no answer reaches the client: the four
                # batches were in flight together on the client's streams (two messages at
                # once, then, as those go unanswered, held slots for the others).
                deadline = time.monotonic() + 20
                while any(direct.transaction_status(b[-1].txn_id) is None for b in batches):
                    assert time.monotonic() < deadline, "not every batch reached the server"
                    time.sleep(0.01)
                assert not any(call.done() for call in calls)
                proxy.cut()  # the answers are resent on a new stream: the same decisions
                results = [call.result(timeout=60) for call in calls]
        assert results == [[direct.transaction_status(t.txn_id) for t in b] for b in batches]
        assert all(isinstance(r, Committed) for batch_results in results for r in batch_results)


def _cut_after_decided(
    proxy: TcpProxy, direct: OracleClient, client: OracleClient, batch: list[Transaction]
) -> list[object]:
    """Sends ``batch`` with ``client`` through ``proxy``, holds the answer back until the server
    has decided the whole batch, then cuts the connection; what ``commit_many`` returned or
    raised."""
    client.status()  # connected through the proxy
    proxy.hold_answers()
    outcome: list[object] = []

    def call() -> None:
        try:
            outcome.append(client.commit_many(batch))
        except OracleError as err:
            outcome.append(err)

    caller = threading.Thread(target=call)
    caller.start()
    assert proxy.wait_for_held_answer()
    deadline = time.monotonic() + 20
    while direct.transaction_status(batch[-1].txn_id) is None:
        assert time.monotonic() < deadline, "the server never decided the batch"
        time.sleep(0.01)
    proxy.cut()  # the answer was on its way: the connection drops under it
    caller.join(timeout=60)
    return outcome


def test_a_batch_cut_after_it_was_decided_is_resent_to_the_same_decisions(
    start_oracle: Callable[..., OracleProcess],
) -> None:
    server = start_oracle()
    with TcpProxy(server.target) as proxy, OracleClient(server.target) as direct:
        start = direct.get_timestamp()
        batch = [Transaction(300 + i, start, [], [b"cut/%d" % i]) for i in range(100)]
        with OracleClient(proxy.target, timeout=20) as client:
            (results,) = _cut_after_decided(proxy, direct, client, batch)
        assert isinstance(results, CommitManyResults) and len(results) == len(batch)
        assert results == [direct.transaction_status(txn.txn_id) for txn in batch]
        assert all(isinstance(result, Committed) for result in results)
        # Spent retries: the outcome is unknown, not INTERNAL; resubmitting gets the decisions.
        again = [Transaction(500 + i, start, [], [b"cut2/%d" % i]) for i in range(100)]
        with OracleClient(proxy.target, timeout=2, retry=RetryPolicy(attempts=1)) as client:
            (failure,) = _cut_after_decided(proxy, direct, client, again)
        assert isinstance(failure, OracleOutcomeUnknownError), failure
        assert direct.commit_many(again) == [direct.transaction_status(t.txn_id) for t in again]


def test_bench_commit_batch_mode(oracle: OracleProcess) -> None:
    done = oracle.cli(
        "bench", "--mode", "commit-batch", "--batch", "100", "--concurrency", "4",
        "--requests", "2000", "--no-progress",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["mode"] == "commit-batch" and result["batch"] == 100
    assert result["calls"] == 2000  # transactions
    assert result["batches"] == 20 and result["unknown_outcomes"] == 0
    assert "committed transactions" in done.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--mode", "commit-batch", "--batch", "0"], "--batch: must be at least 1, got 0"),
        (["--batch", "5"], "--batch applies to --mode commit-batch only"),
        (["--mode", "commit", "--batch", "5"], "--batch applies to --mode commit-batch only"),
        (["--mode", "commit-batch", "--count", "5"], "commit-batch calls carry --batch"),
    ],
)
def test_bench_commit_batch_refuses_meaningless_arguments(
    oracle: OracleProcess, args: list[str], message: str
) -> None:
    done = oracle.cli("bench", "--requests", "10", "--no-progress", *args)
    assert done.returncode == 2, done.stdout + done.stderr
    assert message in done.stderr
