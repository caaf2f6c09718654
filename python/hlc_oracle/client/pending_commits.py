"""One ``CommitStream`` message across the attempts of one call (:class:`PendingCommits`): which
transactions still need an answer, and the answers so far, in order.

A message's answer has one result per transaction. A decision, or a refusal about the
transaction itself (malformed, too old, a mismatch), is final. An ``UNAVAILABLE`` result is not:
the node refused the transaction without deciding it (a follower, a leader taking over or
shutting down), or could not confirm its decision (see :func:`~hlc_oracle.client.errors.
decision_error`). Those transactions, and only those, go out again in the next attempt, with the
same ids, under the client's one retry rule (:func:`~hlc_oracle.client.retry.with_retries`, on
the node the client calls then); the decided ones keep their answers. An attempt that leaves
some unanswered raises the error the retry rule reads: the refusal (which names no leader, so
the client moves on to the next node at once) or, when a decision was not confirmed,
:class:`~hlc_oracle.client.errors.OracleOutcomeUnknownError` (counted as a lost answer).

When the call gives up, :meth:`PendingCommits.finish` answers each unanswered transaction with
its last refusal, or with the call's final error when its outcome is unknown.
"""

from __future__ import annotations

from collections.abc import Callable

import grpc

from hlc_oracle import Transaction
from hlc_oracle._core import encode_commit_request
from hlc_oracle.client.errors import OracleError, OracleOutcomeUnknownError, result_error
from hlc_oracle.client.node import OracleNode
from hlc_oracle.client.wire import (
    CommitAnswer,
    CommitAnswers,
    answer_list,
    any_refused,
    status_code,
)

_UNAVAILABLE: int = grpc.StatusCode.UNAVAILABLE.value[0]


class PendingCommits:
    """``transactions`` (encoded as ``message``) until each has a final answer or the call gives
    up. :meth:`send` is one attempt on a node; :attr:`answered` says whether any attempt got an
    answer. ``retrying`` is called once, before the second attempt."""

    def __init__(
        self,
        transactions: list[Transaction],
        message: bytes,
        retrying: Callable[[], None] | None = None,
    ) -> None:
        self.transactions = transactions
        #: The message of the next attempt: the transactions still unanswered.
        self.message = message
        self._answers: list[CommitAnswer] = []
        # Positions (in ``transactions``) of the transactions ``message`` carries; None: all.
        self._pending: list[int] | None = None
        # The refusal the last attempt raised: at the end it leaves the refusals in place.
        self._refusal: OracleError | None = None
        self._attempted = False
        self._retrying = retrying

    @property
    def answered(self) -> bool:
        """Whether some attempt got an answer (so some transactions may have final ones)."""
        return bool(self._answers)

    async def send(self, node: OracleNode, remaining: float) -> CommitAnswers:
        """One attempt: sends :attr:`message` on ``node``'s ``CommitStream``; every
        transaction's answer in order, or raises for those left unanswered (see the module)."""
        if self._attempted and self._retrying is not None:
            retrying, self._retrying = self._retrying, None
            retrying()
        self._attempted = True
        return self.take(await node.commits.request(self.message, remaining))

    def take(self, received: CommitAnswers) -> CommitAnswers:
        """Records the answers to :attr:`message`; every transaction's answer once none is left
        to send again, else raises the error to retry with."""
        pending = self._pending
        expected = len(self.transactions) if pending is None else len(pending)
        if len(received) != expected:
            raise OracleError(
                grpc.StatusCode.INTERNAL,
                f"the server answered {len(received)} results for {expected} transactions",
            )
        if pending is None and not any_refused(received):
            return received  # the common case: all decided, first time; nothing built
        answers = answer_list(received)
        if pending is None:
            self._answers = answers
            positions: list[int] | range = range(len(answers))
        else:
            positions = pending
            for position, answer in zip(positions, answers, strict=True):
                self._answers[position] = answer
        again: list[int] = []
        errors: list[OracleError] = []
        for position, answer in zip(positions, answers, strict=True):
            if isinstance(answer, tuple) and answer[1] == _UNAVAILABLE:
                again.append(position)
                errors.append(result_error(status_code(answer[1]), answer[2]))
        if not again:
            return self._answers
        if len(again) != expected:
            self.message = encode_commit_request([self.transactions[p] for p in again])
        self._pending = again
        doubt = next((e for e in errors if isinstance(e, OracleOutcomeUnknownError)), None)
        if doubt is not None:
            self._refusal = None
            raise doubt
        refusal = errors[0]
        refusal.leader = ""  # an answer names no leader: the client tries the next node at once
        self._refusal = refusal
        raise refusal

    def finish(self, error: OracleError) -> list[CommitAnswer]:
        """Every transaction's answer once the call gave up with ``error``: the final ones stand;
        the others keep the refusal they last got when ``error`` is that refusal, and get
        ``error`` otherwise (an unknown outcome, a timeout, ...)."""
        if error is not self._refusal:
            positions = range(len(self.transactions)) if self._pending is None else self._pending
            if not self._answers:
                self._answers = [error] * len(self.transactions)
            for position in positions:
                self._answers[position] = error
        return self._answers
