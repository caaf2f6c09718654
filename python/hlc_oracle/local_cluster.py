"""A clustered oracle on this machine, for trying it out: :class:`LocalCluster`, which
``hlc-oracle cluster`` (and ``make cluster``) runs.

One etcd member (Debian's ``etcd``, installed by ``scripts/setup-system.sh``) and ``nodes``
oracle nodes (``hlc-oracle serve``, node ids 1..n), all on 127.0.0.1, each on ports of its own:
etcd on two free ports (probed, since its peer URL must be named before it starts; a start that
loses a port to another process is tried again on fresh ones), every node on port 0 (it binds a
free one, advertises it to clients, and reports it through its port file). Each process has its
own data dir under one directory, a temporary one removed at the end unless one is given. etcd's
data is in memory (``/dev/shm``) where there is one: it preallocates and syncs 64 MB at start.

:meth:`LocalCluster.stop` stops the nodes with SIGTERM (a leader hands over), then etcd, and kills
whatever has not exited in time. The processes run in sessions of their own, so a Ctrl-C in the
terminal reaches only the command, which stops them in that order; and each is told to die with
the command (``PR_SET_PDEATHSIG``) should the command itself be killed.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Self

from hlc_oracle.client import OracleClient, OracleStatus

#: How long a process gets to start, and to stop after SIGTERM before SIGKILL.
START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 15.0
#: etcd starts tried on fresh ports when another process took one of the probed ports.
ETCD_START_ATTEMPTS = 3
#: The cluster name the nodes share (their etcd keys live under /hlc-oracle/local/).
CLUSTER_NAME = "local"


class LocalClusterError(RuntimeError):
    """The local cluster could not start (etcd missing, a process that exited or never answered);
    the message quotes the tail of the process's log."""


def etcd_program() -> str:
    """The etcd binary; :class:`LocalClusterError` naming the set-up step when it is missing."""
    path = shutil.which("etcd") or ("/usr/bin/etcd" if Path("/usr/bin/etcd").exists() else None)
    if path is None:
        raise LocalClusterError(
            "etcd is not installed: run `make setup` (scripts/setup-system.sh installs Debian's "
            "etcd-server)"
        )
    return path


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now (another process may take it before it is used)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def memory_root() -> str | None:
    """Where etcd keeps its data: memory (``/dev/shm``) where there is one (each member's WAL
    preallocates and syncs 64 MB at start: 2 s instead of 0.2 s on a shared disk); ``None``
    (the system's temporary directory) elsewhere."""
    shm = Path("/dev/shm")
    return str(shm) if shm.is_dir() and os.access(shm, os.W_OK) else None


def _die_with_parent() -> None:
    """In the child, before exec: a new session (a terminal's Ctrl-C reaches only the parent,
    which stops the children in order), and SIGKILL when the parent dies (Linux)."""
    os.setsid()
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def _log_tail(path: Path, lines: int = 15) -> str:
    if not path.exists():
        return ""
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


@dataclass
class ManagedProcess:
    """One child process, its log file, and how to stop it."""

    name: str
    command: list[str]
    log_path: Path
    process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                self.command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                preexec_fn=_die_with_parent,  # no threads run in the child before exec
            )

    @property
    def pid(self) -> int | None:
        return None if self.process is None else self.process.pid

    def exit_code(self) -> int | None:
        return None if self.process is None else self.process.poll()

    def stop(self, timeout_s: float = STOP_TIMEOUT_S) -> None:
        """SIGTERM, then SIGKILL when it has not exited within ``timeout_s``; reaped either way."""
        process = self.process
        if process is None:
            return
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                process.kill()
        process.wait()

    def failure(self, what: str) -> LocalClusterError:
        tail = _log_tail(self.log_path)
        return LocalClusterError(f"{self.name} {what} (log {self.log_path}):\n{tail}")


