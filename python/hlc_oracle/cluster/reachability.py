"""Whether etcd answers this node, as its calls find it, said once each way in the logs.

While etcd is away every call fails, on every node, several times a second (lease keepalives,
campaigns, window saves). An operator needs two records: a warning when this node stops reaching
etcd (the endpoints, which call found it, the error) and an info record when etcd answers again
(how long it was away, how many calls failed meanwhile). The calls' own records are limited in
rate (:mod:`hlc_oracle.log_rate`).

:class:`~hlc_oracle.cluster.etcd.EtcdClient` reports every unary call here (a call that got no
answer: ``UNAVAILABLE`` or a missed deadline; any answer from etcd, a refusal included, counts as
reached), and the session reports its keepalives.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

log = logging.getLogger("hlc_oracle.cluster.etcd")


class EtcdReachability:
    """Reachable until a call finds otherwise; thread-safe."""

    def __init__(self, endpoints: str, monotonic: Callable[[], float] = time.monotonic) -> None:
        self.endpoints = endpoints
        self._monotonic = monotonic
        self._lock = threading.Lock()
        self.reachable = True
        self._lost_at = 0.0
        self._failures = 0

    def failed(self, what: str, error: str) -> None:
        """A call (``what``) got no answer from etcd."""
        with self._lock:
            if not self.reachable:
                self._failures += 1
                return
            self.reachable = False
            self._lost_at = self._monotonic()
            self._failures = 1
        log.warning(
            "etcd unreachable",
            extra={"fields": {"etcd": self.endpoints, "call": what, "error": error}},
        )

    def answered(self) -> None:
        """A call got an answer from etcd."""
        if self.reachable:  # the common case, without the lock
            return
        with self._lock:
            if self.reachable:
                return
            self.reachable = True
            away_s = self._monotonic() - self._lost_at
            failures = self._failures
        log.info(
            "etcd reachable again",
            extra={
                "fields": {
                    "etcd": self.endpoints,
                    "away_s": round(away_s, 3),
                    "failed_calls": failures,
                }
            },
        )
