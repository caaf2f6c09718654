"""The client's errors: one base, :class:`OracleError`, and a subclass per way a call can fail.

A gRPC failure becomes one of them in :func:`error_from_rpc`, the one place that reads a
status code and the oracle's refusal mark; :func:`result_error` does the same for a refused
transaction inside a ``CommitResult``, and :func:`decision_error` says what an ``UNAVAILABLE`` means
to a call that decides.

Honest classification: a status the oracle sent itself is reported as such. A connection that
drops while a call is in flight surfaces in grpc-core as ``UNAVAILABLE``, ``CANCELLED``,
``UNKNOWN`` or ``INTERNAL`` ("Internal error from Core") without the oracle's refusal mark; the
request may or may not have reached the oracle, so it becomes a :class:`ConnectionLostError`
(retried), never the server's ``INTERNAL``. When the retries run out after one, a call that
changes state raises :class:`OracleOutcomeUnknownError`.

A call that decides (commit, abort) tells two kinds of ``UNAVAILABLE`` the oracle sends apart: a
refusal by its serving gate (a follower, a leader taking over or shutting down, ...; the message
begins with ``NOT_SERVING_PREFIX``) decided nothing, so the transaction is sent again, with the
same id, wherever the leader is now; any other (a decision write that failed or was not
confirmed, a scheduler closed under the batch) may have decided it, so it counts as a lost answer:
sent again too, and :class:`OracleOutcomeUnknownError` when the retries run out.
"""

from __future__ import annotations

import re

import grpc

from hlc_oracle import HlcError, TransactionTooLargeError
from hlc_oracle.proto import (
    LEADER_METADATA_KEY,
    NOT_SERVING_PREFIX,
    REFUSAL_DISABLED,
    REFUSAL_METADATA_KEY,
    REFUSAL_NOT_SERVING,
)


class OracleError(HlcError):
    """The oracle answered with a non-OK status (``code``), or could not be reached.

    ``refusal`` is set when the oracle itself sent the status with its refusal mark:
    ``"not-serving"`` or ``"over-limit"`` (a count above the server's ``max_count``).
    """

    def __init__(self, code: grpc.StatusCode, details: str, refusal: str | None = None) -> None:
        super().__init__(f"{code.name}: {details}")
        self.code = code
        self.details = details
        self.refusal = refusal
        #: A follower's refusal (``not-leader``): the leader's address it named, "" when unknown.
        self.leader: str | None = None


class OracleUnavailableError(OracleError):
    """The oracle is not serving or cannot be reached (``UNAVAILABLE``), after all retries."""


class OracleNotServingError(OracleUnavailableError):
    """The oracle was reached and refused: it is not serving now (starting, shutting down, clock
    skew past the limit, ...; ``details`` says why). Retried like any ``UNAVAILABLE``."""


class OracleTlsHandshakeError(OracleUnavailableError):
    """The oracle's port answered but the TLS handshake failed, so no call can get through:
    ``cause`` names the likely cause (no client certificate, one from another CA, expired,
    plaintext to a TLS port or the reverse; see :mod:`hlc_oracle.client.handshake`)."""

    def __init__(self, code: grpc.StatusCode, cause: str, grpc_details: str) -> None:
        super().__init__(code, f"TLS handshake failed: {cause}")
        self.cause = cause
        #: What gRPC itself said (typically "Socket closed", or that it could not connect).
        self.grpc_details = grpc_details


class OracleDisabledError(OracleError):
    """The service is disabled by the node's configuration (mark ``disabled``; e.g. group commit
    with ``commit.enabled = false``). Permanent: never retried."""


class OracleOutcomeUnknownError(OracleUnavailableError):
    """The connection was lost while a commit or abort was in flight (or the node answered that
    it could not confirm the decision), and the retries (with the same transaction id) ran out:
    whether the oracle decided it is unknown. Resubmit the same transaction id (a decided id
    returns its first decision) or ask ``transaction_status(id)``."""


class OracleTimeoutError(OracleError):
    """The call did not finish within the client's timeout (``DEADLINE_EXCEEDED``): the oracle
    was reached but did not answer in time. The outcome of a commit that timed out is unknown."""


def no_answer_within(timeout: float) -> str:
    """A timeout's words: the call's time, to the millisecond (a merged request is given what
    is left of its callers' earliest deadline, 29.99998 s of 30, which reads as 30)."""
    return f"no answer within {round(timeout, 3):g} s"


def not_sent(
    timeout: float,
    waited_for: str = "a free message slot",
    outcome: str = "nothing was committed",
) -> OracleTimeoutError:
    """The error of a merged call whose deadline passed while it waited to be sent (for
    ``waited_for``): the timeout's own type and status, and words saying that it was never sent,
    so ``outcome``."""
    return OracleTimeoutError(
        grpc.StatusCode.DEADLINE_EXCEEDED,
        f"{no_answer_within(timeout)}: the call waited for {waited_for} all that time "
        f"and was never sent, so {outcome}",
    )


