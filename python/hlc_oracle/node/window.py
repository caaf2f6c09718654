"""The persisted timestamp window (TiDB PD's "save the TSO ahead" scheme).

The clock has a ceiling: it never hands out a timestamp whose physical part passes it. Before the
ceiling is raised, the new limit is made durable in the data dir (write a temporary file, fsync
it, rename it over ``timestamp-window``, fsync the directory). So the saved limit is always at or
above every timestamp handed out, and a restarted node starts its clock above the saved limit:
timestamps never regress across restarts, whatever the system clock did meanwhile.

A background task renews the window well before the clock reaches the ceiling, so requests rarely
wait; a request that does reach it waits for one save (:meth:`TimestampWindow.extend`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import threading
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Protocol

from hlc_oracle import MAX_LOGICAL, Clock, HlcError, Timestamp
from hlc_oracle.log_rate import RateLimitedLog

log = logging.getLogger("hlc_oracle.node.window")

WINDOW_FILE = "timestamp-window"
FORMAT_VERSION = 1


class WindowFileError(HlcError):
    """The window file in the data dir is unreadable or damaged: starting could regress time."""


class WindowSaveError(HlcError):
    """A new limit could not be made durable (disk error, etcd unreachable, a refused fence)."""


class WindowPersistence(Protocol):
    """Where the window's limit is made durable."""

    @property
    def location(self) -> str:
        """Where the limit lives, for messages (a path, or etcd endpoints and key)."""
        ...

    async def persist(self, limit_physical_us: int) -> None:
        """Durably replaces the saved limit; raises :class:`WindowSaveError`."""
        ...


