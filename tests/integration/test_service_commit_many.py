"""``commit_many`` on a real server: answers in order, each transaction its own result or error,
batches split by encoded bytes under the message limit, concurrent calls pipelined, and the
``bench --mode commit-batch`` command."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable

import grpc
import pytest
from hlc_oracle import Aborted, Committed, Timestamp, Transaction
from hlc_oracle.client import AsyncOracleClient, OracleClient, OracleError

from tests.integration.oracle_process import OracleProcess


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
            # Every batch was its own message, not merged with commit()'s callers.
            assert client.commit_batches == 0

    asyncio.run(scenario())


def test_bench_commit_batch_mode(oracle: OracleProcess) -> None:
    done = oracle.cli(
        "bench", "--mode", "commit-batch", "--batch", "100", "--concurrency", "4",
        "--requests", "2000", "--no-progress",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["mode"] == "commit-batch" and result["batch"] == 100
    assert result["calls"] == 2000  # transactions
    assert result["batches"] == 20
    assert "committed transactions" in done.stdout
