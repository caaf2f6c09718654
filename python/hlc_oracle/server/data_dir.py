"""One node per data dir: an exclusive ``flock`` on ``<data_dir>/LOCK`` for the process's life.

Two nodes on one data dir would load the same timestamp window and hand out identical timestamps,
and their window saves would race on the same temporary file. So the server takes this lock in
every mode (standalone or clustered, group commit enabled or not) before it reads the window, and
keeps it until it has saved the window for the last time. The kernel drops the lock when the
process dies, even by ``kill -9``, so a stale ``LOCK`` file never keeps a node from starting.

The lock is the same kind the commit log takes on its own directory (``flock`` on a file named
``LOCK``, see ``rust/src/log``): the commit log can be opened without a server (in-process
:class:`~hlc_oracle.GroupCommitScheduler`), so it keeps its own. The holder writes its pid into the
file so that a node refused the lock can name it.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path

from hlc_oracle import HlcError

LOCK_FILE = "LOCK"


class DataDirLockedError(HlcError):
    """Another process holds the data dir: this node must not start on it."""

    def __init__(self, data_dir: Path, holder_pid: int | None) -> None:
        holder = f"pid {holder_pid}" if holder_pid is not None else "a process whose pid is unknown"
        super().__init__(
            f"the data dir {data_dir} is in use by another hlc-oracle node ({holder} holds "
            f"{data_dir / LOCK_FILE}); two nodes on one data dir would hand out identical "
            "timestamps: give each node its own --data-dir"
        )
        self.data_dir = data_dir
        self.holder_pid = holder_pid


class DataDirLock:
    """The held lock of one data dir; :meth:`release` (or process exit) lets the next node in."""

    def __init__(self, data_dir: Path, fd: int) -> None:
        self.data_dir = data_dir
        self.path = data_dir / LOCK_FILE
        self._fd: int | None = fd

    @classmethod
    def acquire(cls, data_dir: Path) -> DataDirLock:
        """Creates the data dir if needed and locks it; :class:`DataDirLockedError` when another
        process holds it, ``OSError`` when it cannot be created or opened."""
        data_dir.mkdir(parents=True, exist_ok=True)
        path = data_dir / LOCK_FILE
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_pid(fd)
            os.close(fd)
            raise DataDirLockedError(data_dir, holder) from None
        except BaseException:
            os.close(fd)
            raise
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        except OSError:
            # The pid is only for the message another node prints; the lock itself is held.
            pass
        return cls(data_dir, fd)

    @property
    def held(self) -> bool:
        return self._fd is not None

    def release(self) -> None:
        """Unlocks (idempotent). The pid stays in the file: it is read only while locked."""
        fd, self._fd = self._fd, None
        if fd is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)


def _read_pid(fd: int) -> int | None:
    """The pid the holder wrote, or ``None`` when it has not written it yet (it locks first)."""
    try:
        text = os.pread(fd, 32, 0).decode("ascii").strip()
    except (OSError, UnicodeDecodeError):
        return None
    return int(text) if text.isdigit() else None