class OracleTimestampRegressionError(OracleError):
    """A node answered a timestamp not above one this client returned before (a node of another
    cluster in the target list, or a broken one): never returned, so the caller never sees time
    go backwards."""


class ConnectionLostError(OracleUnavailableError):
    """The connection failed while the request may have been on its way or answered (a broken
    stream, a reset, grpc-core's own ``INTERNAL``): retried; ``details`` keeps what gRPC said."""


# grpc-core reports a connection lost mid-call with these codes; the oracle itself sends them only
# with its refusal mark.
_CONNECTION_CODES = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.CANCELLED,
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.INTERNAL,
    }
)
# The channel could not connect at all: the request never left this process.
_NOT_SENT_PREFIX = "failed to connect to all addresses"


def error_from_rpc(err: grpc.RpcError) -> OracleError:
    """The :class:`OracleError` of a failed gRPC call (see the module's classification)."""
    code: grpc.StatusCode = err.code()
    details: str = err.details() or ""
    refusal = None
    trailing = getattr(err, "trailing_metadata", None)
    leader = None
    for key, value in (trailing() if callable(trailing) else None) or ():
        text = value if isinstance(value, str) else value.decode("ascii", "replace")
        if key == REFUSAL_METADATA_KEY:
            refusal = text
        elif key == LEADER_METADATA_KEY:
            leader = text
    error = _classify(code, details, refusal)
    error.leader = leader
    return error


def _classify(code: grpc.StatusCode, details: str, refusal: str | None) -> OracleError:
    if refusal == REFUSAL_DISABLED:
        return OracleDisabledError(code, details, refusal)
    if code is grpc.StatusCode.DEADLINE_EXCEEDED:
        return OracleTimeoutError(code, details, refusal)
    if refusal is not None:
        if code is grpc.StatusCode.UNAVAILABLE:
            return OracleNotServingError(code, details, refusal)
        return OracleError(code, details, refusal)
    if code in _CONNECTION_CODES:
        if code is grpc.StatusCode.UNAVAILABLE and details.startswith(_NOT_SENT_PREFIX):
            return OracleUnavailableError(code, details)
        return connection_lost(f"{code.name}: {details}" if details else code.name)
    return OracleError(code, details)


def connection_lost(what: str) -> ConnectionLostError:
    """A :class:`ConnectionLostError` whose message says what gRPC (or the stream) reported."""
    return ConnectionLostError(grpc.StatusCode.UNAVAILABLE, f"connection lost: {what}")


def outcome_in_doubt(error: OracleError) -> bool:
    """Whether a commit or abort in flight when ``error`` happened may have been decided: a lost
    connection, or a node's answer that it could not confirm the decision."""
    return isinstance(error, ConnectionLostError | OracleOutcomeUnknownError)


def is_retryable(error: OracleError) -> bool:
    """Whether another attempt may succeed: unreachable, connection lost, or not serving for now
    (a service disabled by configuration is permanent)."""
    return isinstance(error, OracleUnavailableError) and error.refusal != REFUSAL_DISABLED


def result_error(code: grpc.StatusCode, message: str) -> OracleError:
    """The error of a refused transaction in a ``CommitResult``: the oracle sent it itself (an
    ``UNAVAILABLE`` as :func:`decision_error` says)."""
    if code is grpc.StatusCode.UNAVAILABLE:
        return decision_error(OracleNotServingError(code, message, REFUSAL_NOT_SERVING))
    return OracleError(code, message)


def decision_error(error: OracleError) -> OracleError:
    """``error`` as a call that decides (commit, abort) must read it: an ``UNAVAILABLE`` the oracle
    sent that is not its serving gate's refusal leaves the outcome unknown
    (:class:`OracleOutcomeUnknownError`, retried with the same id); anything else is unchanged."""
    if (
        isinstance(error, OracleNotServingError)
        and error.refusal == REFUSAL_NOT_SERVING
        and not error.details.startswith(NOT_SERVING_PREFIX)
    ):
        return OracleOutcomeUnknownError(
            error.code,
            f"the oracle could not confirm the decision ({error.details}); it may be decided",
        )
    return error


# gRPC's words when a message is over the receiver's limit: "... larger than max (SIZE vs. LIMIT)".
_LARGER_THAN_MAX = re.compile(r"larger than max \((\d+) vs\. (\d+)\)")


def refused_message_limit(error: OracleError) -> int | None:
    """The server's message limit, when ``error`` is its refusal of a message over it."""
    if error.code is not grpc.StatusCode.RESOURCE_EXHAUSTED:
        return None
    found = _LARGER_THAN_MAX.search(error.details)
    return int(found.group(2)) if found else None


def transaction_too_large(txn_id: int, size: int, limit: int) -> TransactionTooLargeError:
    """The error of a transaction that alone does not fit in one message."""
    return TransactionTooLargeError(
        f"transaction {txn_id} encodes to {size} bytes, above the message limit of {limit} "
        "bytes (the server's limits.max_message_bytes; the client's max_message_bytes)"
    )
