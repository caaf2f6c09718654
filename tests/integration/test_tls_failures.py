"""TLS failures named: the real server logs each refused handshake as a JSON record (grpc-core's
own stderr lines go through the relay), and warns at start-up about a certificate near or past
its expiry; the client tells a handshake failure from an unreachable server
(``OracleTlsHandshakeError``, exit code 7) and names the likely cause. Certificates are made in
the test (:mod:`tests.support.pki`)."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hlc_oracle.cli import EXIT_TLS_HANDSHAKE, EXIT_UNREACHABLE
from hlc_oracle.client import (
    OracleClient,
    OracleTlsHandshakeError,
    OracleUnavailableError,
    RetryPolicy,
    channel_credentials,
)
from hlc_oracle.server.stderr_relay import convert, record_for

from tests.support.commands import CLI
from tests.support.oracle_process import OracleProcess

StartOracle = Callable[..., OracleProcess]


def mutual_tls_server(start_oracle: StartOracle, pki: dict[str, Path]) -> OracleProcess:
    return start_oracle(
        "--tls-cert", str(pki["server.pem"]), "--tls-key", str(pki["server-key.pem"]),
        "--tls-client-ca", str(pki["ca.pem"]),
        wait_healthy=False,
    )  # fmt: skip


def records(oracle: OracleProcess) -> list[dict[str, Any]]:
    """Every line of the server's log, each of which must be one JSON object."""
    lines = [line for line in oracle.log_text().splitlines() if line.strip()]
    parsed = []
    for line in lines:
        try:
            parsed.append(json.loads(line))
        except ValueError:
            pytest.fail(f"a log line is not JSON: {line!r}")
    return parsed


def wait_for_record(oracle: OracleProcess, **fields: str) -> dict[str, Any]:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        for record in records(oracle):
            if all(record.get(key) == value for key, value in fields.items()):
                return record
        time.sleep(0.05)
    pytest.fail(f"no log record with {fields}:\n{oracle.log_text()}")


def health_check(channel: grpc.Channel) -> None:
    health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=3)


def pem(path: Path) -> bytes:
    return path.read_bytes()


@pytest.mark.parametrize(
    ("client", "cause"),
    [
        ("none", "the client sent no certificate (mutual TLS is on)"),
        ("other-ca-client", "the client's certificate is not signed by tls.client_ca_file"),
        ("expired-client", "the client's certificate has expired"),
        ("plaintext", "the client spoke plaintext (no TLS) to this TLS port"),
    ],
)
def test_a_refused_handshake_is_one_json_record_naming_its_likely_cause(
    start_oracle: StartOracle, pki: dict[str, Path], client: str, cause: str
) -> None:
    oracle = mutual_tls_server(start_oracle, pki)
    if client == "plaintext":
        channel = grpc.insecure_channel(oracle.target)
    else:
        keys = (
            {}
            if client == "none"
            else {
                "private_key": pem(pki[f"{client}-key.pem"]),
                "certificate_chain": pem(pki[f"{client}.pem"]),
            }
        )
        credentials = grpc.ssl_channel_credentials(pem(pki["ca.pem"]), **keys)
        channel = grpc.secure_channel(oracle.target, credentials)
    with channel, pytest.raises(grpc.RpcError):
        health_check(channel)
    record = wait_for_record(oracle, logger="grpc", message="TLS handshake failed")
    assert record["level"] == "warning"
    assert record["likely_cause"].startswith(cause)
    assert "SSL" in record["error"]
    # Stopping writes more records; the whole log, start to end, stays one JSON object a line.
    assert oracle.stop() == 0
    assert records(oracle)[-1]["message"] == "stopped"


def test_the_good_client_still_gets_through(
    start_oracle: StartOracle, pki: dict[str, Path]
) -> None:
    oracle = mutual_tls_server(start_oracle, pki)
    credentials = grpc.ssl_channel_credentials(
        pem(pki["ca.pem"]), pem(pki["client-key.pem"]), pem(pki["client.pem"])
    )
    with grpc.secure_channel(oracle.target, credentials) as channel:
        health_check(channel)
    assert not [r for r in records(oracle) if r.get("message") == "TLS handshake failed"]


