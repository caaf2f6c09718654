"""The command's exit codes, and the code of each status the oracle answers with.

0 success; 1 the oracle failed the request or could not start (``txn status``: the transaction
aborted; ``status``: the node is not serving); 2 bad usage or configuration, including a
``--count`` above the server's ``max_count``; 3 the oracle could not be reached (``UNAVAILABLE``
from the network after retries, or timeout); 4 ``txn status``: the id is unknown; 5 the oracle
was reached and refused: not serving (starting, shutting down, clock skew; its reason is printed)
or overloaded (``RESOURCE_EXHAUSTED``: too many calls, commit queue full); 6 the service is
disabled by the node's configuration (permanent, not retried); 7 the TLS handshake failed (the
message names the likely cause); 130 interrupted.
"""

from __future__ import annotations

import grpc

from hlc_oracle.client import OracleError
from hlc_oracle.proto import REFUSAL_OVER_LIMIT

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_UNREACHABLE = 3
EXIT_UNKNOWN = 4
EXIT_REFUSED = 5
EXIT_DISABLED = 6
EXIT_TLS_HANDSHAKE = 7
EXIT_INTERRUPTED = 130


def exit_code_of(err: OracleError) -> int:
    """The exit code of a status the oracle answered with (not ``UNAVAILABLE``/timeouts)."""
    if err.code == grpc.StatusCode.INVALID_ARGUMENT or err.refusal == REFUSAL_OVER_LIMIT:
        return EXIT_USAGE  # the request itself was wrong: malformed, or above max_count
    if err.code == grpc.StatusCode.RESOURCE_EXHAUSTED:
        return EXIT_REFUSED  # the server is overloaded; the same request may pass later
    return EXIT_FAILED
