"""Health, reflection, metrics, TLS and the command line against the real server."""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Callable
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)
from hlc_oracle import cli
from hlc_oracle.client import (
    OracleClient,
    OracleError,
    OracleUnavailableError,
    RetryPolicy,
    channel_credentials,
)
from hlc_oracle.proto import oracle_pb2 as pb
from hlc_oracle.tls import PemError

from tests.support.commands import run_cli
from tests.support.oracle_process import OracleProcess


def test_health_reports_serving_for_the_server_and_the_service(oracle: OracleProcess) -> None:
    with grpc.insecure_channel(oracle.target) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        for service in ("", "hlc_oracle.v1.TimestampOracle"):
            response = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
            assert response.status == health_pb2.HealthCheckResponse.SERVING


def test_reflection_lists_and_describes_the_service(oracle: OracleProcess) -> None:
    with grpc.insecure_channel(oracle.target) as channel:
        database = ProtoReflectionDescriptorDatabase(channel)
        services = database.get_services()
        assert "hlc_oracle.v1.TimestampOracle" in services
        assert "grpc.health.v1.Health" in services
        described = database.FindFileContainingSymbol("hlc_oracle.v1.TimestampOracle")
        methods = {m.name for m in described.service[0].method}
        assert methods == {
            "GetTimestamps",
            "StreamTimestamps",
            "Observe",
            "GetStatus",
            "GetPeerClock",
        }


def test_metrics_count_requests_timestamps_and_window_saves(oracle: OracleProcess) -> None:
    with OracleClient(oracle.target) as client:
        client.get_timestamps_unary(250)
        client.get_timestamps(50)  # through the merged stream
        with pytest.raises(Exception, match="INVALID_ARGUMENT"):
            client.get_timestamps_unary(0)
    url = f"http://127.0.0.1:{oracle.metrics_port}/metrics"
    with urllib.request.urlopen(url, timeout=5) as response:
        text = response.read().decode()
    samples = {
        line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("hlc_oracle_")
    }
    assert samples['hlc_oracle_requests_total{code="OK",method="GetTimestamps"}'] >= 1
    assert samples['hlc_oracle_requests_total{code="INVALID_ARGUMENT",method="GetTimestamps"}'] >= 1
    assert samples['hlc_oracle_requests_total{code="OK",method="StreamTimestamps"}'] >= 1
    assert samples["hlc_oracle_timestamps_total"] >= 300
    assert samples["hlc_oracle_window_saves_total"] >= 1
    assert samples["hlc_oracle_serving"] == 1
    assert (
        'hlc_oracle_request_latency_seconds_bucket{le="0.0001",method="GetTimestamps"}' in samples
    )


def test_tls(start_oracle: Callable[..., OracleProcess], pki: dict[str, Path]) -> None:
    server = start_oracle(
        "--tls-cert", str(pki["server.pem"]), "--tls-key", str(pki["server-key.pem"]),
        wait_healthy=False,
    )  # fmt: skip
    with OracleClient(server.target, credentials=channel_credentials(pki["ca.pem"])) as client:
        assert client.get_timestamp() < client.get_timestamp()
    # A plaintext client cannot talk to it.
    no_retry = RetryPolicy(attempts=1)
    with (
        OracleClient(server.target, retry=no_retry, timeout=2) as plain,
        pytest.raises(OracleUnavailableError),
    ):
        plain.get_timestamps(1)


def test_mutual_tls(start_oracle: Callable[..., OracleProcess], pki: dict[str, Path]) -> None:
    server = start_oracle(
        "--tls-cert", str(pki["server.pem"]), "--tls-key", str(pki["server-key.pem"]),
        "--tls-client-ca", str(pki["ca.pem"]),
        wait_healthy=False,
    )  # fmt: skip
    with_cert = channel_credentials(pki["ca.pem"], pki["client-key.pem"], pki["client.pem"])
    with OracleClient(server.target, credentials=with_cert) as client:
        assert client.status().serving
    without_cert = channel_credentials(pki["ca.pem"])
    no_retry = RetryPolicy(attempts=1)
    with (
        OracleClient(server.target, credentials=without_cert, retry=no_retry, timeout=2) as bad,
        pytest.raises(OracleUnavailableError),
    ):
        bad.status()


