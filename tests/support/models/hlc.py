"""The HLC of Kulkarni, Demirbas et al. ("Logical Physical Clocks", 2014), written as the paper's
rules on ``(l, c)`` pairs, plus this project's one addition: a logical counter that would pass
``MAX_LOGICAL`` carries into physical (``l + 1, 0``).

Also the reference encodings of a timestamp (integer, bytes, text), written independently of the
Rust core with ``struct`` and ``datetime``.
"""

import datetime
import struct
import threading
import time
from collections.abc import Callable

LOGICAL_BITS = 12
MAX_LOGICAL = (1 << LOGICAL_BITS) - 1

Pair = tuple[int, int]


def carry(l: int, c: int) -> Pair:  # noqa: E741 - the paper's names
    return (l + 1, 0) if c > MAX_LOGICAL else (l, c)


def send(state: Pair, pt: int) -> Pair:
    """Send or local event (the paper's Figure 5, first half)."""
    l_old, c_old = state
    l_new = max(l_old, pt)
    c_new = c_old + 1 if l_new == l_old else 0
    return carry(l_new, c_new)


def receive(state: Pair, message: Pair, pt: int) -> Pair:
    """Receive event of a message stamped ``message`` (Figure 5, second half)."""
    l_old, c_old = state
    l_m, c_m = message
    l_new = max(l_old, l_m, pt)
    if l_new == l_old == l_m:
        c_new = max(c_old, c_m) + 1
    elif l_new == l_old:
        c_new = c_old + 1
    elif l_new == l_m:
        c_new = c_m + 1
    else:
        c_new = 0
    return carry(l_new, c_new)


class PythonHlc:
    """A thread-safe pure-Python HLC on the wall clock: the benchmark baseline."""

    def __init__(self, physical_us: Callable[[], int] = lambda: time.time_ns() // 1000) -> None:
        self._physical_us = physical_us
        self._state: Pair = (0, 0)
        self._lock = threading.Lock()

    def now(self) -> Pair:
        with self._lock:
            self._state = send(self._state, self._physical_us())
            return self._state

    def update(self, message: Pair) -> Pair:
        with self._lock:
            self._state = receive(self._state, message, self._physical_us())
            return self._state


def to_int(physical: int, logical: int) -> int:
    return (physical << LOGICAL_BITS) | logical


def to_bytes(physical: int, logical: int, node: int) -> bytes:
    return struct.pack(">QH", to_int(physical, logical), node)


EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC)


def to_text(physical: int, logical: int, node: int) -> str:
    moment = EPOCH + datetime.timedelta(microseconds=physical)
    return f"{moment.strftime('%Y-%m-%dT%H:%M:%S.%f')}Z/{logical}@{node}"


def parse_text(text: str) -> tuple[int, int, int]:
    rest, node = text.rsplit("@", 1)
    moment, logical = rest.rsplit("/", 1)
    parsed = datetime.datetime.strptime(moment, "%Y-%m-%dT%H:%M:%S.%fZ").replace(
        tzinfo=datetime.UTC
    )
    delta = parsed - EPOCH
    physical = (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds
    return physical, int(logical), int(node)
