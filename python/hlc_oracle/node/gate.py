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

Clustered, two more things live here. The leader's serving deadline (its lease, see
:mod:`hlc_oracle.cluster.session`) is checked on every request, not only by a timer that blocks the
gate, so a leader resumed after a pause refuses before any timer of its event loop has run; past
it, reads close too. And ``redirect`` is the leader's address a refusal names (``None`` when the
node is not clustered or leads; ``""`` when no leader is known).
"""

from __future__ import annotations

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

    def set_deadline(self, deadline: float | None) -> None:
        """Serve only until ``deadline`` (``time.monotonic()``); ``None`` lifts it."""
        self._deadline = deadline

    def block(self, key: str, message: str) -> None:
        """Stops serving for reason ``key`` (replacing that key's message if already blocked)."""
        with self._lock:
            if self._reasons.get(key) == message:
                return  # no change, no notification
            self._reasons[key] = message
            self._changed()

    def unblock(self, key: str) -> None:
        """Clears reason ``key``; the node serves again once no reason is left."""
        with self._lock:
            if self._reasons.pop(key, None) is None:
                return
            self._changed()

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
        for listener in self._listeners:
            listener(self._refusal is None, self._refusal)


def _joined(reasons: dict[str, str]) -> str | None:
    return "; ".join(f"{key}: {message}" for key, message in reasons.items()) if reasons else None
