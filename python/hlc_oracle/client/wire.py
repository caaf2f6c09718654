"""Conversions between the ``hlc_oracle.v1`` messages and the package's values.

Timestamps, ranges, transactions and commit results, both ways where the client needs both; the
full method paths of the two services.
"""

from __future__ import annotations

from typing import Protocol, overload

from hlc_oracle import Aborted, Committed, HlcError, Timestamp, TimestampRange, Transaction
from hlc_oracle._core import decode_commit_result
from hlc_oracle.client.errors import result_error
from hlc_oracle.proto import oracle_pb2 as pb
from hlc_oracle.proto import status_code

__all__ = [
    "TIMESTAMP_ORACLE_METHODS",
    "TRANSACTIONS_METHODS",
    "CommitAnswer",
    "CommitAnswers",
    "answer_list",
    "any_refused",
    "outcome_from_wire",
    "range_from_wire",
    "status_code",
    "timestamp_from_wire",
    "timestamp_to_wire",
    "transaction_to_wire",
]

TIMESTAMP_ORACLE_METHODS = "/hlc_oracle.v1.TimestampOracle/"
TRANSACTIONS_METHODS = "/hlc_oracle.v1.Transactions/"


def timestamp_from_wire(message: pb.Timestamp) -> Timestamp:
    return Timestamp(message.physical, message.logical, message.node)


def timestamp_to_wire(ts: Timestamp) -> pb.Timestamp:
    return pb.Timestamp(physical=ts.physical, logical=ts.logical, node=ts.node)


def range_from_wire(message: pb.GetTimestampsResponse) -> TimestampRange:
    return TimestampRange(timestamp_from_wire(message.first), message.count)


def transaction_to_wire(txn: Transaction) -> pb.Transaction:
    return pb.Transaction(
        txn_id=txn.txn_id,
        start_ts=timestamp_to_wire(txn.start_ts),
        read_set=txn.read_set,
        write_set=txn.write_set,
    )


#: One result of a CommitStream message: the decision, or ``(txn_id, grpc code, message)`` for a
#: transaction the oracle refused, or the error of one the client could not send (too large).
CommitAnswer = Committed | Aborted | tuple[int, int, str] | HlcError


class CommitAnswers(Protocol):
    """A message's answers, in order: a list, or the :class:`~hlc_oracle._core.CommitResults` a
    response decodes into (each answer built when it is asked for; a slice is the answers of a
    part of the message, nothing built)."""

    def __len__(self) -> int: ...
    @overload
    def __getitem__(self, index: int, /) -> CommitAnswer: ...
    @overload
    def __getitem__(self, index: slice, /) -> CommitAnswers: ...


def answer_list(answers: CommitAnswers) -> list[CommitAnswer]:
    """Every answer, built (for the rare paths that edit or join them)."""
    return answers if isinstance(answers, list) else [answers[i] for i in range(len(answers))]


def any_refused(answers: CommitAnswers) -> bool:
    """Whether some answer is a refusal (``(txn_id, code, message)``), building none of them."""
    refused = getattr(answers, "refused", None)
    if isinstance(refused, int):
        return refused > 0
    return any(isinstance(answers[i], tuple) for i in range(len(answers)))


def outcome_from_wire(result: pb.CommitResult) -> Committed | Aborted:
    """A ``CommitResult`` as the in-process answer (decoded by the engine's codec, the one
    ``CommitStream`` responses are read with); a refused request raises its error."""
    answer = decode_commit_result(result.SerializeToString())
    if isinstance(answer, tuple):
        _, code, message = answer
        raise result_error(status_code(code), message)
    return answer
