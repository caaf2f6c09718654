"""``commit_many``: many transactions in one call, sent as one or a few ``CommitStream`` messages
and answered in order, each transaction with its own result.

The client's message sender (``AsyncOracleClient._send_commits``) already does the work per
message: encoding in Rust (``encode_commit_request``), splitting by encoded bytes under the
server's message limit, decoding in Rust (``decode_commit_results``), resending a message whose
stream broke with the same transaction ids (a decided id returns its first decision), and sending
the transactions a node refused again to the next leader. This
module adds only what a batch needs on top: the argument check and turning each refused
transaction's ``(txn_id, code, message)`` into its error, so one bad transaction does not fail
the others. Concurrent ``commit_many`` calls each send their own message on the one pipelined
stream, so several messages are in flight at once; they bypass ``commit()``'s merging, which
would only add a future per transaction.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence

import grpc

from hlc_oracle import Aborted, Committed, HlcError, Transaction
from hlc_oracle.client.errors import OracleError, result_error
from hlc_oracle.client.wire import CommitAnswer, status_code

#: The result of one transaction of a batch: its decision, or the error that refused it alone
#: (an :class:`~hlc_oracle.client.OracleError` with the server's status code, or
#: :class:`~hlc_oracle.TransactionTooLargeError` for one that fits in no message).
CommitManyResult = Committed | Aborted | HlcError


def _result(answer: object) -> CommitManyResult:
    if isinstance(answer, tuple):
        _, code_number, message = answer
        return result_error(status_code(code_number), message)
    if isinstance(answer, Committed | Aborted | HlcError):
        return answer
    raise TypeError(f"unexpected commit answer {answer!r}")


async def commit_many(
    send: Callable[[list[Transaction]], Awaitable[list[CommitAnswer]]],
    txns: Sequence[Transaction],
) -> list[CommitManyResult]:
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
        return []
    batch = txns if isinstance(txns, list) else list(txns)
    # The encoder checks each element's type in Rust; a wrong one raises TypeError naming it.
    answers = await send(batch)
    if len(answers) != len(batch):
        raise OracleError(
            grpc.StatusCode.INTERNAL,
            f"the server answered {len(answers)} results for {len(batch)} transactions",
        )
    # Decisions are the common case and pass through as decoded; only refusals become errors.
    return [
        answer if type(answer) is Committed or type(answer) is Aborted else _result(answer)
        for answer in answers
    ]
