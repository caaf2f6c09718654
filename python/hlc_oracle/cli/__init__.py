"""The ``hlc-oracle`` command: ``serve``, ``now``, ``status``, ``txn``, ``skew``, ``bench``.

One module per command family: ``serve``, ``calls`` (``now``, ``status``, ``txn``), ``bench``
and ``skew``; ``options`` holds the options every client command shares and the argument types,
``exit_codes`` the codes and what each means for every command (``--help`` prints the table).
No parser accepts abbreviated options: ``serve --port 50061`` is an error, not ``--port-file``.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from importlib import metadata
from typing import Any

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
    epilog,
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
    "Parser",
    "build_parser",
    "exit_code_of",
    "main",
]


class Parser(argparse.ArgumentParser):
    """An ``ArgumentParser`` that takes no abbreviations (``allow_abbrev=False``); subcommand
    parsers are made of the parent's class, so every parser of the command is one of these."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)


def version() -> str:
    try:
        return metadata.version("hlc-oracle")
    except metadata.PackageNotFoundError:
        return "unknown"


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="hlc-oracle",
        description="Hybrid-logical-clock timestamp oracle: serve it, or ask one for timestamps.",
        epilog=epilog(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"hlc-oracle {version()}")
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
        print(f"hlc-oracle {args.command}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # The reader went away (`hlc-oracle status | head`): stop writing without a traceback,
        # as the Python documentation's SIGPIPE note recommends.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_FAILED
