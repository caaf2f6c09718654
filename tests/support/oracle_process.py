"""A real ``hlc-oracle serve`` process on a free loopback port, for tests and benchmarks.

    with OracleProcess(tmp_path / "data") as oracle:   # started and healthy
        client = OracleClient(oracle.target)
    # stopped (SIGTERM, then SIGKILL if it does not exit)

The server binds port 0 and reports the port it got through ``--port-file``, so there is no race
for a free port. Extra ``serve`` flags go in ``args``; ``kill()`` is kill -9; ``restart()`` starts
it again on the same data dir. Two processes on one data dir need their own ``run_dir`` (where the
port file and the log go; by default beside the data dir). ``program`` runs another
installation's command (e.g. a fresh venv's ``bin/hlc-oracle``) instead of this interpreter's
``-m hlc_oracle.cli``. :func:`skewed_clock_env` is the environment that runs a node with its
wall clock shifted (libfaketime), its monotonic clock left true.
"""

from __future__ import annotations

import glob
import json
import os
import signal
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Self

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.support.commands import CLI
from tests.support.started_fixture import StartedFixture

START_TIMEOUT_S = 30.0
#: How often the skew guard of a node given :func:`ntp_args` polls, and how long it waits for an
#: answer.
NTP_POLL_S = 0.2
NTP_TIMEOUT_S = 0.2
#: Where Debian's ``faketime`` package (scripts/setup-system.sh) puts the thread-safe library.
FAKETIME_LIBRARY_GLOB = "/usr/lib/*/faketime/libfaketimeMT.so.1"


def ntp_args(*servers: str, hold_s: float = 0.6, **settings: str) -> list[str]:
    """``serve`` flags pointing the skew guard at ``servers``, polling fast (every
    ``NTP_POLL_S``, giving up on an answer after ``NTP_TIMEOUT_S``), back to serving ``hold_s``
    after the offset is good again; ``settings`` are more ``ntp.*`` settings."""
    args = [
        "--ntp-servers", ",".join(servers),
        "--set", f"ntp.poll_interval_s={NTP_POLL_S}",
        "--set", f"ntp.timeout_s={NTP_TIMEOUT_S}",
        "--set", f"ntp.recovery_hold_s={hold_s}",
    ]  # fmt: skip
    for name, value in settings.items():
        args += ["--set", f"ntp.{name}={value}"]
    return args


def skewed_clock_env(offset: str) -> dict[str, str]:
    """The environment that puts a process's wall clock ``offset`` away from the host's
    (libfaketime's relative form: ``"+2s"`` ahead, ``"-2s"`` behind), its monotonic clock left
    true (lease deadlines and timeouts run at the right pace). Raises ``FileNotFoundError`` when
    the library is not installed."""
    found = sorted(glob.glob(FAKETIME_LIBRARY_GLOB))
    if not found:
        raise FileNotFoundError(
            f"no {FAKETIME_LIBRARY_GLOB}: install Debian's faketime (scripts/setup-system.sh)"
        )
    return {
        "LD_PRELOAD": found[0],
        "FAKETIME": offset,
        "FAKETIME_DONT_FAKE_MONOTONIC": "1",
        # Debian's 0.9.10 is built with its "monotonic fix" for pthread_cond_timedwait, which,
        # with the monotonic clock left true, moves a timed wait on a monotonic condition
        # variable by the offset (fixed upstream in 2025): the node's timed waits overslept or
        # returned at once, and group commit stalled for seconds at a time (86 operations in
        # 6 s of timestamp-and-commit load instead of 7,636). Off, timed waits are left alone.
        "FAKETIME_FORCE_MONOTONIC_FIX": "0",
    }


class OracleProcess(StartedFixture):
    def __init__(
        self,
        data_dir: Path,
        *args: str,
        env: dict[str, str] | None = None,
        wait_healthy: bool = True,
        run_dir: Path | None = None,
        program: Sequence[str] = CLI,
    ) -> None:
        self.data_dir = data_dir
        self.args = list(args)
        self.env = env
        self.program = list(program)
        self.wait_healthy = wait_healthy
        self.run_dir = run_dir or data_dir.parent / f"{data_dir.name}-run"
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.port_file = self.run_dir / "port.json"
        self.log_path = self.run_dir / "server.log"
        self.process: subprocess.Popen[bytes] | None = None
        self.port = 0
        self.metrics_port: int | None = None
        self.starts = 0

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        return [
            *self.program, "serve",
            "--listen", "127.0.0.1:0",
            "--data-dir", str(self.data_dir),
            "--port-file", str(self.port_file),
            "--log-format", "json",
            *self.args,
        ]  # fmt: skip

    def start(self) -> Self:
        self.port_file.unlink(missing_ok=True)
        env = {**os.environ, **(self.env or {})}
        self.starts += 1
        logged_before = len(self.log_text())
        log = self.log_path.open("ab")
        try:
            self.process = subprocess.Popen(
                self.command(), stdout=log, stderr=subprocess.STDOUT, env=env
            )
        finally:
            log.close()
        deadline = time.monotonic() + START_TIMEOUT_S
        while not self.port_file.exists():
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"hlc-oracle serve exited with {self.process.returncode}:\n{self.log_text()}"
                )
            if time.monotonic() > deadline:
                self.kill()
                raise RuntimeError(f"hlc-oracle serve did not start:\n{self.log_text()}")
            time.sleep(0.02)
        ports = json.loads(self.port_file.read_text())
        self.port = ports["port"]
        self.metrics_port = ports["metrics_port"]
        # The log goes through the server's stderr relay, a process of its own: wait for the
        # record the server writes after the port file, and every earlier record is there too.
        while "started" not in self.log_text()[logged_before:]:
            if time.monotonic() > deadline:
                self.kill()
                raise RuntimeError(f"hlc-oracle serve never logged 'started':\n{self.log_text()}")
            time.sleep(0.01)
        if self.wait_healthy:
            self.wait_for_health(deadline)
        return self

    def wait_for_health(
        self, deadline: float, status: int = health_pb2.HealthCheckResponse.SERVING
    ) -> None:
        """Polls gRPC health until the node reports ``status`` (by default SERVING)."""
        with grpc.insecure_channel(self.target) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            while True:
                try:
                    response = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=2)
                    if response.status == status:
                        return
                except grpc.RpcError:
                    pass
                if time.monotonic() > deadline:
                    name = health_pb2.HealthCheckResponse.ServingStatus.Name(status)
                    raise RuntimeError(
                        f"hlc-oracle serve never reported {name}:\n{self.log_text()}"
                    )
                time.sleep(0.05)

    def cli(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """Runs ``hlc-oracle ARGS --target <this server>`` and returns what it printed."""
        return subprocess.run(
            [*self.program, *args, "--target", self.target],
            env={**os.environ, **(self.env or {})},
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def signal(self, signum: int) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signum)

    def stop(self, timeout: float = 20.0) -> int:
        """SIGTERM and wait; SIGKILL if it does not exit in ``timeout``. Returns the exit code."""
        if self.process is None:
            return 0
        self.signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise
        finally:
            self.process.wait()

    def kill(self) -> None:
        """kill -9."""
        if self.process is not None:
            if self.process.poll() is None:
                self.process.kill()
            self.process.wait()

    def restart(self) -> Self:
        self.kill()
        return self.start()

    def close(self) -> None:
        """Stops it (SIGTERM, then kill -9 if it does not exit); the data dir and log stay."""
        try:
            if self.process is not None and self.process.poll() is None:
                self.stop()
        finally:
            self.kill()