@dataclass
class LocalCluster:
    """etcd and ``nodes`` oracle nodes on 127.0.0.1 (see the module docstring).

    ``with LocalCluster(3) as cluster:`` starts everything and waits for a leader;
    ``cluster.targets`` is the client's target list; leaving the block stops everything.
    ``directory`` keeps the data dirs and logs (by default a temporary directory, removed at the
    end); ``program`` is the command that runs ``hlc-oracle`` (by default this interpreter's).
    """

    nodes: int = 3
    directory: Path | None = None
    program: Sequence[str] = (sys.executable, "-m", "hlc_oracle.cli")
    say: Callable[[str], None] = lambda line: None
    etcd_endpoint: str = ""
    node_targets: list[str] = field(default_factory=list)
    _processes: list[ManagedProcess] = field(default_factory=list)
    _temporary: list[Path] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not 1 <= self.nodes <= 9:
            raise ValueError(f"a local cluster has 1 to 9 nodes, got {self.nodes}")

    @property
    def targets(self) -> str:
        """The nodes as a client's ``--target`` takes them: ``host:port,host:port,...``."""
        return ",".join(self.node_targets)

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self._processes if p.pid is not None]

    def start(self) -> Self:
        try:
            if self.directory is None:
                self.directory = Path(tempfile.mkdtemp(prefix="hlc-oracle-cluster-"))
                self._temporary.append(self.directory)
            self.directory.mkdir(parents=True, exist_ok=True)
            self._start_etcd(self.directory)
            etcd = self._processes[-1]
            self.say(f"etcd           {self.etcd_endpoint} (pid {etcd.pid}, log {etcd.log_path})")
            for node_id in range(1, self.nodes + 1):
                self._start_node(self.directory, node_id)
            self._wait_for_leader()
        except BaseException:
            self.stop()
            raise
        return self

    def _start_etcd(self, directory: Path) -> None:
        data_root = Path(tempfile.mkdtemp(prefix="hlc-oracle-cluster-etcd-", dir=memory_root()))
        self._temporary.append(data_root)
        for attempt in range(ETCD_START_ATTEMPTS):
            client_url = f"http://127.0.0.1:{free_port()}"
            peer_url = f"http://127.0.0.1:{free_port()}"
            command = [
                etcd_program(),
                "--name", "local",
                "--data-dir", str(data_root / f"attempt{attempt}"),
                "--listen-client-urls", client_url,
                "--advertise-client-urls", client_url,
                "--listen-peer-urls", peer_url,
                "--initial-advertise-peer-urls", peer_url,
                "--initial-cluster", f"local={peer_url}",
                "--initial-cluster-state", "new",
                "--logger", "zap",
                "--log-outputs", "stderr",
            ]  # fmt: skip
            etcd = ManagedProcess(
                "etcd",
                command,
                directory / "etcd.log",
            )
            self._processes.append(etcd)
            etcd.start()
            if self._wait_until(functools.partial(_etcd_healthy, client_url), etcd):
                self.etcd_endpoint = client_url.removeprefix("http://")
                return
            etcd.stop()
            self._processes.remove(etcd)
            if "address already in use" not in _log_tail(etcd.log_path, 40):
                break
        raise etcd.failure("did not start")

    def _start_node(self, directory: Path, node_id: int) -> None:
        port_file = directory / f"node{node_id}.port.json"
        port_file.unlink(missing_ok=True)
        command = [
            *self.program, "serve",
            "--listen", "127.0.0.1:0",
            "--data-dir", str(directory / f"node{node_id}"),
            "--port-file", str(port_file),
            "--node-id", str(node_id),
            "--etcd-endpoints", self.etcd_endpoint,
            "--cluster-name", CLUSTER_NAME,
            "--log-format", "text",
        ]  # fmt: skip
        node = ManagedProcess(
            f"node {node_id}",
            command,
            directory / f"node{node_id}.log",
        )
        self._processes.append(node)
        node.start()
        if not self._wait_until(port_file.exists, node):
            raise node.failure("did not start")
        target = f"127.0.0.1:{json.loads(port_file.read_text())['port']}"
        self.node_targets.append(target)
        self.say(f"node {node_id}         {target} (pid {node.pid}, log {node.log_path})")

    def _wait_until(self, condition: Callable[[], bool], process: ManagedProcess) -> bool:
        """Whether ``condition`` came true within the start timeout; raises when ``process``
        exited meanwhile."""
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if condition():
                return True
            if process.exit_code() is not None:
                raise process.failure(f"exited with {process.exit_code()}")
            time.sleep(0.05)
        return False

    def _wait_for_leader(self) -> None:
        with OracleClient(self.targets, timeout=2) as client:

            def serving_leader() -> bool:
                return any(
                    isinstance(answer, OracleStatus) and answer.role == "leader" and answer.serving
                    for answer in client.statuses().values()
                )

            deadline = time.monotonic() + START_TIMEOUT_S
            while not serving_leader():
                for process in self._processes:
                    if process.exit_code() is not None:
                        raise process.failure(f"exited with {process.exit_code()}")
                if time.monotonic() > deadline:
                    raise LocalClusterError(f"no node led within {START_TIMEOUT_S:g} s")
                time.sleep(0.1)

    def exited(self) -> ManagedProcess | None:
        """A process that exited while the cluster runs, if any."""
        return next((p for p in self._processes if p.exit_code() is not None), None)

    def stop(self) -> None:
        """Stops the nodes (SIGTERM: a leader hands over), then etcd; kills what does not exit
        in time; removes the temporary directories. Idempotent."""
        nodes = [p for p in self._processes if p.name != "etcd"]
        for node in nodes:  # all at once, then wait: each stop takes up to the grace period
            if node.exit_code() is None and node.process is not None:
                node.process.send_signal(signal.SIGTERM)
        for process in [*nodes, *(p for p in self._processes if p.name == "etcd")]:
            process.stop()
        for directory in self._temporary:
            shutil.rmtree(directory, ignore_errors=True)
        self._temporary.clear()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()


def _etcd_healthy(client_url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{client_url}/health", timeout=1) as response:
            return b'"health":"true"' in response.read()
    except (urllib.error.URLError, OSError):
        return False