def test_cli_now_status_and_bench(oracle: OracleProcess) -> None:
    now = run_cli("now", "--target", oracle.target, "--count", "3", "--json")
    assert now.returncode == 0, now.stderr
    stamps = json.loads(now.stdout)
    assert len(stamps) == 3
    assert [s["logical"] for s in stamps][1:] == [
        stamps[0]["logical"] + 1,
        stamps[0]["logical"] + 2,
    ]
    status = run_cli("status", "--target", oracle.target, "--json")
    assert status.returncode == 0, status.stderr
    assert json.loads(status.stdout)["serving"] is True
    bench = run_cli(
        "bench", "--target", oracle.target, "--requests", "2000", "--concurrency", "32",
    )  # fmt: skip
    assert bench.returncode == 0, bench.stderr
    result = json.loads(bench.stdout.splitlines()[-1])
    assert result["calls"] == 2000
    assert result["merged_requests"] < 2000
    assert result["latency_us"]["p50"] <= result["latency_us"]["p99"]


def test_cli_exit_codes(oracle: OracleProcess, tmp_path: Path) -> None:
    for command in ("serve", "now", "status", "bench"):
        helped = run_cli(command, "--help")
        assert helped.returncode == 0
        assert "usage: hlc-oracle" in helped.stdout
    assert run_cli("now", "--target", oracle.target, "--count", "0").returncode == 2
    unreachable = run_cli("now", "--target", "127.0.0.1:1", "--retries", "1", "--timeout", "1")
    assert unreachable.returncode == 3
    assert "cannot reach 127.0.0.1:1" in unreachable.stderr
    bad_config = run_cli("serve", "--data-dir", str(tmp_path), "--node-id", "70000")
    assert bad_config.returncode == 2
    assert "clock.node_id must be in 0..65535, got 70000" in bad_config.stderr
    assert run_cli("frobnicate").returncode == 2
    taken = run_cli("serve", "--listen", oracle.target, "--data-dir", str(tmp_path / "second"))
    assert taken.returncode == 1
    # Said in words, not as grpc-core's "Failed to bind ... set GRPC_VERBOSITY=debug".
    assert f"cannot listen on {oracle.target}: address already in use" in taken.stderr
    assert "GRPC_VERBOSITY" not in taken.stderr and "Failed to bind" not in taken.stderr
    not_a_directory = tmp_path / "file"
    not_a_directory.write_text("x")
    unusable = run_cli("serve", "--listen", "127.0.0.1:0", "--data-dir", str(not_a_directory))
    assert unusable.returncode == 1
    assert f"the data dir {not_a_directory} is not a directory" in unusable.stderr


@pytest.mark.parametrize(
    ("mode", "count", "calls", "timestamps"),
    [("ranges", "1000", 40, 40_000), ("unary", "7", 40, 280), ("merged", None, 40, 40)],
)
def test_cli_bench_counts_timestamps_in_every_mode(
    oracle: OracleProcess, mode: str, count: str | None, calls: int, timestamps: int
) -> None:
    args = ["bench", "--target", oracle.target, "--mode", mode, "--requests", str(calls)]
    if count is not None:
        args += ["--count", count]
    bench = run_cli(*args, "--concurrency", "4", "--no-progress")
    assert bench.returncode == 0, bench.stderr
    result = json.loads(bench.stdout.splitlines()[-1])
    assert (result["calls"], result["timestamps"]) == (calls, timestamps)
    assert f"{calls} calls ({timestamps} timestamps)" in bench.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--mode", "merged", "--count", "5"], "--count applies to --mode ranges and unary only"),
        (["--count", "5"], "--count applies to --mode ranges and unary only"),
        (["--mode", "commit", "--count", "5"], "each commit call is one transaction"),
        (["--mode", "ranges", "--count", "0"], "--count: must be at least 1, got 0"),
        (["--duration", "-1"], "--duration: must be a finite number of seconds above 0, got '-1'"),
        (["--duration", "0"], "above 0, got '0'"),
        (["--duration", "nan"], "above 0, got 'nan'"),
    ],
)
def test_cli_bench_refuses_meaningless_arguments(
    oracle: OracleProcess, args: list[str], message: str
) -> None:
    bench = run_cli("bench", "--target", oracle.target, "--requests", "10", *args)
    assert bench.returncode == 2, bench.stdout + bench.stderr
    assert message in bench.stderr
    assert "nan" not in bench.stdout.lower()


