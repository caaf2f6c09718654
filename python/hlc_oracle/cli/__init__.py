"""The ``hlc-oracle`` command: ``serve``, ``now``, ``status``, ``txn``, ``skew``, ``bench``.

One module per command family: ``serve``, ``calls`` (``now``, ``status``, ``txn``), ``bench``
and ``skew``; ``options`` holds the options every client command shares, ``exit_codes`` the codes.

Exit codes: 0 success; 1 the oracle failed the request or could not start (``txn status``: the
transaction aborted; ``status``: the node is not serving); 2 bad usage or configuration,
including a ``--count`` above the server's ``max_count``; 3 the oracle could not be reached
(``UNAVAILABLE`` from the network after retries, or timeout); 4 ``txn status``: the id is
unknown; 5 the oracle was reached and refused: not serving (starting, shutting down, clock skew;
its reason is printed) or overloaded (``RESOURCE_EXHAUSTED``: too many calls, commit queue full);
6 the service is disabled by the node's configuration (permanent); 7 the TLS handshake failed
(the message names the likely cause); 130 interrupted.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from hlc_oracle import config as config_module
from hlc_oracle.cli import bench, calls, serve, skew
from hlc_oracle.cli.exit_codes import (
    EXIT_DISABLED,
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_REFUSED,
    EXIT_TLS_HANDSHAKE,
    EXIT_UNKNOWN,
    EXIT_UNREACHABLE,
    EXIT_USAGE,
    exit_code_of,
)
from hlc_oracle.client import (
    OracleDisabledError,
    OracleError,
    OracleNotServingError,
    OracleTimeoutError,
    OracleTlsHandshakeError,
    OracleUnavailableError,
)

__all__ = [
    "EXIT_DISABLED",
    "EXIT_FAILED",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_REFUSED",
    "EXIT_TLS_HANDSHAKE",
    "EXIT_UNKNOWN",
    "EXIT_UNREACHABLE",
    "EXIT_USAGE",
    "build_parser",
    "exit_code_of",
    "main",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hlc-oracle",
        description="Hybrid-logical-clock timestamp oracle: serve it, or ask one for timestamps.",
        epilog="Exit codes: 0 ok; 1 request failed or server could not start (txn status: "
        "aborted; status: not serving); 2 bad usage or configuration (also a count above the "
        "server's max_count); 3 oracle unreachable or timed out; 4 txn status: unknown id; "
        "5 oracle reached but refused (not serving, or overloaded); 6 service disabled by the "
        "node's configuration (permanent); 7 TLS handshake failed; 130 interrupted.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve.add_parser(commands)
    calls.add_parsers(commands)
    skew.add_parser(commands)
    bench.add_parser(commands)
    return parser


COMMANDS = {
    "serve": serve.run,
    "now": calls.cmd_now,
    "status": calls.cmd_status,
    "skew": skew.run,
    "txn": calls.cmd_txn,
    "bench": bench.run,
}


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except config_module.ConfigError as err:
        print(f"hlc-oracle {args.command}: {err}", file=sys.stderr)
        return EXIT_USAGE
    except OracleDisabledError as err:
        print(
            f"hlc-oracle {args.command}: {args.target} refused for good: {err.details} "
            "(disabled by its configuration; not retried)",
            file=sys.stderr,
        )
        return EXIT_DISABLED
    except OracleTlsHandshakeError as err:
        print(
            f"hlc-oracle {args.command}: TLS handshake with {args.target} failed: {err.cause}",
            file=sys.stderr,
        )
        return EXIT_TLS_HANDSHAKE
    except OracleNotServingError as err:
        print(f"hlc-oracle {args.command}: {args.target} refused: {err.details}", file=sys.stderr)
        return EXIT_REFUSED
    except (OracleUnavailableError, OracleTimeoutError) as err:
        print(f"hlc-oracle {args.command}: cannot reach {args.target}: {err}", file=sys.stderr)
        return EXIT_UNREACHABLE
    except OracleError as err:
        print(f"hlc-oracle {args.command}: {err}", file=sys.stderr)
        return exit_code_of(err)
    except (TypeError, ValueError) as err:
        print(f"hlc-oracle {args.command}: {err}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # The reader went away (`hlc-oracle status | head`): stop writing without a traceback,
        # as the Python documentation's SIGPIPE note recommends.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_FAILED
