"""PendingCommits on its own: a ``CommitStream`` answer with refusals in it, read as the client
reads it. The answers are real wire bytes (the server's Rust encoder, the client's Rust decoder),
so a refusal here is exactly what a follower or a leader taking over or shutting down sends."""

from __future__ import annotations

import grpc
import pytest
from hlc_oracle import Aborted, Committed, Timestamp, Transaction
from hlc_oracle._core import decode_commit_results, encode_commit_request, encode_commit_results
from hlc_oracle.client import OracleError, OracleNotServingError, OracleOutcomeUnknownError
from hlc_oracle.client.pending_commits import PendingCommits
from hlc_oracle.client.wire import CommitAnswer
from hlc_oracle.proto import NOT_SERVING_PREFIX

UNAVAILABLE = grpc.StatusCode.UNAVAILABLE.value[0]
INVALID = grpc.StatusCode.INVALID_ARGUMENT.value[0]
START = Timestamp(1_700_000_000_000_000, 0, 1)
TAKING_OVER = f"{NOT_SERVING_PREFIX}not-leader: taking over as leader of epoch 7"
NOT_CONFIRMED = "outcome unknown: the decision write failed or was not confirmed (etcd timeout)"


def answer(*results: Committed | Aborted | tuple[int, int, str]) -> list[CommitAnswer]:
    """``results`` through the wire, as a node's answer reaches the client."""
    return list(decode_commit_results(encode_commit_results(results)))


def committed(txn_id: int) -> Committed:
    return Committed(txn_id, Timestamp(START.physical + txn_id, 0, 1))


TRANSACTIONS = [Transaction(n, START, [], [b"key/%d" % n]) for n in range(1, 6)]


def pending() -> PendingCommits:
    return PendingCommits(TRANSACTIONS, encode_commit_request(TRANSACTIONS))


def test_all_decided_at_once_is_the_answer_itself() -> None:
    commits = pending()
    first = answer(*(committed(n) for n in range(1, 6)))
    assert commits.take(first) is first


def test_only_the_refused_transactions_go_again_and_answers_keep_their_order() -> None:
    commits = pending()
    aborted = Aborted(3, "requested")
    with pytest.raises(OracleNotServingError) as refused:
        commits.take(
            answer(
                committed(1),
                (2, UNAVAILABLE, TAKING_OVER),
                aborted,
                (4, INVALID, "transaction 4: write_set is empty"),
                (5, UNAVAILABLE, TAKING_OVER),
            )
        )
    # A refusal inside an answer names no leader: the client moves on to the next node.
    assert refused.value.leader == "" and TAKING_OVER in str(refused.value)
    assert commits.message == encode_commit_request([TRANSACTIONS[1], TRANSACTIONS[4]])
    with pytest.raises(OracleNotServingError):
        commits.take(answer(committed(2), (5, UNAVAILABLE, TAKING_OVER)))
    assert commits.message == encode_commit_request([TRANSACTIONS[4]])
    final = commits.take(answer(committed(5)))
    assert final[:3] == [committed(1), committed(2), aborted]
    assert final[3] == (4, INVALID, "transaction 4: write_set is empty")
    assert final[4] == committed(5)


def test_a_decision_not_confirmed_is_a_lost_answer() -> None:
    commits = pending()
    with pytest.raises(OracleOutcomeUnknownError, match="etcd timeout"):
        commits.take(
            answer(
                committed(1),
                (2, UNAVAILABLE, TAKING_OVER),
                (3, UNAVAILABLE, NOT_CONFIRMED),
                committed(4),
                committed(5),
            )
        )
    assert commits.message == encode_commit_request([TRANSACTIONS[1], TRANSACTIONS[2]])


def test_giving_up_keeps_the_last_refusal_or_gives_the_final_error() -> None:
    commits = pending()
    with pytest.raises(OracleNotServingError) as refused:
        commits.take(answer(*(committed(n) for n in (1, 2, 3, 4)), (5, UNAVAILABLE, TAKING_OVER)))
    assert commits.answered
    assert commits.finish(refused.value)[4] == (5, UNAVAILABLE, TAKING_OVER)
    unknown = OracleOutcomeUnknownError(grpc.StatusCode.UNAVAILABLE, "connection lost")
    final = commits.finish(unknown)
    assert final[:4] == [committed(n) for n in (1, 2, 3, 4)] and final[4] is unknown


def test_an_answer_of_the_wrong_length_is_refused() -> None:
    commits = pending()
    with pytest.raises(OracleError, match="answered 1 results for 5 transactions") as wrong:
        commits.take(answer(committed(1)))
    assert wrong.value.code is grpc.StatusCode.INTERNAL
