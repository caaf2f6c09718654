"""The results of a CommitStream response, built when asked for: ``CommitResults`` (Rust, the
items of ``decode_commit_results``) and ``commit_many``'s ``CommitManyResults`` (refusals as
errors)."""

from collections.abc import Sequence

import grpc
import pytest
from hlc_oracle import Aborted, Committed, HlcError, Timestamp
from hlc_oracle._core import (
    CommitResults,
    decode_commit_result,
    decode_commit_results,
    encode_commit_result,
    encode_commit_results,
)
from hlc_oracle.client import CommitManyResults, OracleError
from hlc_oracle.proto import oracle_pb2 as pb

CODE = grpc.StatusCode.RESOURCE_EXHAUSTED.value[0]


def response() -> bytes:
    ts = Timestamp(1_796_000_000_000_000, 3, 2)
    return encode_commit_results(
        [
            Committed(1, ts),
            Aborted(2, "requested"),
            (3, CODE, "too many keys"),
            Committed(4, ts),
        ]
    )


def test_the_items_are_those_of_the_eager_decoder_and_counts_build_none() -> None:
    data = response()
    results = CommitResults(data)
    expected = decode_commit_results(data)
    assert len(results) == 4
    assert [results[i] for i in range(4)] == expected
    assert list(results) == expected  # iteration through the sequence protocol
    assert results[-1] == expected[-1]
    assert (results.committed, results.refused) == (2, 1)
    assert results.txn_ids() == [1, 2, 3, 4]
    with pytest.raises(IndexError, match="index 4 out of range for length 4"):
        results[4]
    with pytest.raises(ValueError, match="malformed CommitStreamResponse"):
        CommitResults(data[:-1])
    assert len(CommitResults(b"")) == 0


def test_commit_many_results_turn_refusals_into_errors_when_asked() -> None:
    results = CommitManyResults(CommitResults(response()))
    assert isinstance(results, Sequence) and len(results) == 4
    one, two, three, _ = results
    assert isinstance(one, Committed) and isinstance(two, Aborted)
    assert isinstance(three, OracleError) and isinstance(three, HlcError)
    assert three.code is grpc.StatusCode.RESOURCE_EXHAUSTED
    assert results[1:3][0] == two and len(results[::2]) == 2
    assert (results.committed, results.refused) == (2, 1)
    assert results[:2] == [one, two] and results[:2] != [one]
    # The same over a plain list of answers (the client's split and retry paths).
    listed = CommitManyResults(decode_commit_results(response()))
    assert (listed.committed, listed.refused) == (2, 1)
    assert listed[0] == results[0] and CommitManyResults([]) == []


def test_one_result_is_the_message_the_unary_calls_answer_with() -> None:
    """``encode_commit_result`` writes one ``CommitResult`` (a unary ``Commit`` or ``Abort``
    answer) with the codec of the stream's results; protobuf and ``decode_commit_result`` read
    it back the same."""
    ts = Timestamp(1_796_000_000_000_000, 3, 2)
    conflict = Aborted.from_conflict(5, "write_write", b"k", ts)
    for answer in (Committed(1, ts), Aborted(2, "requested"), conflict, (3, CODE, "too many")):
        data = encode_commit_result(answer)
        assert decode_commit_result(data) == answer
        assert pb.CommitResult.FromString(data).SerializeToString() == data
    with pytest.raises(ValueError, match="malformed CommitResult"):
        decode_commit_result(b"\x08")
