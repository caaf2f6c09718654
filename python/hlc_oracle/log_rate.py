"""Log records that repeat while a condition lasts (etcd away, a disk refusing writes), limited in
rate: the first is logged at once, the next ones at most once per ``interval_s`` each, with the
count of those left out in between (``repeated``). Once the condition clears (:meth:`clear`), the
next occurrence is logged at once again.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

#: Least seconds between two records of one kind while its condition lasts.
DEFAULT_INTERVAL_S = 10.0


class RateLimitedLog:
    """One limit per ``key`` (a record's kind); thread-safe."""

    def __init__(
        self,
        logger: logging.Logger,
        interval_s: float = DEFAULT_INTERVAL_S,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.logger = logger
        self.interval_s = interval_s
        self._monotonic = monotonic
        self._lock = threading.Lock()
        # key -> (earliest time of the next record, occurrences left out since the last one)
        self._state: dict[str, tuple[float, int]] = {}

    def log(self, level: int, key: str, message: str, fields: dict[str, Any]) -> bool:
        """Logs ``message`` unless a record of ``key`` went out less than ``interval_s`` ago;
        returns whether it did."""
        now = self._monotonic()
        with self._lock:
            due, left_out = self._state.get(key, (now, 0))
            if now < due:
                self._state[key] = (due, left_out + 1)
                return False
            self._state[key] = (now + self.interval_s, 0)
        if left_out:
            fields = {**fields, "repeated": left_out}
        self.logger.log(level, message, extra={"fields": fields})
        return True

    def warning(self, key: str, message: str, fields: dict[str, Any]) -> bool:
        return self.log(logging.WARNING, key, message, fields)

    def clear(self, key: str) -> bool:
        """The condition of ``key`` is over: its next record goes out at once. Returns whether
        it had occurred since the last clear."""
        if key not in self._state:  # the common case, without the lock
            return False
        with self._lock:
            return self._state.pop(key, None) is not None
