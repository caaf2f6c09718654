"""Everything written to the server's stderr, as one JSON object per line: fd 2 through a relay.

The server's own records are JSON already (:mod:`hlc_oracle.server.logs`), but gRPC's C core
writes its own lines straight to fd 2, in its own format::

    I1130 09:17:52.482876   11307 ssl_transport_security.cc:2563] Handshake failed with error ...

and so do a Python traceback, the commit log's fatal-fsync line (Rust) and the ``serve`` command's
start-up error. With ``log.format = json`` the server points fd 2 at a pipe read by a small relay
*process*, which passes JSON lines through unchanged and turns every other line into a record:
grpc-core's lines keep their severity, source and thread (``logger: "grpc"``), and a failed TLS
handshake becomes ``message: "TLS handshake failed"`` with the ``error`` and, when it can tell,
its ``likely_cause``. A process rather than a thread, because the lines that matter most come
just before the server dies (an abort after a failed fsync, a crash): the relay outlives it,
reads the pipe to its end and exits.

Which lines grpc-core writes is its own setting, ``GRPC_VERBOSITY`` (``DEBUG``, ``INFO``,
``ERROR``, ``NONE``), read once when gRPC starts. Handshake failures are ``INFO`` lines, which
grpcio prints when the variable is unset; ``ERROR`` or ``NONE`` silences them.

This file only imports the standard library: the relay runs it as a script, so it starts in
milliseconds.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from typing import IO, Any

#: How grpc-core (abseil logging) starts a line: severity, MMDD, time, thread id, file:line.
GRPC_LINE = re.compile(
    r"^(?P<severity>[IWEF])\d{4} \d\d:\d\d:\d\d\.\d+\s+(?P<thread>\d+)\s+"
    r"(?P<source>[^\s\]]+:\d+)\]\s?(?P<message>.*)$"
)
GRPC_LEVELS = {"I": "info", "W": "warning", "E": "error", "F": "critical"}
HANDSHAKE_FAILED = "Handshake failed with error "

#: BoringSSL's reasons for refusing a client, and what the operator should read into them.
HANDSHAKE_CAUSES = (
    ("PEER_DID_NOT_RETURN_A_CERTIFICATE", "the client sent no certificate (mutual TLS is on)"),
    ("certificate has expired", "the client's certificate has expired"),
    ("certificate is not yet valid", "the client's certificate is not valid yet"),
    (
        "unable to get local issuer certificate",
        "the client's certificate is not signed by tls.client_ca_file (another CA)",
    ),
    (
        "self signed certificate",
        "the client's certificate is self-signed, not signed by tls.client_ca_file",
    ),
    ("WRONG_VERSION_NUMBER", "the client spoke plaintext (no TLS) to this TLS port"),
    ("HTTP_REQUEST", "the client spoke plaintext (no TLS) to this TLS port"),
)


def _now() -> str:
    now = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now % 1 * 1000):03d}Z"


def record_for(line: str) -> dict[str, Any]:
    """The JSON record for one line of stderr that is not JSON already."""
    found = GRPC_LINE.match(line)
    if found is None:
        return {"ts": _now(), "level": "error", "logger": "stderr", "message": line}
    message = found["message"]
    record: dict[str, Any] = {
        "ts": _now(),
        "level": GRPC_LEVELS[found["severity"]],
        "logger": "grpc",
        "message": message,
        "source": found["source"],
        "thread": int(found["thread"]),
    }
    if message.startswith(HANDSHAKE_FAILED):
        # A refused client is the operator's business whatever gRPC's own severity for it.
        record.update(level="warning", message="TLS handshake failed")
        record["error"] = message.removeprefix(HANDSHAKE_FAILED)
        for marker, cause in HANDSHAKE_CAUSES:
            if marker in message:
                record["likely_cause"] = cause
                break
    return record


def convert(raw: bytes) -> bytes:
    """One line (without its newline) as a JSON line: unchanged when it is a JSON object."""
    text = raw.decode("utf-8", "replace").rstrip("\r")
    if text.startswith("{"):
        with contextlib.suppress(ValueError):
            if isinstance(json.loads(text), dict):
                return raw + b"\n"
    return json.dumps(record_for(text), default=str).encode() + b"\n"


def relay(source: IO[bytes], sink: IO[bytes]) -> None:
    """Copies ``source`` to ``sink`` line by line, converted, until the end of ``source``."""
    for line in source:
        if line.strip():
            sink.write(convert(line.rstrip(b"\n")))
            sink.flush()


@contextlib.contextmanager
def json_stderr(enabled: bool = True) -> Iterator[None]:
    """While inside, fd 2 of this process goes through the relay (nothing when not ``enabled``).

    On leaving, fd 2 is restored and the relay, reading to the end of the pipe, exits.
    """
    if not enabled:
        yield
        return
    sys.stderr.flush()
    original = os.dup(2)
    read_end, write_end = os.pipe()
    try:
        process = subprocess.Popen(
            [sys.executable, "-I", os.path.abspath(__file__)],
            stdin=read_end,
            stdout=original,
            stderr=original,
        )
    except OSError:
        for fd in (read_end, write_end, original):
            os.close(fd)
        raise
    os.close(read_end)
    os.dup2(write_end, 2)
    os.close(write_end)
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(original, 2)  # the pipe's last writer goes: the relay reads its end
        os.close(original)
        # Not process.wait(timeout=...): it polls with time.sleep, which fails (EINVAL) under
        # libfaketime with its monotonic clock left true (the skewed-clock tests' nodes).
        waiter = threading.Thread(target=process.wait, daemon=True)
        waiter.start()
        waiter.join(10)
        if waiter.is_alive():
            process.kill()
            process.wait()


def main() -> None:
    # The server's signals are not the relay's: it stops when the server is gone (end of pipe),
    # so a Ctrl-C to the process group cannot lose the server's last lines.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    relay(sys.stdin.buffer, sys.stdout.buffer)


if __name__ == "__main__":
    main()
