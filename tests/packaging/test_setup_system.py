"""scripts/setup-system.sh against fake dpkg-query, apt-cache, apt-get and id on PATH: which
packages it installs (etcd among them), that python3-venv is added only where Debian has it, that
service starts are denied during the install (the packaged etcd.service never starts), and that a
second run with everything present does nothing and prints nothing."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests.support.repository import ROOT

SCRIPT = ROOT / "scripts" / "setup-system.sh"
# The packages every machine gets, in the script's order.
REQUIRED = "build-essential chrony etcd-server etcd-client faketime openssl"


def fake_system(tmp_path: Path, installed: set[str], candidates: dict[str, str]) -> Path:
    """A bin directory whose tools answer from ``installed`` and ``candidates`` (package ->
    version, "(none)" when apt has none); apt-get logs its arguments to ``apt-get.log``."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    scripts = {
        "dpkg-query": f"""
            for p in {" ".join(sorted(installed))}; do
                [ "${{@: -1}}" = "$p" ] && {{ printf 'install ok installed'; exit 0; }}
            done
            exit 1""",
        "apt-cache": "\n".join(
            [f'[ "$2" = {name} ] && {{ echo "{name}:"; echo "  Candidate: {version}"; exit 0; }}'
             for name, version in candidates.items()]
            + ['echo "$2:"; echo "  Candidate: (none)"']
        ),
        # Logs its arguments, and what the service policy answers to starting etcd meanwhile.
        "apt-get": f"""
            echo "$@" >> {tmp_path / "apt-get.log"}
            "$SETUP_SYSTEM_POLICY_RC_D" etcd.service start
            echo "policy-rc.d: $?" >> {tmp_path / "policy.log"}""",
        "id": "echo 0",
    }  # fmt: skip
    for name, body in scripts.items():
        path = bin_dir / name
        path.write_text("#!/bin/bash\n" + body + "\n")
        path.chmod(0o755)
    return bin_dir


def run(tmp_path: Path, bin_dir: Path) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        "SETUP_SYSTEM_POLICY_RC_D": str(tmp_path / "policy-rc.d"),
    }
    return subprocess.run(
        ["bash", str(SCRIPT)], capture_output=True, text=True, env=env, timeout=30, check=False
    )


def apt_calls(tmp_path: Path) -> list[str]:
    log = tmp_path / "apt-get.log"
    return log.read_text().splitlines() if log.exists() else []


@pytest.mark.parametrize(
    ("installed", "candidates", "expected_install"),
    [
        # python3-venv exists in Debian's lists: installed with the rest.
        (set(), {"python3-venv": "3.11.2-1+b1"}, f"{REQUIRED} python3-venv"),
        (set(REQUIRED.split()), {"python3-venv": "3.11.2-1+b1"}, "python3-venv"),
        # No such package here: skipped, the required ones still installed.
        (set(), {}, REQUIRED),
        (set(REQUIRED.split()), {}, None),
        # A machine set up before clustering: only etcd is added.
        (
            {"build-essential", "chrony", "python3-venv", "openssl"},
            {},
            "etcd-server etcd-client faketime",
        ),
        # A machine set up before the skewed-clock tests: only faketime is added.
        (
            {"build-essential", "chrony", "etcd-server", "etcd-client", "python3-venv", "openssl"},
            {},
            "faketime",
        ),
    ],
)
def test_installs_what_is_missing_and_python3_venv_only_where_it_exists(
    tmp_path: Path, installed: set[str], candidates: dict[str, str], expected_install: str | None
) -> None:
    result = run(tmp_path, fake_system(tmp_path, installed, candidates))
    assert result.returncode == 0, result.stderr
    assert result.stdout == "" and result.stderr == ""
    installs = [call for call in apt_calls(tmp_path) if " install " in f" {call} "]
    if expected_install is None:
        assert installs == []
    else:
        assert len(installs) == 1 and installs[0].endswith(expected_install), installs
    if expected_install is not None:
        # Every apt-get call ran while service starts (the packaged etcd.service) were denied.
        policy_answers = (tmp_path / "policy.log").read_text().split("\n")[:-1]
        assert policy_answers == ["policy-rc.d: 101"] * len(apt_calls(tmp_path))
    assert not (tmp_path / "policy-rc.d").exists()  # the temporary policy was removed


def test_nothing_to_do_is_silent_and_touches_no_apt(tmp_path: Path) -> None:
    everything = {*REQUIRED.split(), "python3-venv"}
    result = run(tmp_path, fake_system(tmp_path, everything, {"python3-venv": "1"}))
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")
    assert apt_calls(tmp_path) == []