def test_cli_now_over_tls_and_mutual_tls(
    start_oracle: Callable[..., OracleProcess], pki: dict[str, Path]
) -> None:
    server = start_oracle(
        "--tls-cert", str(pki["server.pem"]), "--tls-key", str(pki["server-key.pem"]),
        "--tls-client-ca", str(pki["ca.pem"]),
        wait_healthy=False,
    )  # fmt: skip
    now = run_cli(
        "now", "--target", server.target, "--tls-ca", str(pki["ca.pem"]),
        "--tls-cert", str(pki["client.pem"]), "--tls-key", str(pki["client-key.pem"]),
    )  # fmt: skip
    assert now.returncode == 0, now.stderr
    assert now.stdout.strip()


def fill(text: str, files: dict[str, str]) -> str:
    """``text`` with each ``{name}`` replaced by the path ``files[name]``."""
    for name, path in files.items():
        text = text.replace("{" + name + "}", path)
    return text


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--tls-cert", "{client.pem}"], "--tls-cert needs --tls-key"),
        (["--tls-key", "{client-key.pem}"], "--tls-key needs --tls-cert"),
        (["--tls-ca", "/nonexistent/ca.pem"], "cannot read the CA bundle /nonexistent/ca.pem"),
        (["--tls-ca", "{client-key.pem}"], "is not a PEM certificate"),
        (["--tls-ca", "{garbage}"], "{garbage} is not a PEM certificate"),
        (
            ["--tls-ca", "{ca.pem}", "--tls-cert", "{client.pem}", "--tls-key", "{garbage}"],
            "the client key {garbage} is not a PEM private key",
        ),
        (
            ["--tls-cert", "/nonexistent/c.pem", "--tls-key", "{client-key.pem}"],
            "cannot read the client certificate /nonexistent/c.pem",
        ),
    ],
)
def test_cli_tls_flags_are_checked_before_connecting(
    pki: dict[str, Path], tmp_path: Path, flags: list[str], message: str
) -> None:
    files = {name: str(path) for name, path in pki.items()}
    files["garbage"] = str(tmp_path / "garbage.pem")
    (tmp_path / "garbage.pem").write_text("not pem at all\n")
    args = [fill(flag, files) for flag in flags]
    # Nothing listens on port 1: a usage error must be found before any connection attempt.
    result = run_cli("now", "--target", "127.0.0.1:1", "--retries", "1", *args)
    assert result.returncode == 2, result.stderr
    assert fill(message, files) in result.stderr
    assert "Traceback" not in result.stderr


def test_channel_credentials_raise_typed_errors_naming_the_file(
    pki: dict[str, Path], tmp_path: Path
) -> None:
    with pytest.raises(ValueError, match="private_key is missing"):
        channel_credentials(pki["ca.pem"], None, pki["client.pem"])
    with pytest.raises(ValueError, match="certificate_chain is missing"):
        channel_credentials(pki["ca.pem"], pki["client-key.pem"])
    missing = tmp_path / "missing.pem"
    with pytest.raises(FileNotFoundError, match=f"cannot read the CA bundle {missing}"):
        channel_credentials(missing)
    garbage = tmp_path / "garbage.pem"
    garbage.write_bytes(b"-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n")
    with pytest.raises(PemError, match=f"the CA bundle {garbage}: the CERTIFICATE block"):
        channel_credentials(garbage)
    with pytest.raises(PemError, match=r"client key .* is not a PEM private key"):
        channel_credentials(pki["ca.pem"], pki["client.pem"], pki["client.pem"])
    # PEM bytes are checked too.
    with pytest.raises(PemError, match=r"the CA bundle \(bytes\) is not a PEM certificate"):
        channel_credentials(b"nope")
    assert channel_credentials(pki["ca.pem"].read_bytes()) is not None


@pytest.mark.parametrize(
    ("cert", "key", "message"),
    [
        ("{garbage}", "{server-key.pem}", "the TLS certificate (tls.cert_file) {garbage} is not"),
        ("{server.pem}", "{garbage}", "the TLS key (tls.key_file) {garbage} is not a PEM private"),
        ("{server.pem}", "{server.pem}", "(tls.key_file) {server.pem} is not a PEM private key"),
        ("{missing}", "{server-key.pem}", "cannot read the TLS certificate (tls.cert_file)"),
    ],
)
def test_serve_checks_tls_files_before_binding(
    pki: dict[str, Path], tmp_path: Path, cert: str, key: str, message: str
) -> None:
    files = {name: str(path) for name, path in pki.items()}
    files["garbage"] = str(tmp_path / "garbage.pem")
    files["missing"] = str(tmp_path / "missing.pem")
    (tmp_path / "garbage.pem").write_text("garbage\n")
    result = run_cli(
        "serve", "--listen", "127.0.0.1:0", "--data-dir", str(tmp_path / "data"),
        "--tls-cert", fill(cert, files), "--tls-key", fill(key, files),
    )  # fmt: skip
    # A usage error (exit 2), which the systemd unit's RestartPreventExitStatus=2 does not restart.
    assert result.returncode == 2, result.stderr
    assert fill(message, files) in result.stderr
    assert "Failed to bind" not in result.stderr


