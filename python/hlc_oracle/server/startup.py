"""What stops a node from starting (:class:`StartupError`), and the start-up steps around its
data dir: taking the data dir's lock, and writing the port file."""

from __future__ import annotations

import json
from pathlib import Path

from hlc_oracle.config import OracleConfig
from hlc_oracle.server.data_dir import DataDirLock, DataDirLockedError


class StartupError(Exception):
    """The server could not start (address in use, unreadable TLS files, damaged data dir)."""


class StartupConfigError(StartupError):
    """The server could not start because of what its operator gave it (TLS files that cannot be
    read or are not PEM): the command exits 2, a usage error, so a supervisor that restarts on
    failure but not on exit 2 (systemd's ``RestartPreventExitStatus=2``) stops trying."""


def lock_data_dir(config: OracleConfig) -> DataDirLock:
    """Locks the data dir before anything reads it; :class:`StartupError` when it cannot."""
    data_dir = config.server.data_dir
    log_dir = config.commit.log_dir
    if config.commit.enabled and log_dir is not None and _same_dir(log_dir, data_dir):
        # The commit log locks its own directory's LOCK: the same file, so it would find it taken.
        raise StartupError(
            f"commit.log_dir {log_dir} is the data dir itself: give the commit log a directory "
            f"of its own (the default is {data_dir / 'commit-log'})"
        )
    try:
        return DataDirLock.acquire(data_dir)
    except DataDirLockedError as err:
        raise StartupError(str(err)) from err
    except FileExistsError as err:
        raise StartupError(f"the data dir {data_dir} is not a directory") from err
    except OSError as err:
        raise StartupError(f"cannot lock the data dir {data_dir}: {err.strerror}") from err


def _same_dir(first: Path, second: Path) -> bool:
    try:
        return first.resolve() == second.resolve()
    except OSError:
        return False


def write_port_file(path: Path, port: int, metrics_port: int | None) -> None:
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(json.dumps({"port": port, "metrics_port": metrics_port}))
    temporary.replace(path)
