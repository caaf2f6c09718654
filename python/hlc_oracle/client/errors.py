"""The client's errors: one base, :class:`OracleError`, and a subclass per way a call can fail.

A gRPC failure becomes one of them in :func:`error_from_rpc`, the one place that reads a
status code and the oracle's refusal mark; :func:`result_error` does the same for a refused
transaction inside a ``CommitResult``.
"""

from __future__ import annotations

import grpc

from hlc_oracle import HlcError
from hlc_oracle.proto import REFUSAL_DISABLED, REFUSAL_METADATA_KEY, REFUSAL_NOT_SERVING


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


class OracleTimeoutError(OracleError):
    """The call did not finish within the client's timeout (``DEADLINE_EXCEEDED``)."""


def error_from_rpc(err: grpc.RpcError) -> OracleError:
    code: grpc.StatusCode = err.code()
    details: str = err.details() or ""
    refusal = None
    trailing = getattr(err, "trailing_metadata", None)
    for key, value in (trailing() if callable(trailing) else None) or ():
        if key == REFUSAL_METADATA_KEY:
            refusal = value if isinstance(value, str) else value.decode("ascii", "replace")
    if refusal == REFUSAL_DISABLED:
        return OracleDisabledError(code, details, refusal)
    kind = {
        grpc.StatusCode.UNAVAILABLE: (
            OracleNotServingError if refusal is not None else OracleUnavailableError
        ),
        grpc.StatusCode.DEADLINE_EXCEEDED: OracleTimeoutError,
    }.get(code, OracleError)
    return kind(code, details, refusal)


def result_error(code: grpc.StatusCode, message: str) -> OracleError:
    """The error of a refused transaction in a ``CommitResult``: the oracle sent it itself."""
    if code is grpc.StatusCode.UNAVAILABLE:
        return OracleNotServingError(code, message, REFUSAL_NOT_SERVING)
    return OracleError(code, message)