def test_cli_exit_codes_tell_usage_from_refusal(oracle: OracleProcess) -> None:
    helped = run_cli("--help")
    epilog = " ".join(helped.stdout.split())
    for text in (
        "0 ok",
        "2 bad usage or configuration",
        "a --count above the server's max_count",
        "3 the oracle could not be reached",
        "4 txn status: the transaction id is unknown",
        "5 the oracle was reached and refused",
        "130 interrupted",
    ):
        assert text in epilog, epilog
    # A count above the server's limit is the caller's mistake: exit 2.
    over = run_cli("now", "--target", oracle.target, "--count", "2000000")
    assert over.returncode == 2, over.stderr
    assert "above the server's limit max_count=1000000" in over.stderr
    # RESOURCE_EXHAUSTED without the over-limit mark is the server's load: exit 5, not 2.
    overloaded = OracleError(grpc.StatusCode.RESOURCE_EXHAUSTED, "Concurrent RPC limit exceeded!")
    assert cli.exit_code_of(overloaded) == cli.EXIT_REFUSED == 5
    over_limit = OracleError(grpc.StatusCode.RESOURCE_EXHAUSTED, "count", refusal="over-limit")
    assert cli.exit_code_of(over_limit) == cli.EXIT_USAGE
    assert cli.exit_code_of(OracleError(grpc.StatusCode.INVALID_ARGUMENT, "x")) == cli.EXIT_USAGE
    assert cli.exit_code_of(OracleError(grpc.StatusCode.INTERNAL, "x")) == cli.EXIT_FAILED


def test_status_shows_every_get_status_field(oracle: OracleProcess) -> None:
    # Every GetStatus field has a same-named OracleStatus attribute (clock.* flattened; the
    # known flag becomes None offsets) and a line in `hlc-oracle status` and its JSON.
    names = [f.name for f in pb.GetStatusResponse.DESCRIPTOR.fields if f.name != "clock"]
    names += [f.name for f in pb.ClockStatus.DESCRIPTOR.fields if f.name != "ntp_offset_known"]
    with OracleClient(oracle.target) as client:
        status = client.status()
    missing = [name for name in names if not hasattr(status, name)]
    assert not missing, missing
    assert (status.skew_warning_level_us, status.skew_serving_level_us) == (250_000, 400_000)
    assert status.ntp_polls >= 0
    as_json = run_cli("status", "--target", oracle.target, "--json")
    assert as_json.returncode == 0, as_json.stderr
    fields = json.loads(as_json.stdout)
    assert set(names) <= set(fields), set(names) - set(fields)
    assert fields["skew_serving_level_us"] == 400_000
    as_text = run_cli("status", "--target", oracle.target)
    assert as_text.returncode == 0, as_text.stderr
    shown = {line.split()[0] for line in as_text.stdout.splitlines() if line.strip()}
    # ntp_servers and peers are one line per server or peer (none here).
    listed = {"ntp_servers", "peers"}
    assert set(names) - listed <= shown, set(names) - listed - shown


def test_status_json_of_several_targets_has_every_field_of_one(oracle: OracleProcess) -> None:
    one = json.loads(run_cli("status", "--target", oracle.target, "--json").stdout)
    assert one["last_timestamp"] is None or "1970" not in one["last_timestamp"]
    # Milliseconds, not 5.043464223000001.
    assert one["uptime_seconds"] == round(one["uptime_seconds"], 3)
    several = run_cli("status", "--target", f"{oracle.target},127.0.0.1:1", "--json")
    assert several.returncode == 0, several.stderr
    answered, unreachable = json.loads(several.stdout)
    assert set(answered) == {"target", *one}
    assert answered["target"] == oracle.target and answered["node_id"] == one["node_id"]
    assert set(unreachable) == {"target", "error"}
