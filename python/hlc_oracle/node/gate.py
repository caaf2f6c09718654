"""The serving gate: the one place that decides whether this node serves timestamp requests.

Anything that must stop the node from handing out timestamps (shutdown, a failed window save, a
clock skew guard) blocks the gate under its own key with a message, and unblocks that key when
the condition clears. The node serves while no key blocks it. Every change notifies listeners
(the gRPC health service turns NOT_SERVING / SERVING), and every timestamp handler calls
:meth:`ServingGate.refusal` and answers ``UNAVAILABLE`` with the message it returns.

What the gate covers, and why:

- Closed by any block: the calls that hand out a timestamp or decide a transaction, since each
  takes a timestamp from the clock or moves it (``GetTimestamps``, ``StreamTimestamps``,
  ``Observe``, ``Commit``, ``CommitStream``, ``Abort``).
- Closed only by the blocks in :data:`READ_CLOSING_KEYS` (:meth:`ServingGate.read_refusal`):
  ``GetTransactionStatus``. Reading a decision hands nothing out, and it is what a participant
  needs to resolve an in-doubt transaction while the node refuses for skew, the window or a
  start-up. It needs the decisions loaded (the commit log replayed), and that they are this
  node's to tell: not on a clustered follower or a leader that lost its fence, where another node
  may have decided since.
- Never closed: ``GetStatus`` (it reports why the node refuses), health and reflection.

A block may be *settling*: its holder expects it to clear soon, by itself, with an answer a
client can use at once (a clustered node that won and is taking over serves in a moment; a
follower that knows no leader, or whose leader was just deposed, learns the next one and names
it). While every block is settling, :attr:`ServingGate.settling` is true and a handler may hold the
request (:meth:`ServingGate.wait_for_change`, bounded by the call's deadline) instead of refusing
it: held requests are answered the moment the transition ends, served or refused with the
leader's address, so no client sleeps in a retry backoff during a clean failover. Any block that
is final (skew, a lost fence, shutting down, a lapsed lease) clears ``settling``: refused at once.

Clustered, two more things live here. The leader's serving deadline (its lease, see
:mod:`hlc_oracle.cluster.session`) is checked on every request, not only by a timer that blocks the
gate, so a leader resumed after a pause refuses before any timer of its event loop has run; past
it, reads close too. And ``redirect`` is the leader's address a refusal names (``None`` when the
node is not clustered or leads; ``""`` when no leader is known).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Callable

Listener = Callable[[bool, str | None], None]

#: Block keys under which this node's decisions may be stale, because another node may decide:
#: a clustered follower, and a leader whose fenced write failed. They close reads too.
READ_CLOSING_KEYS = frozenset({"not-leader", "fence"})

LEASE_LAPSED = (
    "lease: the leader's lease was not renewed in time (etcd unreachable or the process paused); "
    "not serving until it is"
)


class ServingGate:
    """Blocking reasons by key; thread-safe, and cheap to check on every request."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._reasons: dict[str, str] = {}
        self._listeners: list[Listener] = []
        # Read without the lock on the hot path: a single attribute load is atomic in CPython.
        self._refusal: str | None = None
        self._read_refusal: str | None = None
        self._deadline: float | None = None
        self.redirect: str | None = None
        # Keys whose block is settling (see the module docstring).
        self._settling_keys: set[str] = set()
        #: True while the gate blocks and every block is settling: a request may be held.
        self.settling = False
        # Bumped by every change; the futures of handlers awaiting the next one, by their loop.
        self._version = 0
        self._waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = []

    def set_deadline(self, deadline: float | None) -> None:
        """Serve only until ``deadline`` (``time.monotonic()``); ``None`` lifts it."""
        self._deadline = deadline

    def block(self, key: str, message: str, *, settling: bool = False) -> None:
        """Stops serving for reason ``key`` (replacing that key's message if already blocked);
        ``settling``: a transition expected to end soon (see the module docstring)."""
        with self._lock:
            if self._reasons.get(key) == message and (key in self._settling_keys) == settling:
                return  # no change, no notification
            self._reasons[key] = message
            if settling:
                self._settling_keys.add(key)
            else:
                self._settling_keys.discard(key)
            self._changed()

    def unblock(self, key: str) -> None:
        """Clears reason ``key``; the node serves again once no reason is left."""
        with self._lock:
            if self._reasons.pop(key, None) is None:
                return
            self._settling_keys.discard(key)
            self._changed()

    @property
    def version(self) -> int:
        """Counts the gate's changes (see :meth:`wait_for_change`)."""
        return self._version

    async def wait_for_change(self, timeout_s: float, version: int) -> None:
        """Returns once the gate changed after :attr:`version` was ``version`` (a block, an
        unblock, a message or its settling flag; at once if it already has), or after
        ``timeout_s``. Changes may come from any thread: the waiting loop is woken with
        ``call_soon_threadsafe``."""
        if timeout_s <= 0:
            return
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        entry = (loop, future)
        with self._lock:
            if self._version != version:
                return
            self._waiters.append(entry)
        try:
            await asyncio.wait_for(future, timeout_s)
        except TimeoutError:
            pass
        finally:
            with self._lock:
                if entry in self._waiters:
                    self._waiters.remove(entry)

    async def hold(self, budget_s: float) -> None:
        """Waits, at most ``budget_s``, while the gate is :attr:`settling`: returns once it serves
        or a block turns final (then the caller refuses as usual, with the redirect of then)."""
        deadline = time.monotonic() + budget_s
        while True:
            version = self._version
            if not self.settling:
                return
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            await self.wait_for_change(remaining, version)

    def refusal(self) -> str | None:
        """``None`` while serving; otherwise the message to answer ``UNAVAILABLE`` with."""
        refusal = self._refusal
        if refusal is None and self._lapsed():
            return LEASE_LAPSED
        return refusal

    def _lapsed(self) -> bool:
        deadline = self._deadline
        return deadline is not None and time.monotonic() >= deadline

    def read_refusal(self) -> str | None:
        """``None`` while decisions may be read (see the module docstring); otherwise the message
        to answer ``UNAVAILABLE`` with."""
        refusal = self._read_refusal
        if refusal is None and self._lapsed():
            return LEASE_LAPSED
        return refusal

    @property
    def serving(self) -> bool:
        return self.refusal() is None

    def reasons(self) -> dict[str, str]:
        with self._lock:
            return dict(self._reasons)

    def blocking_keys(self) -> frozenset[str]:
        """The keys blocking now; unlike :meth:`reasons`, callable from a listener (which runs
        under the gate's lock)."""
        return frozenset(self._reasons.copy())

    def add_listener(self, listener: Listener) -> None:
        """Calls ``listener(serving, message)`` now and after every change."""
        with self._lock:
            self._listeners.append(listener)
            listener(self._refusal is None, self._refusal)

    def _changed(self) -> None:
        self._refusal = _joined(self._reasons)
        self._read_refusal = _joined(
            {key: message for key, message in self._reasons.items() if key in READ_CLOSING_KEYS}
        )
        self.settling = bool(self._reasons) and self._settling_keys >= self._reasons.keys()
        self._version += 1
        waiters, self._waiters = self._waiters, []
        for loop, future in waiters:
            with contextlib.suppress(RuntimeError):  # a loop already closed: nobody waits there
                loop.call_soon_threadsafe(_wake, future)
        for listener in self._listeners:
            listener(self._refusal is None, self._refusal)


def _wake(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def _joined(reasons: dict[str, str]) -> str | None:
    return "; ".join(f"{key}: {message}" for key, message in reasons.items()) if reasons else None