class WindowStore:
    """The ``timestamp-window`` file of a data dir: one JSON object with the physical limit."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.path = data_dir / WINDOW_FILE
        # Saves run in threads (asyncio.to_thread), and cancelling the coroutine that awaits one
        # (a shutdown halting the renewer, a request giving up) does not stop its thread: the
        # next save could start while it still runs, and both use the one temporary file. The
        # data dir's lock keeps other processes out; this keeps this process's saves in turn.
        self._saving = threading.Lock()

    @property
    def location(self) -> str:
        return str(self.path)

    async def persist(self, limit_physical_us: int) -> None:
        try:
            await asyncio.to_thread(self.save, limit_physical_us)
        except OSError as err:
            raise WindowSaveError(
                f"cannot save the timestamp window to {self.path}: {err}"
            ) from err

    def load(self) -> int | None:
        """The saved limit (microseconds), or ``None`` for a fresh data dir."""
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as err:
            raise WindowFileError(f"cannot read {self.path}: {err.strerror}") from err
        try:
            data = json.loads(raw)
            version = data["format"]
            limit = data["limit_physical_us"]
        except (ValueError, TypeError, KeyError) as err:
            raise WindowFileError(
                f"{self.path} is damaged ({err!r}); refusing to start, since the clock's floor "
                "would be unknown. Restore the file, or remove it only if no timestamp handed out "
                "by this node can be ahead of the system clock."
            ) from err
        if version != FORMAT_VERSION or not isinstance(limit, int) or limit < 0:
            raise WindowFileError(
                f"{self.path}: unsupported format {version!r} or bad limit {limit!r}"
            )
        return limit

    def save(self, limit_physical_us: int) -> None:
        """Durably replaces the saved limit: write, fsync, atomic rename, fsync the directory.
        Saves from several threads take turns."""
        with self._saving:
            self._save(limit_physical_us)

    def _save(self, limit_physical_us: int) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        temporary = self.path.with_name(WINDOW_FILE + ".tmp")
        payload = json.dumps({"format": FORMAT_VERSION, "limit_physical_us": limit_physical_us})
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            os.write(fd, payload.encode() + b"\n")
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(temporary, self.path)
        directory = os.open(self.data_dir, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)


def floor_for(limit_physical_us: int | None) -> Timestamp | None:
    """The clock floor after a restart: the last timestamp the saved limit allowed."""
    return None if limit_physical_us is None else Timestamp(limit_physical_us, MAX_LOGICAL)


class TimestampWindow:
    """Keeps ``clock``'s ceiling ``size_us`` ahead, saving each new limit before raising it."""

    def __init__(
        self,
        clock: Clock,
        store: WindowPersistence,
        size_us: int,
        check_interval_s: float,
        on_saved: Callable[[int], None] | None = None,
        on_failure: Callable[[str | None], None] | None = None,
    ) -> None:
        self.clock = clock
        self.store = store
        self.size_us = size_us
        self.check_interval_s = check_interval_s
        self._on_saved = on_saved
        self._on_failure = on_failure
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        self._home: asyncio.AbstractEventLoop | None = None
        self._failures = RateLimitedLog(log)
        ceiling = clock.ceiling_physical
        self.limit_us: int = 0 if ceiling is None else ceiling

    def _high_water(self) -> int:
        return max(self.clock.physical_now(), self.clock.last().physical)

    def run_on(self, loop: asyncio.AbstractEventLoop) -> None:
        """The window's home loop: every save runs there (a clustered node's leadership loop, where
        the etcd client lives), whichever loop calls :meth:`extend`. Set before first use."""
        self._home = loop

    async def extend(self, at_least_us: int = 0) -> None:
        """Saves a limit ``size_us`` past the clock (and past ``at_least_us``), then raises the
        ceiling to it. From another loop than the window's home, the save runs at home and the
        caller awaits it there without blocking its own loop."""
        home = self._home
        if home is not None and asyncio.get_running_loop() is not home:
            await asyncio.wrap_future(
                asyncio.run_coroutine_threadsafe(self._extend(at_least_us), home)
            )
            return
        await self._extend(at_least_us)

    async def _extend(self, at_least_us: int) -> None:
        async with self._lock:
            high_water = max(self._high_water(), at_least_us)
            # A concurrent caller may have extended while this one waited for the lock.
            if self.limit_us - high_water > self.size_us // 2:
                return
            target = high_water + self.size_us
            try:
                await self._persist_to_the_end(target)
            except WindowSaveError as err:
                # Every renewal and every request at the ceiling tries again: limited in rate.
                self._failures.log(logging.ERROR, "save", "window save failed", {"error": str(err)})
                if self._on_failure:
                    self._on_failure(str(err))
                raise
            if self._failures.clear("save"):
                log.info("window saved again", extra={"fields": {"limit_us": target}})
            if self._on_failure:
                self._on_failure(None)
            self.limit_us = self.clock.raise_ceiling(target)
            if self._on_saved:
                self._on_saved(target)

    async def _persist_to_the_end(self, limit_physical_us: int) -> None:
        """``store.persist``, holding the caller (and so the lock) until the save is over even if
        the caller is cancelled: a save cannot be called back once started (the file store's
        thread runs on, an etcd txn may still apply). Released early, the lock would let the next
        save (stop()'s final one, a new term's first) run beside it: two file saves share one
        temporary file, so one loses its rename (FileNotFoundError) or the file is left torn."""
        save = asyncio.ensure_future(self.store.persist(limit_physical_us))
        try:
            await asyncio.shield(save)
        except asyncio.CancelledError:
            while not save.done():
                with contextlib.suppress(asyncio.CancelledError):
                    await asyncio.wait([save])
            if not save.cancelled():
                save.exception()  # retrieved: the cancelled caller has no use for its outcome
            raise

    async def start(self, at_least_us: int = 0) -> None:
        """The first save (before serving), then the background renewer."""
        await self.extend(at_least_us)
        self._task = asyncio.create_task(self._renew(), name="timestamp-window-renewer")

    async def restart(self, saved_limit_us: int) -> None:
        """A new leadership term: whatever this node saved before may have been passed by another
        leader, so save afresh from the shared ``saved_limit_us`` (and start renewing)."""
        await self.halt()
        async with self._lock:
            self.limit_us = 0
        await self.start(saved_limit_us)

    async def halt(self) -> None:
        """Stops renewing, saving nothing (a clustered node that lost leadership)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _renew(self) -> None:
        while True:
            await asyncio.sleep(self.check_interval_s)
            if self.limit_us - self._high_water() <= self.size_us // 2:
                try:
                    await self.extend()
                except WindowSaveError:
                    continue  # Reported through on_failure; retried at the next check.

    async def stop(self, persist: Callable[[int], Awaitable[None]] | None = None) -> None:
        """Stops renewing and saves the exact high-water mark (the clock must be quiescent), with
        ``persist`` instead of the store's own save when given (a clustered leader's resign
        saves it in the txn that deletes its leader key)."""
        await self.halt()
        async with self._lock:
            # Everything handed out is at or below last(); saving that, rather than the window's
            # far end, lets a restart with a correct clock start at the present.
            final = max(self.clock.last().physical, 0)
            await (self.store.persist if persist is None else persist)(final)
            self.limit_us = final


def lead_bound_us(max_offset_us: int) -> int:
    """How far a handed-out timestamp may run ahead of the node's physical clock: half the max
    offset, so that every HLC peer with the same max offset accepts it (``update`` refuses a
    remote more than max offset ahead, and the peer's clock may lag ours by the other half)."""
    return max_offset_us // 2


async def wait_out_lead(
    clock: Clock,
    floor_physical_us: int,
    on_waiting: Callable[[str], None],
    alive: Callable[[], bool] = lambda: True,
) -> bool:
    """Waits until a clock starting above ``floor_physical_us`` hands out nothing more than
    :func:`lead_bound_us` ahead of its physical clock (a saved window limit can be up to the
    window size ahead, or far more after the system clock was stepped back). Reports the wait once
    through ``on_waiting``; returns ``False`` if ``alive()`` turned false meanwhile."""
    bound = lead_bound_us(clock.max_offset_us)
    reported = False
    while alive():
        # The first timestamp above the floor is one microsecond past it.
        lead = floor_physical_us + 1 - clock.physical_now()
        if lead <= bound:
            return True
        if not reported:
            on_waiting(
                f"the saved timestamp limit is {lead / 1e6:.3f} s ahead of this node's clock; "
                f"waiting until it is within max_offset/2 ({bound / 1e6:.3f} s), so that no "
                "timestamp handed out runs further ahead (HLC peers would refuse it)"
            )
            reported = True
        await asyncio.sleep(min((lead - bound) / 1e6, 0.2))
    return False
