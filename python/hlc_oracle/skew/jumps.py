"""Clock-jump detection: the wall clock's progress against the monotonic clock's.

:class:`JumpDetector` compares the two between checks; the monitor runs it after every poll.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from hlc_oracle._core import SystemClock
from hlc_oracle.skew.guard import check_int


class PhysicalClock(Protocol):
    """A wall clock in microseconds since the Unix epoch (``SystemClock``, ``ManualClock``)."""

    def now_us(self) -> int: ...


@dataclass(frozen=True)
class JumpEvent:
    forward: bool
    # How far the wall clock moved beyond (forward) or behind (backward) the monotonic clock.
    size_us: int
    wall_us: int


class JumpDetector:
    """Compares the wall clock's progress with the monotonic clock's between two checks."""

    def __init__(
        self,
        threshold_us: int,
        wall_clock: PhysicalClock | None = None,
        monotonic_ns: Callable[[], int] = time.monotonic_ns,
    ) -> None:
        check_int(threshold_us, "jump_threshold_us", 1, 86_400_000_000)
        self.threshold_us = threshold_us
        self._wall = wall_clock if wall_clock is not None else SystemClock()
        self._monotonic_ns = monotonic_ns
        self._last = self._read()
        self.forward_jumps = 0
        self.backward_jumps = 0

    def _read(self) -> tuple[int, int]:
        return self._wall.now_us(), self._monotonic_ns() // 1000

    def check(self) -> JumpEvent | None:
        (wall0, mono0), (wall1, mono1) = self._last, self._read()
        self._last = (wall1, mono1)
        drift = (wall1 - wall0) - (mono1 - mono0)
        if drift > self.threshold_us:
            self.forward_jumps += 1
            return JumpEvent(True, drift, wall1)
        if drift < -self.threshold_us:
            self.backward_jumps += 1
            return JumpEvent(False, -drift, wall1)
        return None
