"""A real, unprivileged ``chronyd`` serving NTP on a high loopback port.

It runs with ``-x`` (never touches the system clock), serves its local clock at stratum 8, has no
upstream servers (so it sends nothing off the machine), no command port, and keeps its config,
pid, drift and log files in a temporary directory. As root it drops to the ``_chrony`` user after
binding; as another user it starts with ``-U``.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Self

import ntplib  # type: ignore[import-untyped]

from tests.support.started_fixture import StartedFixture

CHRONY_USER = "_chrony"


def chronyd_path() -> str:
    path = shutil.which("chronyd") or next(
        (p for p in ("/usr/sbin/chronyd", "/sbin/chronyd") if os.access(p, os.X_OK)), None
    )
    if path is None:
        raise RuntimeError("chronyd is not installed: run `make system` (scripts/setup-system.sh)")
    return path


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class ChronyServer(StartedFixture):
    """``with ChronyServer() as chrony: chrony.address`` -> ``'127.0.0.1:<port>'``."""

    def __init__(self, start_timeout_s: float = 10.0) -> None:
        self.directory = Path(tempfile.mkdtemp(prefix="hlc-chrony-"))
        self.port = 0
        self.start_timeout_s = start_timeout_s
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> Self:
        self._start(self.start_timeout_s)
        return self

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _start(self, timeout_s: float) -> None:
        binary = chronyd_path()
        flags = ["-x", "-d", "-4", "-L", "0"]
        if os.geteuid() == 0:
            user = pwd.getpwnam(CHRONY_USER)
            os.chown(self.directory, user.pw_uid, user.pw_gid)
            flags += ["-u", CHRONY_USER]
        else:
            flags += ["-U"]
        # A free port can be taken between probe and bind: try a few.
        last_error = ""
        for _ in range(3):
            self.port = free_udp_port()
            config = self.directory / "chrony.conf"
            config.write_text(
                "\n".join(
                    [
                        f"port {self.port}",
                        "bindaddress 127.0.0.1",
                        "allow 127.0.0.1",
                        "local stratum 8",
                        "cmdport 0",
                        f"driftfile {self.directory / 'chrony.drift'}",
                        f"pidfile {self.directory / 'chronyd.pid'}",
                        "",
                    ]
                )
            )
            log_path = self.directory / "chronyd.log"
            with log_path.open("ab") as log_file:
                self._process = subprocess.Popen(
                    [binary, *flags, "-f", str(config)],
                    stdout=log_file,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                )
            if self._wait_ready(timeout_s):
                return
            last_error = log_path.read_text(errors="replace")
            self._terminate()
        raise RuntimeError(f"chronyd did not start serving on loopback:\n{last_error}")

    def _wait_ready(self, timeout_s: float) -> bool:
        client = ntplib.NTPClient()
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._process is None or self._process.poll() is not None:
                return False
            try:
                client.request("127.0.0.1", version=4, port=self.port, timeout=0.2)
                return True
            except (ntplib.NTPException, OSError):
                time.sleep(0.05)
        return False

    def _terminate(self) -> None:
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)

    def close(self) -> None:
        self._terminate()
        shutil.rmtree(self.directory, ignore_errors=True)