@pytest.mark.parametrize(
    ("certificate", "level", "message"),
    [
        ("expiring-server", "warning", "expires in 10.0 days: renew it"),
        ("expired-server", "error", "has expired: clients will refuse the handshake"),
    ],
)
def test_start_up_warns_about_a_certificate_near_or_past_its_expiry(
    start_oracle: StartOracle, pki: dict[str, Path], certificate: str, level: str, message: str
) -> None:
    oracle = start_oracle(
        "--tls-cert", str(pki[f"{certificate}.pem"]),
        "--tls-key", str(pki[f"{certificate}-key.pem"]),
        wait_healthy=False,
    )  # fmt: skip
    path = pki[f"{certificate}.pem"]
    warning = wait_for_record(oracle, message=f"the TLS certificate {path} {message}")
    assert (warning["level"], warning["cert_file"]) == (level, str(path))
    expected_days = 10 if certificate == "expiring-server" else -2
    assert abs(warning["days_left"] - expected_days) < 0.1
    assert warning["not_after"]


def test_a_certificate_valid_for_long_draws_no_warning(
    start_oracle: StartOracle, pki: dict[str, Path]
) -> None:
    oracle = mutual_tls_server(start_oracle, pki)
    wait_for_record(oracle, message="started")
    assert not [r for r in records(oracle) if r.get("cert_file")]


