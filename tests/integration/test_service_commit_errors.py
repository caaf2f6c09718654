"""Commits refused over gRPC with the status codes of ``server/commit.py``'s error table: the queue
full (``RESOURCE_EXHAUSTED``), a start timestamp at or below forgotten decisions (``OUT_OF_RANGE``;
an undecided one below the detector's low watermark is aborted as too old instead, and that abort
is logged and survives a kill -9), and every Transactions RPC while the skew guard keeps the node
from serving (``UNAVAILABLE``)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2
from hlc_oracle import Aborted, Committed, ConflictKind, Timestamp, Transaction
from hlc_oracle.client import (
    AsyncOracleClient,
    OracleClient,
    OracleError,
    OracleNotServingError,
    RetryPolicy,
)
from hlc_oracle.proto import oracle_pb2 as pb

from tests.support.ntp.responder import Behaviour, NtpResponder
from tests.support.oracle_process import OracleProcess

TRANSACTIONS = "/hlc_oracle.v1.Transactions/"
NO_RETRY = RetryPolicy(attempts=1)


def wire_transaction(txn_id: int, start: Timestamp, key: bytes) -> pb.Transaction:
    return pb.Transaction(
        txn_id=txn_id,
        start_ts=pb.Timestamp(physical=start.physical, logical=start.logical, node=start.node),
        write_set=[key],
    )


def test_a_message_larger_than_the_queue_is_refused_with_resource_exhausted(
    start_oracle: Callable[..., OracleProcess],
) -> None:
    oracle = start_oracle("--set", "commit.max_queue=2")
    with OracleClient(oracle.target, retry=NO_RETRY) as client:
        start = client.get_timestamp()
    request = pb.CommitStreamRequest(
        transactions=[wire_transaction(100 + i, start, b"k%d" % i) for i in range(3)]
    )
    with grpc.insecure_channel(oracle.target) as channel:
        stream = channel.stream_stream(
            TRANSACTIONS + "CommitStream",
            request_serializer=pb.CommitStreamRequest.SerializeToString,
            response_deserializer=pb.CommitStreamResponse.FromString,
        )
        (response,) = list(stream(iter([request]), timeout=10))
    assert [result.txn_id for result in response.results] == [100, 101, 102]
    for result in response.results:
        assert result.WhichOneof("outcome") == "error"
        assert result.error.code == grpc.StatusCode.RESOURCE_EXHAUSTED.value[0]
        assert "the commit queue is full" in result.error.message
    with OracleClient(oracle.target, retry=NO_RETRY) as client:
        # Nothing was decided for them, and the server keeps deciding.
        assert client.transaction_status(100) is None
        assert isinstance(client.commit(Transaction(104, start, [], [b"k"])), Committed)


def test_a_burst_of_unary_commits_past_the_queue_gets_resource_exhausted(
    start_oracle: Callable[..., OracleProcess],
) -> None:
    oracle = start_oracle("--set", "commit.max_queue=1")

    async def burst() -> list[object]:
        async with AsyncOracleClient(oracle.target, retry=NO_RETRY, timeout=10) as client:
            start = await client.get_timestamp()
            calls = [
                client.commit_unary(Transaction(1000 + i, start, [], [b"key%d" % i]))
                for i in range(128)
            ]
            return await asyncio.gather(*calls, return_exceptions=True)

    results = asyncio.run(burst())
    refused = [r for r in results if isinstance(r, OracleError)]
    committed = [r for r in results if isinstance(r, Committed)]
    assert len(refused) + len(committed) == len(results), results
    assert committed, "no commit got through"
    assert refused, "a burst of 128 unary commits never overflowed a queue of 1"
    for error in refused:
        assert error.code == grpc.StatusCode.RESOURCE_EXHAUSTED, error
        assert "the commit queue is full" in error.details


def test_an_undecided_start_below_the_low_watermark_is_aborted_too_old_and_it_lasts(
    start_oracle: Callable[..., OracleProcess],
) -> None:
    # The detector remembers one key: recording a second forgets the first and raises the low
    # watermark to its commit timestamp. No decision is forgotten, so an id it has not decided
    # is known undecided: aborted as too old, and that abort is logged so it cannot flip.
    oracle = start_oracle("--set", "commit.max_keys=1")
    with OracleClient(oracle.target, retry=NO_RETRY) as client:
        start = client.get_timestamp()
        first = client.commit(Transaction(1, start, [], [b"a"]))
        assert isinstance(first, Committed)
        second = client.commit(Transaction(2, client.get_timestamp(), [], [b"b"]))
        assert isinstance(second, Committed)
        too_old = [Transaction(10 + n, start, [], [b"c"]) for n in range(2)]
        aborts = [client.commit(too_old[0]), client.commit_unary(too_old[1])]
        for txn, aborted in zip(too_old, aborts, strict=True):
            assert isinstance(aborted, Aborted) and aborted.reason == "conflict", aborted
            assert aborted.conflict is not None
            assert aborted.conflict.kind is ConflictKind.TOO_OLD
            assert aborted.conflict.commit_ts is not None
            assert aborted.conflict.commit_ts >= start
            assert client.transaction_status(txn.txn_id) == aborted
            assert client.commit(txn) == aborted, "a resubmission gets the same abort"
        later = Transaction(20, client.get_timestamp(), [], [b"d"])
        assert isinstance(client.commit(later), Committed)
    oracle.restart()  # kill -9, then the same data dir
    with OracleClient(oracle.target, retry=NO_RETRY) as client:
        for txn, aborted in zip(too_old, aborts, strict=True):
            assert client.transaction_status(txn.txn_id) == aborted
            assert client.commit(txn) == aborted


def test_a_start_below_forgotten_decisions_is_out_of_range(
    start_oracle: Callable[..., OracleProcess],
) -> None:
    # One decision retained: deciding a second forgets the first, so a start at or below it may
    # belong to a forgotten decision and is refused, never decided (an abort could flip a commit).
    oracle = start_oracle("--set", "commit.retained_decisions=1")
    with OracleClient(oracle.target, retry=NO_RETRY) as client:
        start = client.get_timestamp()
        assert isinstance(client.commit(Transaction(1, start, [], [b"a"])), Committed)
        assert isinstance(
            client.commit(Transaction(2, client.get_timestamp(), [], [b"b"])), Committed
        )
        for n, call in enumerate((client.commit, client.commit_unary)):
            txn = Transaction(10 + n, start, [], [b"c"])
            with pytest.raises(OracleError) as raised:
                call(txn)
            assert raised.value.code == grpc.StatusCode.OUT_OF_RANGE, raised.value
            assert "at or below the low watermark" in raised.value.details
            assert client.transaction_status(txn.txn_id) is None
        later = Transaction(20, client.get_timestamp(), [], [b"d"])
        assert isinstance(client.commit(later), Committed)


@pytest.fixture
def not_serving_oracle(start_oracle: Callable[..., OracleProcess]) -> Iterator[OracleProcess]:
    """A node whose skew guard refuses: its only NTP server never answers and the policy for an
    unknown offset is refuse."""
    with NtpResponder(behaviour=Behaviour.SILENT) as responder:
        oracle = start_oracle(
            "--ntp-servers", responder.address,
            "--set", "ntp.poll_interval_s=0.2", "--set", "ntp.timeout_s=0.2",
            "--set", "ntp.unknown_policy=refuse",
            wait_healthy=False,
        )  # fmt: skip
        oracle.wait_for_health(time.monotonic() + 10, health_pb2.HealthCheckResponse.NOT_SERVING)
        yield oracle


def test_transactions_are_refused_with_unavailable_while_not_serving(
    not_serving_oracle: OracleProcess,
) -> None:
    start = Timestamp(int(time.time() * 1e6) - 1_000_000, 0, 0)
    txn = Transaction(7, start, [], [b"k"])
    with grpc.insecure_channel(not_serving_oracle.target) as channel:
        for method, payload in (
            ("Commit", pb.CommitRequest(transaction=wire_transaction(7, start, b"k"))),
            ("Abort", pb.AbortRequest(txn_id=7)),
        ):
            call = channel.unary_unary(
                TRANSACTIONS + method, request_serializer=type(payload).SerializeToString
            )
            with pytest.raises(grpc.RpcError) as raised:
                call(payload, timeout=5)
            error: Any = raised.value
            assert error.code() == grpc.StatusCode.UNAVAILABLE, method
            assert "not serving: clock-skew: clock offset unknown" in error.details(), method
            assert ("hlc-oracle-refusal", "not-serving") in error.trailing_metadata()
        # A read hands nothing out: it answers while the node refuses (test_service_reads...).
        status = channel.unary_unary(
            TRANSACTIONS + "GetTransactionStatus",
            request_serializer=pb.TransactionStatusRequest.SerializeToString,
            response_deserializer=pb.TransactionStatusResponse.FromString,
        )(pb.TransactionStatusRequest(txn_id=7), timeout=5)
        assert not status.known
        # In a stream, each refused transaction gets an UNAVAILABLE error in its result.
        stream = channel.stream_stream(
            TRANSACTIONS + "CommitStream",
            request_serializer=pb.CommitStreamRequest.SerializeToString,
            response_deserializer=pb.CommitStreamResponse.FromString,
        )
        request = pb.CommitStreamRequest(
            transactions=[wire_transaction(8, start, b"a"), wire_transaction(9, start, b"b")]
        )
        (response,) = list(stream(iter([request]), timeout=10))
        assert [r.txn_id for r in response.results] == [8, 9]
        for result in response.results:
            assert result.WhichOneof("outcome") == "error"
            assert result.error.code == grpc.StatusCode.UNAVAILABLE.value[0]
            assert "not serving" in result.error.message
    with OracleClient(not_serving_oracle.target, retry=NO_RETRY) as client:
        for call in (client.commit, client.commit_unary):
            with pytest.raises(OracleNotServingError, match="clock offset unknown"):
                call(txn)


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _field(number: int, payload: bytes) -> bytes:
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def test_a_start_timestamp_field_wider_than_uint32_is_refused_on_both_commit_paths(
    start_oracle: Callable[..., OracleProcess],
) -> None:
    """The protobuf parser would cut logical = 2**32 + 5 down to 5 and commit a transaction the
    client never sent; unary Commit and CommitStream both answer INVALID_ARGUMENT instead."""
    oracle = start_oracle()
    with OracleClient(oracle.target, retry=NO_RETRY) as client:
        start = client.get_timestamp()
    timestamp = (
        b"\x08" + _varint(start.physical) + b"\x10" + _varint(2**32 + 5) + b"\x18" + _varint(0)
    )
    transaction = b"\x08" + _varint(4242) + _field(2, timestamp) + _field(4, b"wide")
    identity = {"request_serializer": None, "response_deserializer": None}
    with grpc.insecure_channel(oracle.target) as channel:
        commit = channel.unary_unary(TRANSACTIONS + "Commit", **identity)
        with pytest.raises(grpc.RpcError) as raised:
            commit(_field(1, transaction), timeout=10)
        assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT  # type: ignore[attr-defined]
        assert "out of range for uint32" in (raised.value.details() or "")  # type: ignore[attr-defined]
        stream = channel.stream_stream(TRANSACTIONS + "CommitStream", **identity)
        with pytest.raises(grpc.RpcError) as raised:
            list(stream(iter([_field(1, transaction)]), timeout=10))
        assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT  # type: ignore[attr-defined]
        assert "Timestamp.logical is 4294967301" in (raised.value.details() or "")  # type: ignore[attr-defined]
    with OracleClient(oracle.target, retry=NO_RETRY) as client:
        assert client.transaction_status(4242) is None, "nothing was decided"
        assert isinstance(
            client.commit(Transaction(4243, client.get_timestamp(), [], [b"ok"])), Committed
        )
