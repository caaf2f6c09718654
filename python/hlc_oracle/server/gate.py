"""The serving gate: the one place that decides whether this node serves timestamp requests.

Anything that must stop the node from handing out timestamps (shutdown, a failed window save, a
clock skew guard) blocks the gate under its own key with a message, and unblocks that key when
the condition clears. The node serves while no key blocks it. Every change notifies listeners
(the gRPC health service turns NOT_SERVING / SERVING), and every timestamp handler calls
:meth:`ServingGate.refusal` and answers ``UNAVAILABLE`` with the message it returns.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

Listener = Callable[[bool, str | None], None]


class ServingGate:
    """Blocking reasons by key; thread-safe, and cheap to check on every request."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._reasons: dict[str, str] = {}
        self._listeners: list[Listener] = []
        # Read without the lock on the hot path: a single attribute load is atomic in CPython.
        self._refusal: str | None = None

    def block(self, key: str, message: str) -> None:
        """Stops serving for reason ``key`` (replacing that key's message if already blocked)."""
        with self._lock:
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
        return self._refusal

    @property
    def serving(self) -> bool:
        return self._refusal is None

    def reasons(self) -> dict[str, str]:
        with self._lock:
            return dict(self._reasons)

    def add_listener(self, listener: Listener) -> None:
        """Calls ``listener(serving, message)`` now and after every change."""
        with self._lock:
            self._listeners.append(listener)
            listener(self._refusal is None, self._refusal)

    def _changed(self) -> None:
        self._refusal = (
            "; ".join(f"{key}: {message}" for key, message in self._reasons.items())
            if self._reasons
            else None
        )
        for listener in self._listeners:
            listener(self._refusal is None, self._refusal)
