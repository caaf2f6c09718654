"""The deadlines of merged calls still waiting to be sent: one timer for all of them.

A merged call (``commit()``, ``commit_many()``, ``get_timestamp()``) waits in its batcher's queue
until a message or a fetch takes it; its timeout bounds that wait too. Rather than a timer per
call, the batcher keeps one, armed only once a call has to wait, at the earliest deadline of
those waiting."""

from __future__ import annotations

import asyncio
import collections
import math
from collections.abc import Callable
from time import monotonic
from typing import Any, Generic, TypeVar

__all__ = ["WaitExpiry"]

Entry = TypeVar("Entry", bound=tuple[Any, ...])


class WaitExpiry(Generic[Entry]):
    """The timer of a batcher's waiting calls. Each waiting entry is a tuple holding the call's
    future at ``future_at`` and its deadline (``time.monotonic()``) at ``deadline_at``. When the
    timer fires, ``fire`` runs (the batcher then passes its queue through :meth:`sweep`)."""

    __slots__ = ("_deadline_at", "_error", "_fire", "_future_at", "_handle", "_stopped", "at")

    def __init__(
        self,
        fire: Callable[[], None],
        future_at: int,
        deadline_at: int,
        error: Callable[[Entry], BaseException],
    ) -> None:
        self._fire = fire
        self._future_at = future_at
        self._deadline_at = deadline_at
        self._error = error
        self._handle: asyncio.TimerHandle | None = None
        self._stopped = False
        #: When the timer fires (``time.monotonic()``); inf while none is armed.
        self.at = math.inf

    def arm(self, deadline: float) -> None:
        """(Re)arms the timer at ``deadline``, earlier than the one armed; nothing once
        stopped."""
        if self._stopped:
            return
        if self._handle is not None:
            self._handle.cancel()
        self.at = deadline
        delay = max(0.0, deadline - monotonic())
        self._handle = asyncio.get_running_loop().call_later(delay, self._fired)

    def stop(self) -> None:
        """Cancels the timer for good (the batcher is closing)."""
        self._stopped = True
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        self.at = math.inf

    def sweep(self, waiting: collections.deque[Entry]) -> collections.deque[Entry]:
        """The entries of ``waiting`` still to send: a cancelled one is dropped, one whose
        deadline passed fails with ``error(entry)`` (never sent); the timer is armed again for
        the earliest deadline of those kept."""
        now = monotonic()
        kept: collections.deque[Entry] = collections.deque()
        for entry in waiting:
            if entry[self._future_at].done():  # cancelled while it waited
                continue
            if not self.ran_out(entry, now):
                kept.append(entry)
        if kept:
            self.arm(min(entry[self._deadline_at] for entry in kept))
        return kept

    def ran_out(self, entry: Entry, now: float) -> bool:
        """Whether ``entry``'s deadline is past at ``now`` (``time.monotonic()``): its call then
        fails with ``error(entry)`` (never sent), unless it is already done (cancelled)."""
        if entry[self._deadline_at] > now:
            return False
        future: asyncio.Future[Any] = entry[self._future_at]
        if not future.done():
            future.set_exception(self._error(entry))
        return True

    def _fired(self) -> None:
        self._handle = None
        self.at = math.inf
        self._fire()
