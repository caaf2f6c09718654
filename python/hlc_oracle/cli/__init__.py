"""The ``hlc-oracle`` command: ``serve``, ``now``, ``status``, ``txn``, ``skew``, ``bench``,
``cluster``.

One module per command family: ``serve``, ``calls`` (``now``, ``status``, ``txn``), ``bench``,
``skew`` and ``cluster`` (a local cluster to try); ``options`` holds the options every client
command shares and the argument types, ``exit_codes`` the codes and what each means for every
command (``--help`` prints the table).
No parser accepts abbreviated options: ``serve --port 50061`` is an error, not ``--port-file``.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from importlib import metadata
from typing import Any

# First, before anything imports grpc (config does, through proto): see _grpc_core_logs.
from hlc_oracle.cli import _grpc_core_logs  # noqa: F401

# isort: split
from hlc_oracle import config as config_module
from hlc_oracle.cli import bench, calls, cluster, serve, skew
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
    failure_of,
)
from hlc_oracle.client import OracleError

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
    cluster.add_parser(commands)
    return parser


COMMANDS = {
    "serve": serve.run,
    "now": calls.cmd_now,
    "status": calls.cmd_status,
    "skew": skew.run,
    "txn": calls.cmd_txn,
    "bench": bench.run,
    "cluster": cluster.run,
}


def chosen_parser(parser: argparse.ArgumentParser, args: argparse.Namespace) -> Any:
    """The parser of the command ``args`` came from (``txn status``'s for ``txn status``)."""
    for dest in ("command", "txn_command"):
        subparsers = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        name = getattr(args, dest, None)
        if not subparsers or name is None:
            break
        parser = subparsers[0].choices[name]
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    # argparse reports a subcommand's unknown option with the top-level usage; the usage of the
    # command that was typed is the one that helps.
    words = list(sys.argv[1:] if argv is None else argv)
    args, unknown = parser.parse_known_args(words)
    if unknown:
        typed_after_command = unknown[0] in words[words.index(args.command) + 1 :]
        reporter = chosen_parser(parser, args) if typed_after_command else parser
        reporter.error(f"unrecognized arguments: {' '.join(unknown)}")
    try:
        return COMMANDS[args.command](args)
    except config_module.ConfigError as err:
        print(f"hlc-oracle {args.command}: {err}", file=sys.stderr)
        return EXIT_USAGE
    except OracleError as err:
        message, code = failure_of(err, args.target)
        print(f"hlc-oracle {args.command}: {message}", file=sys.stderr)
        return code
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