def test_the_relay_outlives_a_killed_server_only_to_read_the_pipe_to_its_end(
    start_oracle: StartOracle,
) -> None:
    oracle = start_oracle()
    assert oracle.process is not None
    pid = oracle.process.pid
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    (relay,) = [
        child
        for child in children
        if "stderr_relay" in Path(f"/proc/{child}/cmdline").read_text(errors="replace")
    ]
    oracle.kill()

    def running() -> bool:
        try:
            state = Path(f"/proc/{relay}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (FileNotFoundError, ProcessLookupError):
            return False
        return state != "Z"  # an exited child not reaped yet by whoever adopted it

    deadline = time.monotonic() + 10
    while running() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not running(), "the relay outlived the end of the pipe"
    assert records(oracle)[-1]["message"] == "started"


def test_the_relay_keeps_json_lines_and_wraps_every_other_line() -> None:
    own = b'{"ts": "2026-11-30T09:00:00.000Z", "level": "info", "message": "started"}'
    assert convert(own) == own + b"\n"
    grpc_line = (
        "E1130 09:17:52.482876   11307 chttp2_transport.cc:1234] ipv4:127.0.0.1:5: connection reset"
    )
    record = record_for(grpc_line)
    assert (record["level"], record["logger"], record["thread"]) == ("error", "grpc", 11307)
    assert record["source"] == "chttp2_transport.cc:1234"
    assert record["message"] == "ipv4:127.0.0.1:5: connection reset"
    assert "likely_cause" not in record
    # Anything else (a traceback, the commit log's fatal line) is an error record of its own.
    wrapped = json.loads(convert(b"hlc-oracle: FATAL: fdatasync of /d/x.wal failed"))
    assert (wrapped["level"], wrapped["logger"]) == ("error", "stderr")
    assert wrapped["message"] == "hlc-oracle: FATAL: fdatasync of /d/x.wal failed"
    assert json.loads(convert(b"[1, 2]"))["message"] == "[1, 2]"  # JSON, but not a record


# --- the client's side ---

ONE_ATTEMPT = RetryPolicy(attempts=1)


@pytest.fixture(scope="module")
def mutual_tls_oracle(
    tmp_path_factory: pytest.TempPathFactory, pki: dict[str, Path]
) -> Iterator[OracleProcess]:
    with OracleProcess(
        tmp_path_factory.mktemp("mtls") / "data",
        "--tls-cert", str(pki["server.pem"]), "--tls-key", str(pki["server-key.pem"]),
        "--tls-client-ca", str(pki["ca.pem"]),
        wait_healthy=False,
    ) as oracle:  # fmt: skip
        yield oracle


# (CA bundle, client certificate, the cause the client names, as it starts)
CLIENT_CASES = {
    "no client certificate": (
        "ca.pem",
        None,
        "the server closed the connection right after the TLS handshake: it requires a client "
        "certificate (mutual TLS): give --tls-cert and --tls-key",
    ),
    "a certificate from another CA": (
        "ca.pem",
        "other-ca-client",
        "the server closed the connection right after the TLS handshake: it does not trust this "
        "client's certificate, issued by CN=other-ca",
    ),
    "an expired certificate": (
        "ca.pem",
        "expired-client",
        "the server closed the connection right after the TLS handshake: this client's "
        "certificate expired at ",
    ),
    "plaintext to the TLS port": (
        None,
        None,
        "the server speaks TLS and this client connected in plaintext",
    ),
    "a server certificate from another CA": (
        "other-ca.pem",
        "client",
        "the server's certificate is not signed by a CA in this client's bundle (--tls-ca)",
    ),
}


def tls_flags(pki: dict[str, Path], ca: str | None, client: str | None) -> list[str]:
    flags = [] if ca is None else ["--tls-ca", str(pki[ca])]
    if client is not None:
        flags += [
            "--tls-cert",
            str(pki[f"{client}.pem"]),
            "--tls-key",
            str(pki[f"{client}-key.pem"]),
        ]
    return flags


@pytest.mark.parametrize("case", CLIENT_CASES)
def test_the_client_names_a_failed_handshake_and_the_command_exits_7(
    mutual_tls_oracle: OracleProcess, pki: dict[str, Path], case: str
) -> None:
    ca, client, cause = CLIENT_CASES[case]
    credentials = (
        None
        if ca is None
        else channel_credentials(
            pki[ca],
            pki[f"{client}-key.pem"] if client else None,
            pki[f"{client}.pem"] if client else None,
        )
    )
    with (
        OracleClient(
            mutual_tls_oracle.target, credentials=credentials, retry=ONE_ATTEMPT, timeout=3
        ) as oracle,
        pytest.raises(OracleTlsHandshakeError) as failed,
    ):
        oracle.status()
    assert failed.value.cause.startswith(cause), failed.value.cause
    assert str(failed.value).startswith("UNAVAILABLE: TLS handshake failed: ")
    assert isinstance(failed.value, OracleUnavailableError)  # code that catches that still works
    done = mutual_tls_oracle.cli(
        "now", "--retries", "1", "--timeout", "3", *tls_flags(pki, ca, client)
    )
    assert done.returncode == EXIT_TLS_HANDSHAKE, done.stderr
    expected = f"hlc-oracle now: TLS handshake with {mutual_tls_oracle.target} failed: {cause}"
    # Alone: the client commands quiet grpc-core's own "Handshake failed" lines (one per
    # reconnect attempt) unless GRPC_VERBOSITY is set.
    ours = done.stderr.splitlines()
    assert len(ours) == 1 and ours[0].startswith(expected), done.stderr
    assert "cannot reach" not in done.stderr


def test_tls_to_a_plaintext_port_is_named_too(
    start_oracle: StartOracle, pki: dict[str, Path]
) -> None:
    plaintext = start_oracle()
    with (
        OracleClient(
            plaintext.target, credentials=channel_credentials(pki["ca.pem"]), retry=ONE_ATTEMPT
        ) as oracle,
        pytest.raises(OracleTlsHandshakeError, match="the server does not speak TLS"),
    ):
        oracle.get_timestamp()
    # The command prints its one line, without grpc-core's "Handshake failed" line for every
    # reconnect attempt before it (dozens in two seconds).
    done = plaintext.cli("now", "--timeout", "2", "--tls-ca", str(pki["ca.pem"]))
    assert done.returncode == EXIT_TLS_HANDSHAKE, done.stderr
    assert done.stderr.splitlines() == [
        f"hlc-oracle now: TLS handshake with {plaintext.target} failed: the server does not "
        "speak TLS (a plaintext port?): connect without --tls-ca, or check the port"
    ]


def test_an_unreachable_server_stays_unreachable_with_tls(pki: dict[str, Path]) -> None:
    credentials = channel_credentials(pki["ca.pem"], pki["client-key.pem"], pki["client.pem"])
    with (
        OracleClient(
            "127.0.0.1:1", credentials=credentials, retry=ONE_ATTEMPT, timeout=2
        ) as oracle,
        pytest.raises(OracleUnavailableError) as failed,
    ):
        oracle.status()
    assert not isinstance(failed.value, OracleTlsHandshakeError)


def test_the_good_client_gets_through_the_mutual_tls_oracle(
    mutual_tls_oracle: OracleProcess, pki: dict[str, Path]
) -> None:
    done = mutual_tls_oracle.cli("now", *tls_flags(pki, "ca.pem", "client"))
    assert done.returncode == 0, done.stderr
    unreachable = subprocess.run(
        [
            *CLI, "status", "--target", "127.0.0.1:1",
            "--retries", "1", "--timeout", "1", *tls_flags(pki, "ca.pem", "client"),
        ],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert unreachable.returncode == EXIT_UNREACHABLE, unreachable.stderr
