"""Quiets grpc-core's own log lines in the client commands; imported before anything imports grpc.

grpc-core writes INFO lines straight to stderr unless ``GRPC_VERBOSITY`` says otherwise, and reads
that variable once, when ``grpc`` is imported. A client connecting with TLS to a plaintext port
(or refused by the server's TLS) gets one "Handshake failed" line per reconnect attempt, dozens
before the command prints its own one-line diagnosis (which names the likely cause). So the client
commands (``now``, ``status``, ``txn``, ``bench``, ``skew``) start with ``GRPC_VERBOSITY=ERROR``
unless the user set it. ``serve`` keeps grpc-core's lines: its stderr relay turns a failed
handshake into a log record naming the likely cause
(:mod:`hlc_oracle.server.stderr_relay`).

The package's ``__init__`` imports this module before any other, in an import block of its own; a
test runs a client command against a TLS mismatch and checks that stderr holds only the command's
own line.
"""

from __future__ import annotations

import os
import sys

#: The command that keeps grpc-core's INFO lines.
KEEPS_GRPC_LINES = "serve"


def running_as_the_command(argv: list[str]) -> bool:
    """Whether this process is the ``hlc-oracle`` command: its console script, or
    ``python -m hlc_oracle.cli`` (``argv[0]`` is ``-m`` while the package is imported). A program
    or a test runner that imports the package keeps its environment untouched: the servers it
    starts would inherit the variable."""
    return bool(argv) and (argv[0] == "-m" or os.path.basename(argv[0]) == "hlc-oracle")


if (
    "grpc" not in sys.modules
    and running_as_the_command(sys.argv)
    and KEEPS_GRPC_LINES not in sys.argv[1:]
):
    os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
