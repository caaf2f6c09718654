"""Real etcd members on loopback for tests and benchmarks: one member, or a three-member cluster.

    with EtcdMember(tmp_path / "etcd") as etcd:          # started and answering
        etcd.endpoint                                     # '127.0.0.1:<port>'
    with EtcdCluster(tmp_path / "etcd", size=3) as cluster:
        cluster.endpoints                                 # ['127.0.0.1:<port>', ...]
        cluster.members[0].kill()                         # kill -9 by pid; restart() brings it back
    # every member stopped (SIGTERM, then SIGKILL) and its data dir removed; logs stay
    tls = EtcdTls(ca, server_cert, server_key, client_cert, client_key)   # certificates by path
    with EtcdMember(tmp_path / "etcd", tls=tls) as etcd:  # https, client certificates required
        etcd.enable_auth("/hlc-oracle/test/")             # root, a role, user ``oracle``; auth on

Each member runs Debian's ``etcd`` (``scripts/setup-system.sh`` installs it) on free loopback ports
with its own temporary data dir (in memory where possible: :func:`data_root`) and
``--heartbeat-interval 10 --election-timeout 100``: a lone member starts in about 0.2 s, and etcd
grants leases from 1 s (its minimum TTL is 1.5 x the election timeout). A three-member cluster
takes about 2.3 s, since each new member first asks its peers, 1 s each, whether the cluster
exists. The log goes to ``<dir>/etcd.log`` (``--logger zap --log-outputs``); failures quote its
tail.

With ``tls``, the member serves https and demands a client certificate signed by the CA
(``--client-cert-auth``: with auth on, the certificate's CN is the user), and the fixture's own
health checks and ``etcdctl`` calls present ``tls.client_cert``, whose CN should be ``root``.
:meth:`EtcdMember.enable_auth` sets etcd's auth up as an operator would, with ``etcdctl``: the
``root`` user, a role with readwrite on one key prefix only, a user ``oracle`` with that role
(with a password, or none: then only a certificate with CN ``oracle`` logs in as it), and
``auth enable``.

Free ports are probed, then handed to etcd (peer URLs must be known before a cluster starts, so
etcd cannot bind port 0 here); another process can take one in between, so a member that fails to
bind is started again on fresh ports, a few times.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import ssl
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Self

from hlc_oracle.local_cluster import etcd_program as etcd_path
from hlc_oracle.local_cluster import free_port
from hlc_oracle.local_cluster import memory_root as data_root

from tests.support.started_fixture import StartedFixture

START_TIMEOUT_S = 20.0
STOP_TIMEOUT_S = 10.0
BIND_ATTEMPTS = 3
HEARTBEAT_INTERVAL_MS = 10
ELECTION_TIMEOUT_MS = 100


#: The password of etcd's ``root`` user after :meth:`EtcdMember.enable_auth`.
ROOT_PASSWORD = "root-password"
#: The role :meth:`EtcdMember.enable_auth` grants the ``oracle`` user.
ORACLE_ROLE = "hlc-oracle"


@dataclass(frozen=True)
class EtcdTls:
    """PEM files: the CA, the member's server certificate and key, and the client certificate
    and key the fixture itself uses (health checks, ``etcdctl``)."""

    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path

    def flags(self) -> list[str]:
        return [
            "--cert-file", str(self.server_cert),
            "--key-file", str(self.server_key),
            "--trusted-ca-file", str(self.ca),
            "--client-cert-auth",
        ]  # fmt: skip

    def ssl_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=str(self.ca))
        context.load_cert_chain(str(self.client_cert), str(self.client_key))
        return context


def etcdctl_path() -> str:
    path = shutil.which("etcdctl") or (
        "/usr/bin/etcdctl" if Path("/usr/bin/etcdctl").exists() else None
    )
    if path is None:
        raise RuntimeError("etcdctl is not installed: run `make system` (scripts/setup-system.sh)")
    return path


class EtcdMember(StartedFixture):
    """One etcd process. Alone (``EtcdMember(dir)``) it is a one-member cluster; inside an
    :class:`EtcdCluster` it is given its ports and the cluster's ``--initial-cluster``."""

    def __init__(
        self,
        directory: Path,
        name: str = "member0",
        *,
        client_port: int | None = None,
        peer_port: int | None = None,
        initial_cluster: str | None = None,
        cluster_token: str | None = None,
        extra_args: tuple[str, ...] = (),
        on_disk: bool = False,
        tls: EtcdTls | None = None,
    ) -> None:
        self.directory = directory
        self.name = name
        self.tls = tls
        self.client_port = client_port or 0
        self.peer_port = peer_port or 0
        self._fixed_ports = client_port is not None
        self._initial_cluster = initial_cluster
        # Members bootstrap one cluster only when they share the token (it seeds the cluster id).
        self._cluster_token = cluster_token or f"hlc-oracle-test-{name}-{id(self)}"
        self.extra_args = extra_args
        # ``on_disk``: under ``directory``, for figures that must include etcd's fsyncs.
        root = str(directory) if on_disk else data_root()
        if on_disk:
            directory.mkdir(parents=True, exist_ok=True)
        self.data_dir = Path(tempfile.mkdtemp(prefix=f"etcd-{name}-", dir=root)) / "data"
        self.log_path = directory / "etcd.log"
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0

    @property
    def endpoint(self) -> str:
        """``host:port`` of the client URL, as ``[cluster] etcd_endpoints`` takes it."""
        return f"127.0.0.1:{self.client_port}"

    @property
    def client_url(self) -> str:
        return f"{'https' if self.tls else 'http'}://{self.endpoint}"

    @property
    def peer_url(self) -> str:
        return f"http://127.0.0.1:{self.peer_port}"

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    def command(self, initial_state: str) -> list[str]:
        initial_cluster = self._initial_cluster or f"{self.name}={self.peer_url}"
        return [
            etcd_path(),
            "--name", self.name,
            "--data-dir", str(self.data_dir),
            "--listen-client-urls", self.client_url,
            "--advertise-client-urls", self.client_url,
            "--listen-peer-urls", self.peer_url,
            "--initial-advertise-peer-urls", self.peer_url,
            "--initial-cluster", initial_cluster,
            "--initial-cluster-state", initial_state,
            "--initial-cluster-token", self._cluster_token,
            "--heartbeat-interval", str(HEARTBEAT_INTERVAL_MS),
            "--election-timeout", str(ELECTION_TIMEOUT_MS),
            "--logger", "zap",
            "--log-outputs", str(self.log_path),
            *(self.tls.flags() if self.tls else ()),
            *self.extra_args,
        ]  # fmt: skip

    def launch(self) -> None:
        """Starts the process without waiting (a cluster's members must start together)."""
        if self.process is not None and self.process.poll() is None:
            raise RuntimeError(f"etcd {self.name} is already running (pid {self.process.pid})")
        self.directory.mkdir(parents=True, exist_ok=True)
        if not self._fixed_ports and not self.data_dir.exists():
            self.client_port, self.peer_port = free_port(), free_port()
        # A restart on an existing data dir rejoins; "new" only bootstraps an empty one.
        state = "existing" if (self.data_dir / "member").exists() else "new"
        self.starts += 1
        self.process = subprocess.Popen(
            self.command(state),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            stdin=subprocess.DEVNULL,
        )

    def wait_ready(self, timeout_s: float = START_TIMEOUT_S) -> None:
        """Waits until ``/health`` says the member is healthy (it has a raft leader)."""
        deadline = time.monotonic() + timeout_s
        while True:
            if self.process is None or self.process.poll() is not None:
                code = None if self.process is None else self.process.returncode
                raise EtcdStartError(self, f"exited with {code}")
            if self.healthy():
                return
            if time.monotonic() > deadline:
                raise EtcdStartError(self, f"was not healthy within {timeout_s} s")
            time.sleep(0.02)

    def healthy(self) -> bool:
        context = self.tls.ssl_context() if self.tls else None
        try:
            with urllib.request.urlopen(
                f"{self.client_url}/health", timeout=1, context=context
            ) as response:
                return b'"health":"true"' in response.read()
        except (urllib.error.URLError, OSError):
            return False

    def etcdctl(self, *args: str, user: str | None = None) -> str:
        """Runs ``etcdctl`` against this member (with the fixture's client certificate under
        TLS, as ``user`` ``name:password`` when given); its output, or ``RuntimeError``."""
        command = [etcdctl_path(), "--endpoints", self.client_url, "--dial-timeout", "5s"]
        if self.tls:
            command += [
                "--cacert", str(self.tls.ca),
                "--cert", str(self.tls.client_cert),
                "--key", str(self.tls.client_key),
            ]  # fmt: skip
        if user:
            command += ["--user", user]
        result = subprocess.run(
            [*command, *args],
            capture_output=True,
            text=True,
            timeout=30,
            env={**os.environ, "ETCDCTL_API": "3"},
            check=False,
        )
        if result.returncode != 0:
            raise RuntimeError(f"etcdctl {' '.join(args)} failed: {result.stderr.strip()}")
        return result.stdout

    def enable_auth(self, prefix: str, oracle_password: str | None = None) -> None:
        """etcd's auth on, as an operator sets it up: ``root`` (password :data:`ROOT_PASSWORD`),
        the role :data:`ORACLE_ROLE` with readwrite on ``prefix`` only, and the user ``oracle``
        with that role (``oracle_password``; none: it logs in by certificate CN only)."""
        self.etcdctl("user", "add", f"root:{ROOT_PASSWORD}")
        self.etcdctl("user", "grant-role", "root", "root")
        self.etcdctl("role", "add", ORACLE_ROLE)
        self.etcdctl("role", "grant-permission", ORACLE_ROLE, "readwrite", prefix, "--prefix=true")
        if oracle_password is None:
            self.etcdctl("user", "add", "oracle", "--no-password")
        else:
            self.etcdctl("user", "add", f"oracle:{oracle_password}")
        self.etcdctl("user", "grant-role", "oracle", ORACLE_ROLE)
        self.etcdctl("auth", "enable")

    def as_root(self, *args: str) -> str:
        """``etcdctl`` as ``root`` once auth is on."""
        return self.etcdctl(*args, user=f"root:{ROOT_PASSWORD}")

    def start(self) -> Self:
        """Starts a lone member (fresh ports on a bind failure) and waits until it answers."""
        for attempt in range(BIND_ATTEMPTS):
            self.launch()
            try:
                self.wait_ready()
                return self
            except EtcdStartError:
                self.kill()
                if attempt + 1 == BIND_ATTEMPTS or self._fixed_ports or not self.bind_failed():
                    raise
                shutil.rmtree(self.data_dir, ignore_errors=True)
        raise AssertionError("unreachable")

    def bind_failed(self) -> bool:
        return "address already in use" in self.log_tail()

    def log_tail(self, lines: int = 12, width: int = 400) -> str:
        if not self.log_path.exists():
            return ""
        tail = self.log_path.read_text(errors="replace").splitlines()[-lines:]
        return "\n".join(line[:width] for line in tail)

    def signal(self, signum: int) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signum)

    def kill(self) -> None:
        """kill -9 by pid, and reap it."""
        if self.process is not None:
            if self.process.poll() is None:
                self.process.kill()
            self.process.wait()

    def stop(self, timeout_s: float = STOP_TIMEOUT_S) -> None:
        """SIGTERM and wait; SIGKILL if it does not exit in time."""
        if self.process is None or self.process.poll() is not None:
            return
        self.signal(signal.SIGTERM)
        try:
            self.process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.kill()

    def pause(self) -> None:
        """SIGSTOP: the member stops answering but keeps its sockets. Returns once every thread
        of it is stopped (the signal takes effect asynchronously: a thread busy at the moment
        may still answer a request first)."""
        self.signal(signal.SIGSTOP)
        if self.process is None:
            return
        tasks = Path(f"/proc/{self.process.pid}/task")
        deadline = time.monotonic() + STOP_TIMEOUT_S
        while time.monotonic() < deadline:
            states = []
            for stat in tasks.glob("*/stat"):
                with contextlib.suppress(OSError):  # a thread that ended meanwhile
                    states.append(stat.read_text().rsplit(")", 1)[1].split()[0])
            if states and all(state in "Tt" for state in states):
                return
            time.sleep(0.005)
        raise AssertionError(f"etcd {self.name} did not stop within {STOP_TIMEOUT_S} s")

    def resume(self) -> None:
        self.signal(signal.SIGCONT)

    def restart(self) -> Self:
        """kill -9, then start again on the same ports and data dir (it rejoins)."""
        self.kill()
        self._fixed_ports = True
        self.launch()
        self.wait_ready()
        return self

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def close(self) -> None:
        """Stops the member (SIGCONT first: a stopped process does not act on SIGTERM) and
        removes its data dir; the log stays for a failed test."""
        try:
            self.resume()
            self.stop()
        finally:
            self.kill()
            shutil.rmtree(self.data_dir.parent, ignore_errors=True)


