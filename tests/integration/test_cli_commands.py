"""The ``hlc-oracle`` command run as a user runs it, in a process of its own and without a
server: ``--version``, the exit-code table of its help, help texts with defaults as typed, usage
errors in plain text, a setting given twice, ``status`` of unreachable targets, ``serve`` with bad
TLS files (exit 2), ``skew --json``'s policies, and the quiet gRPC core of the command alone."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

from hlc_oracle.cli import EXIT_UNREACHABLE, EXIT_USAGE
from hlc_oracle.cli.exit_codes import MEANINGS

from tests.support.commands import run_cli
from tests.support.repository import ROOT


def test_status_of_several_targets_none_reachable_exits_3_as_for_one() -> None:
    # Nothing listens on ports 1 and 2 of loopback: unreachable, as the exit-code table says.
    one = run_cli("status", "--target", "127.0.0.1:1", "--timeout", "1")
    several = run_cli("status", "--target", "127.0.0.1:1,127.0.0.1:2", "--timeout", "1")
    assert one.returncode == several.returncode == EXIT_UNREACHABLE, several.stderr
    assert several.stdout.count("unreachable") == 2


def test_a_commit_log_in_the_data_dir_is_a_usage_error_in_plain_text(tmp_path: Path) -> None:
    done = run_cli("serve", "--data-dir", str(tmp_path), "--set", f"commit.log_dir={tmp_path}")
    assert done.returncode == EXIT_USAGE, done.stderr
    # Plain text like every other configuration error, not a JSON log record.
    assert done.stderr.startswith(
        f"hlc-oracle serve: command line: commit.log_dir {tmp_path} is the data dir itself"
    ), done.stderr


def test_only_the_command_quiets_grpc_core() -> None:
    # A program (or pytest) importing the CLI must not set GRPC_VERBOSITY for itself and the
    # servers it starts; the command itself does (see hlc_oracle/cli/_grpc_core_logs.py).
    env = {key: value for key, value in os.environ.items() if key != "GRPC_VERBOSITY"}
    program = "import os, hlc_oracle.cli; print(os.environ.get('GRPC_VERBOSITY'))"
    imported = subprocess.run(
        [sys.executable, "-c", program],
        capture_output=True, text=True, timeout=60, check=True, env=env,
    )  # fmt: skip
    assert imported.stdout.strip() == "None"
    from hlc_oracle.cli._grpc_core_logs import running_as_the_command

    assert running_as_the_command(["-m", "now"])
    assert running_as_the_command(["/venv/bin/hlc-oracle", "now"])
    assert not running_as_the_command(["/venv/bin/pytest", "tests"])
    assert not running_as_the_command(["-c"])


def test_version() -> None:
    done = run_cli("--version")
    assert done.returncode == 0
    assert re.fullmatch(r"hlc-oracle \d+\.\d+\.\d+\S*\n", done.stdout), done.stdout


def test_one_exit_code_table_in_help_and_docs() -> None:
    helped = run_cli("--help").stdout
    for code in MEANINGS:
        assert re.search(rf"^  {code}\s", helped, re.M), code
    # Every command is covered, txn abort included.
    table = " ".join(MEANINGS.values())
    for command in (
        "serve",
        "now",
        "status",
        "txn status",
        "txn abort",
        "bench",
        "skew",
        "cluster",
    ):
        assert command in table, command
    page = (ROOT / "docs" / "cli.md").read_text()
    section = page[page.index("Command exit codes, the same for every command") :] + "\n\n"
    rows = re.findall(
        r"^\| (\d+) \|", section[: section.index("\n\n", section.index("| ---"))], re.M
    )
    assert [int(code) for code in rows] == list(MEANINGS)


def test_serve_help_prints_defaults_as_typed() -> None:
    helped = " ".join(run_cli("serve", "--help").stdout.split())
    assert "(default hlc-oracle-data;" in helped
    assert "PosixPath" not in helped and "(default ()" not in helped and "None;" not in helped
    assert "(default none; HLC_ORACLE_NTP_SERVERS)" in helped
    assert "(default unset; HLC_ORACLE_SERVER_PORT_FILE)" in helped


def test_a_setting_given_by_its_flag_and_by_set_is_refused(tmp_path: Path) -> None:
    done = run_cli(
        "serve", "--data-dir", str(tmp_path), "--set", "clock.node_id=4", "--node-id", "5"
    )
    assert done.returncode == EXIT_USAGE
    assert "clock.node_id must be given once, got --node-id 5 and --set clock.node_id=4" in (
        done.stderr
    )


def test_serve_with_bad_tls_files_exits_2(tmp_path: Path) -> None:
    # 2, not 1: systemd's RestartPreventExitStatus=2 must not restart it in a loop.
    (tmp_path / "cert.pem").write_text("not a certificate\n")
    for cert, key in ((tmp_path / "missing.pem", tmp_path / "key.pem"),
                      (tmp_path / "cert.pem", tmp_path / "cert.pem")):  # fmt: skip
        done = run_cli(
            "serve", "--listen", "127.0.0.1:0", "--data-dir", str(tmp_path / "data"),
            "--tls-cert", str(cert), "--tls-key", str(key), "--log-format", "text",
        )  # fmt: skip
        assert done.returncode == EXIT_USAGE, done.stderr
        assert str(cert) in done.stderr


def test_serve_with_the_key_of_another_certificate_exits_2(tmp_path: Path) -> None:
    from tests.support.pki import make_pki

    pki = make_pki(tmp_path / "pki")
    cert, key = pki["server.pem"], pki["client-key.pem"]
    done = run_cli(
        "serve", "--listen", "127.0.0.1:0", "--data-dir", str(tmp_path / "data"),
        "--tls-cert", str(cert), "--tls-key", str(key), "--log-format", "text",
    )  # fmt: skip
    assert done.returncode == EXIT_USAGE, done.stderr
    assert f"the TLS key {key} and certificate {cert}: the key does not match" in done.stderr


def test_skew_json_shows_the_default_policies() -> None:
    # Port 1 on loopback answers nothing usable: state unknown, exit 3, and the JSON says what a
    # node with the default configuration would do (unknown_policy warn).
    done = run_cli("skew", "--server", "127.0.0.1:1", "--timeout", "0.2", "--json")
    assert done.returncode == 3, done.stderr
    status = json.loads(done.stdout)
    assert status["state"] == "unknown"
    assert status["unknown_policy"] == "warn" and status["policy"] == "refuse"
