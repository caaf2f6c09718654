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


def test_a_slice_is_the_results_of_a_part_built_when_asked_for() -> None:
    """A slice of ``CommitResults`` (each caller's part of a merged message) is a
    ``CommitResults`` over the same bytes, with its own counts."""
    data = response()
    results = CommitResults(data)
    expected = decode_commit_results(data)
    for part in (slice(1, 3), slice(0, 4), slice(2, None), slice(None, None, 2), slice(3, 0, -1)):
        sliced = results[part]
        assert isinstance(sliced, CommitResults)
        assert list(sliced) == expected[part]
        assert sliced.txn_ids() == [
            r.txn_id if not isinstance(r, tuple) else r[0] for r in expected[part]
        ]
    assert (results[1:3].committed, results[1:3].refused) == (0, 1)
    assert (results[:1].committed, results[3:].committed) == (1, 1)
    assert len(results[4:]) == 0 and len(results[9:2]) == 0
    with pytest.raises(TypeError, match="indices must be integers or slices, not str"):
        results["1"]  # type: ignore[call-overload]


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
