"""``commit_many``: many transactions in one call, sent as one or a few ``CommitStream`` messages
and answered in order, each transaction with its own result.

The client's message sender (``AsyncOracleClient._send_commits``) already does the work per
message: encoding in Rust (``encode_commit_request``), splitting by encoded bytes under the
server's message limit, keeping the answers as the response's bytes (``CommitResults``, each
decoded in Rust when asked for), resending a message whose stream broke with the same
transaction ids (a decided id returns its first decision), and sending the transactions a node
refused again to the next leader. This module adds only what a batch needs on top: the argument
check, and the result, :class:`CommitManyResults`, a sequence that builds each transaction's
result when it is asked for (a ``Committed``, an ``Aborted``, or the error of a refused
transaction, so one bad transaction does not fail the others): a caller pays for the results it
touches.

Concurrent ``commit_many`` calls are merged by messages, as ``commit()`` calls are by
transactions (a :class:`~hlc_oracle.client.commit_batcher.CommitBatcher` of their own, with a
future per call, not per transaction): up to ``commit_many_in_flight`` messages (2 by default)
go out at once, pipelined on the stream, and the calls that arrive meanwhile go out together in
the next message (their encodings joined, up to 8,192 transactions, the merged-message byte
limit and an even share of the work outstanding, so that the messages in flight are of about
one size and each one's round trip overlaps the server's work on the others), each caller
getting its own part of the answer. Each message costs about 180 µs of the
client's CPU (grpc's threads, wake-ups, the kernel), and the server's too, whatever its size: 8
callers of 1,000 send messages of about 4,000 instead of 1,000. A message held or being sent
again leaves its slot to new calls, as for ``commit()``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
from typing import cast, overload

import grpc

from hlc_oracle import Aborted, Committed, HlcError, Transaction
from hlc_oracle.client.errors import OracleError, result_error
from hlc_oracle.client.wire import CommitAnswers, status_code

#: The result of one transaction of a batch: its decision, or the error that refused it alone
#: (an :class:`~hlc_oracle.client.OracleError` with the server's status code, or
#: :class:`~hlc_oracle.TransactionTooLargeError` for one that fits in no message).
CommitManyResult = Committed | Aborted | HlcError


def _result(answer: object) -> CommitManyResult:
    if type(answer) is Committed or type(answer) is Aborted:
        return answer
    if isinstance(answer, tuple):
        _, code_number, message = answer
        return result_error(status_code(code_number), message)
    if isinstance(answer, Committed | Aborted | HlcError):
        return answer
    raise TypeError(f"unexpected commit answer {answer!r}")


class CommitManyResults(Sequence[CommitManyResult]):
    """The results of :func:`commit_many`, in the order of its transactions: a sequence whose
    items are built when they are asked for (indexing, iterating), from the response's bytes.
    :attr:`committed` and :attr:`refused` count without building any; ``list(results)`` builds
    them all."""

    __slots__ = ("_answers",)

    def __init__(self, answers: CommitAnswers) -> None:
        self._answers = answers

    def __len__(self) -> int:
        return len(self._answers)

    @overload
    def __getitem__(self, index: int) -> CommitManyResult: ...
    @overload
    def __getitem__(self, index: slice) -> list[CommitManyResult]: ...
    def __getitem__(self, index: int | slice) -> CommitManyResult | list[CommitManyResult]:
        if isinstance(index, slice):
            return [_result(self._answers[i]) for i in range(*index.indices(len(self)))]
        return _result(self._answers[index])

    def __iter__(self) -> Iterator[CommitManyResult]:
        answers = self._answers
        if getattr(answers, "refused", None) == 0:
            # Only decisions: the Rust sequence's own iteration, no Python call per result.
            return cast(Iterator[CommitManyResult], iter(cast(Iterable[object], answers)))
        return (_result(answers[i]) for i in range(len(answers)))

    @property
    def committed(self) -> int:
        """How many transactions committed."""
        counted = getattr(self._answers, "committed", None)
        if isinstance(counted, int):
            return counted
        return sum(type(self._answers[i]) is Committed for i in range(len(self)))

    @property
    def refused(self) -> int:
        """How many transactions were refused (their results are errors)."""
        counted = getattr(self._answers, "refused", None)
        if isinstance(counted, int):
            return counted
        return sum(not isinstance(self[i], Committed | Aborted) for i in range(len(self)))

    def __eq__(self, other: object) -> bool:
        """Equal to a list, tuple or results of equal items, in order."""
        if not isinstance(other, CommitManyResults | list | tuple):
            return NotImplemented
        return len(self) == len(other) and all(
            mine == theirs for mine, theirs in zip(self, other, strict=True)
        )

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"CommitManyResults(len={len(self)}, committed={self.committed})"


async def commit_many(
    send: Callable[[list[Transaction]], Awaitable[CommitAnswers]],
    txns: Sequence[Transaction],
) -> CommitManyResults:
    """Commits ``txns`` with ``send`` (the client's message sender); their results in order.

    A transaction that fits in no message is refused before anything is sent. A transaction a
    node refused without deciding it goes again to the next leader (see
    :mod:`hlc_oracle.client.pending_commits`). A connection lost for longer than the retry
    budget raises (the client's unknown-outcome error) when no answer came at all, and is the
    result of each transaction still unanswered otherwise: resubmitting the same ids returns
    the decisions already made.
    """
    if isinstance(txns, Transaction | str | bytes) or not isinstance(txns, Sequence):
        raise TypeError(
            f"txns must be a sequence of Transaction, got {type(txns).__name__} "
            "(use commit() for one transaction)"
        )
    if not txns:
        return CommitManyResults([])
    batch = txns if isinstance(txns, list) else list(txns)
    # The encoder checks each element's type in Rust; a wrong one raises TypeError naming it.
    answers = await send(batch)
    if len(answers) != len(batch):
        raise OracleError(
            grpc.StatusCode.INTERNAL,
            f"the server answered {len(answers)} results for {len(batch)} transactions",
        )
    # Nothing is built here: each result is made when the caller asks for it.
    return CommitManyResults(answers)