class EtcdStartError(RuntimeError):
    def __init__(self, member: EtcdMember, what: str) -> None:
        super().__init__(f"etcd {member.name} ({member.endpoint}) {what}:\n{member.log_tail()}")
        self.member = member


class EtcdCluster(StartedFixture):
    """``size`` members (three by default) that form one cluster on loopback."""

    def __init__(
        self,
        directory: Path,
        size: int = 3,
        extra_args: tuple[str, ...] = (),
        on_disk: bool = False,
    ) -> None:
        if size < 1:
            raise ValueError(f"an etcd cluster needs at least 1 member, got {size}")
        self.directory = directory
        self.size = size
        self.extra_args = extra_args
        self.on_disk = on_disk
        self.members: list[EtcdMember] = []

    @property
    def endpoints(self) -> list[str]:
        return [member.endpoint for member in self.members]

    @property
    def endpoints_flag(self) -> str:
        """The endpoints as ``--etcd-endpoints`` takes them: ``host:port,host:port,...``."""
        return ",".join(self.endpoints)

    def start(self) -> Self:
        for attempt in range(BIND_ATTEMPTS):
            self._create_members(attempt)
            for member in self.members:
                member.launch()
            try:
                for member in self.members:
                    member.wait_ready()
                return self
            except EtcdStartError:
                bind_failed = any(member.bind_failed() for member in self.members)
                self.close()
                if attempt + 1 == BIND_ATTEMPTS or not bind_failed:
                    raise
        raise AssertionError("unreachable")

    def _create_members(self, attempt: int) -> None:
        ports = [(free_port(), free_port()) for _ in range(self.size)]
        initial_cluster = ",".join(
            f"member{index}=http://127.0.0.1:{peer}" for index, (_, peer) in enumerate(ports)
        )
        self.members = [
            EtcdMember(
                self.directory / f"attempt{attempt}-member{index}",
                f"member{index}",
                client_port=client,
                peer_port=peer,
                initial_cluster=initial_cluster,
                cluster_token=f"hlc-oracle-test-{id(self)}-{attempt}",
                extra_args=self.extra_args,
                on_disk=self.on_disk,
            )
            for index, (client, peer) in enumerate(ports)
        ]

    def raft_leader(self, timeout_s: float = 10.0) -> EtcdMember:
        """The member that is raft leader now (asks each running member's metrics), waiting up
        to ``timeout_s`` while the members elect one (just after a member was killed or came
        back, none may be leader yet)."""
        deadline = time.monotonic() + timeout_s
        while True:
            for member in self.members:
                if not member.running():
                    continue
                context = member.tls.ssl_context() if member.tls else None
                try:
                    with urllib.request.urlopen(
                        f"{member.client_url}/metrics", timeout=1, context=context
                    ) as reply:
                        if b"\netcd_server_is_leader 1" in reply.read():
                            return member
                except (urllib.error.URLError, OSError):
                    continue
            if time.monotonic() > deadline:
                raise RuntimeError(f"no running etcd member is raft leader after {timeout_s} s")
            time.sleep(0.05)

    def close(self) -> None:
        for member in self.members:
            member.close()
