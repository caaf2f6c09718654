"""What stops a node from starting (:class:`StartupError`), and the start-up steps around its
data dir and its port: taking the data dir's lock, checking that the listen address is free, and
writing the port file."""

from __future__ import annotations

import errno
import json
import logging
import os
import socket
from pathlib import Path

from hlc_oracle.addresses import parse_host_port
from hlc_oracle.cluster.etcd_security import EtcdSecurity, EtcdSecurityFileError
from hlc_oracle.config import OracleConfig, commit_log_in_data_dir
from hlc_oracle.server.data_dir import DataDirLock, DataDirLockedError

log = logging.getLogger("hlc_oracle.server")


class StartupError(Exception):
    """The server could not start (address in use, unreadable TLS files, damaged data dir)."""


class StartupConfigError(StartupError):
    """The server could not start because of what its operator gave it (TLS files that cannot be
    read or are not PEM): the command exits 2, a usage error, so a supervisor that restarts on
    failure but not on exit 2 (systemd's ``RestartPreventExitStatus=2``) stops trying."""


def lock_data_dir(config: OracleConfig) -> DataDirLock:
    """Locks the data dir before anything reads it; :class:`StartupError` when it cannot."""
    data_dir = config.server.data_dir
    shared = commit_log_in_data_dir(config)
    if shared is not None:
        raise StartupConfigError(shared)
    created = not data_dir.exists()
    try:
        lock = DataDirLock.acquire(data_dir)
    except DataDirLockedError as err:
        raise StartupError(str(err)) from err
    except FileExistsError as err:
        raise StartupError(f"the data dir {data_dir} is not a directory") from err
    except OSError as err:
        raise StartupError(f"cannot lock the data dir {data_dir}: {err.strerror}") from err
    if created:
        log.info("created the data dir", extra={"fields": {"data_dir": str(data_dir.resolve())}})
    return lock


def check_listen_address(listen: str) -> None:
    """:class:`StartupError` saying "address already in use" when another process listens on
    ``listen`` (or the address cannot be bound at all), before gRPC tries: gRPC reports both
    only as "Failed to bind ... set GRPC_VERBOSITY=debug". Binds a throwaway socket with the
    options gRPC uses (``SO_REUSEADDR``; no ``SO_REUSEPORT``) on each address the host resolves
    to; port 0 (any free port) needs no check."""
    host, port = parse_host_port(listen, allow_port_zero=True)
    if port == 0:
        return
    try:
        infos = socket.getaddrinfo(
            host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
    except socket.gaierror as err:
        raise StartupError(f"cannot listen on {listen}: cannot resolve {host!r}: {err}") from err
    failures: list[OSError] = []
    for family, kind, proto, _, address in infos:
        try:
            with socket.socket(family, kind, proto) as probe:
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                probe.bind(address)
        except OSError as err:
            if err.errno == errno.EADDRINUSE:
                raise StartupError(
                    f"cannot listen on {listen}: address already in use (another process "
                    "listens on that port: another node? give this one another --listen port, "
                    "or port 0 for any free one)"
                ) from err
            failures.append(err)
    if failures and len(failures) == len(infos):
        reason = failures[0].strerror or os.strerror(failures[0].errno or 0)
        raise StartupError(f"cannot listen on {listen}: {reason}")


def write_port_file(path: Path, port: int, metrics_port: int | None) -> None:
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(json.dumps({"port": port, "metrics_port": metrics_port}))
    temporary.replace(path)


def etcd_security(config: OracleConfig) -> EtcdSecurity:
    """The link to etcd, its files read and checked (:mod:`hlc_oracle.cluster.etcd_security`);
    :class:`StartupConfigError` naming a file that cannot be used."""
    try:
        return EtcdSecurity.from_config(config.cluster)
    except EtcdSecurityFileError as err:
        raise StartupConfigError(str(err)) from err
