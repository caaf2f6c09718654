"""The command's exit codes, one table for every command, and the code of each status the oracle
answers with. ``MEANINGS`` is the table; the ``--help`` epilog and ``docs/cli.md`` print it.
"""

from __future__ import annotations

import textwrap

import grpc

from hlc_oracle.client import (
    OracleDisabledError,
    OracleError,
    OracleNotServingError,
    OracleTimeoutError,
    OracleTlsHandshakeError,
    OracleUnavailableError,
)
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

#: What each code means, for every command (``serve``, ``now``, ``status``, ``txn status``,
#: ``txn abort``, ``bench``, ``skew``, ``cluster``).
MEANINGS: dict[int, str] = {
    EXIT_OK: "ok: serve stopped gracefully; now, bench: answered; status: the node is serving; "
    "txn status: committed; txn abort: the transaction is aborted (now or before); skew: the "
    "offset is within the serving level; cluster: stopped by Ctrl-C or SIGTERM",
    EXIT_FAILED: "failed: serve could not start, or stopped on a fatal error; the request "
    "failed; status: the node is not serving; txn status: aborted; txn abort: it had committed, "
    "so it stays committed; skew: the offset is past the serving level; cluster: could not "
    "start, or one of its processes exited",
    EXIT_USAGE: "bad usage or configuration: unknown or impossible flags and values (timeouts, "
    "ports, targets, counts, keys), bad config or TLS files given to serve, a malformed request "
    "(INVALID_ARGUMENT), a --count above the server's max_count",
    EXIT_UNREACHABLE: "the oracle could not be reached (UNAVAILABLE from the network after the "
    "retries) or timed out; skew: no usable NTP answer",
    EXIT_UNKNOWN: "txn status: the transaction id is unknown",
    EXIT_REFUSED: "the oracle was reached and refused: not serving (starting, shutting down, "
    "clock skew; the reason is printed) or overloaded (RESOURCE_EXHAUSTED)",
    EXIT_DISABLED: "the service is disabled by the node's configuration (permanent, not retried)",
    EXIT_TLS_HANDSHAKE: "the TLS handshake failed (the message names the likely cause)",
    EXIT_INTERRUPTED: "interrupted (Ctrl-C)",
}


def epilog() -> str:
    """The exit-code table for ``--help``."""
    return "exit codes:\n" + "\n".join(
        textwrap.fill(meaning, 88, initial_indent=f"  {code:<4} ", subsequent_indent=" " * 7)
        for code, meaning in MEANINGS.items()
    )


def exit_code_of(err: OracleError) -> int:
    """The exit code of a status the oracle answered with (not ``UNAVAILABLE``/timeouts)."""
    if err.code == grpc.StatusCode.INVALID_ARGUMENT or err.refusal == REFUSAL_OVER_LIMIT:
        return EXIT_USAGE  # the request itself was wrong: malformed, or above max_count
    if err.code == grpc.StatusCode.RESOURCE_EXHAUSTED:
        return EXIT_REFUSED  # the server is overloaded; the same request may pass later
    return EXIT_FAILED


def failure_of(err: OracleError, target: str) -> tuple[str, int]:
    """What to print after the command's name when a call on ``target`` failed with ``err``, and
    the exit code: one mapping for every client command, and for each node of ``status``."""
    if isinstance(err, OracleDisabledError):
        return (
            f"{target} refused for good: {err.details} (disabled by its configuration; not "
            "retried)",
            EXIT_DISABLED,
        )
    if isinstance(err, OracleTlsHandshakeError):
        return f"TLS handshake with {target} failed: {err.cause}", EXIT_TLS_HANDSHAKE
    if isinstance(err, OracleNotServingError):
        return f"{target} refused: {err.details}", EXIT_REFUSED
    if isinstance(err, OracleUnavailableError | OracleTimeoutError):
        return f"cannot reach {target}: {err}", EXIT_UNREACHABLE
    return str(err), exit_code_of(err)
