"""The decision log's capacity guard: a clustered leader keeps etcd's database inside its quota.

Past ``--quota-backend-bytes`` etcd raises its NOSPACE alarm and refuses every write, the
leader's decision pieces and window saves among them, until an operator clears it. What the
decision log holds is ``rate x retention x bytes per decision`` (about 17 bytes at full rate, see
``bench/README.md``), plus what etcd keeps until a compaction. So every :data:`CHECK_INTERVAL_S`
the leader reads the database's size in use (etcd's Status RPC) against the quota, and:

- at :data:`SHORTEN_AT` of the quota in use or more, shortens the decision retention to aim at
  :data:`TARGET` (in proportion to the retention, or to the kept pieces' span when the log is
  younger than its retention; again only once the last trim had two checks to show, unless
  past :data:`URGENT_AT`), never below the floor (:data:`RETENTION_FLOOR_S`, the shortest
  retention the configuration accepts: far longer than a client keeps retrying one call, 5 s by
  default), then trims at once and compacts etcd's history up to that trim (freed pages are
  reused before the file grows), and trims so again at every check while past the line; it
  says so in a warning, the ``hlc_oracle_decision_retention_seconds`` metric and
  ``GetStatus.decision_retention_s``;
- below :data:`LENGTHEN_BELOW`, lengthens it again by :data:`LENGTHEN_FACTOR`, at most once per
  retention period (what a longer retention keeps shows only after it), up to the configured
  ``cluster.decision_retention_s``.

The database file grows only once its free pages are used up, so holding the part in use near
:data:`TARGET` keeps the file, which is what the quota counts, well under 80% of it; only a rate
that fills the quota within the floor's 60 s can pass that (the warning says when retention is
at its floor), and no retention could help then: the capacity formula in ``docs/cluster.md``.

The quota: etcd's Status RPC gives the database's size but not its quota, so it is read from a
member's ``/metrics`` (``etcd_server_quota_backend_bytes``, on the client URL; plaintext links
only), unless ``cluster.etcd_quota_bytes`` names it. Reading it keeps one source of truth (etcd's
own flag, which a configured copy could drift from); the setting is for links the node cannot
read ``/metrics`` on (TLS, or ``--listen-metrics-urls`` elsewhere). When neither says, etcd's
default quota (2 GiB) is assumed, with a warning: the guard then errs towards trimming early.
"""

from __future__ import annotations

import asyncio
import logging
import time
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol

from prometheus_client.core import GaugeMetricFamily, Metric

from hlc_oracle.addresses import join_host_port
from hlc_oracle.cluster.etcd import EtcdClient, EtcdError, parse_endpoint
from hlc_oracle.config import MIN_DECISION_RETENTION_S


class TrimmedLog(Protocol):
    """What the guard needs of a decision log (:class:`~hlc_oracle.cluster.decisions.DecisionLog`,
    which builds the guard: a protocol, so this module does not import it back)."""

    retention_s: float

    def kept_span_s(self) -> float: ...

    async def trim(self, *, compact_now: bool = False) -> int: ...


logger = logging.getLogger("hlc_oracle.cluster.capacity")

#: How often the leader compares etcd's database with the quota.
CHECK_INTERVAL_S = 1.0
#: The share of the quota in use at which retention is shortened.
SHORTEN_AT = 0.5
#: Past this share, retention is shortened again without waiting for the last trim to show.
URGENT_AT = 0.65
#: The share a shortened retention aims at.
TARGET = 0.35
#: Below this share, retention grows back towards the configured one.
LENGTHEN_BELOW = 0.25
LENGTHEN_FACTOR = 1.25
#: The shortest retention the guard sets: the configuration's minimum.
RETENTION_FLOOR_S = MIN_DECISION_RETENTION_S
#: etcd's default ``--quota-backend-bytes``.
ETCD_DEFAULT_QUOTA_BYTES = 2 << 30
QUOTA_METRIC = "etcd_server_quota_backend_bytes"
#: How often the quota is read again from ``/metrics``.
QUOTA_REFRESH_S = 60.0
#: Least seconds between two warnings that retention is at its floor.
FLOOR_WARNING_INTERVAL_S = 30.0


def next_retention(
    retention_s: float, configured_s: float, in_use: int, quota: int, floor_s: float
) -> float:
    """The retention for a database of ``in_use`` bytes against ``quota`` (see the module)."""
    share = in_use / quota
    if share >= SHORTEN_AT:
        return max(floor_s, min(retention_s, retention_s * TARGET / share))
    if share < LENGTHEN_BELOW and retention_s < configured_s:
        return min(configured_s, retention_s * LENGTHEN_FACTOR)
    return retention_s


def parse_quota(metrics: str) -> int | None:
    """``etcd_server_quota_backend_bytes`` from a Prometheus text page, or None."""
    for line in metrics.splitlines():
        if line.startswith(QUOTA_METRIC + " "):
            try:
                return int(float(line.split()[1]))
            except ValueError:
                return None
    return None


def read_quota(endpoints: Sequence[str], timeout_s: float = 2.0) -> int | None:
    """The smallest quota the members' ``/metrics`` report (blocking), or None."""
    quotas = []
    for endpoint in endpoints:
        host, port = parse_endpoint(endpoint)
        url = f"http://{join_host_port(host, port)}/metrics"
        try:
            with urllib.request.urlopen(url, timeout=timeout_s) as answer:
                quota = parse_quota(answer.read().decode(errors="replace"))
        except OSError:
            continue
        if quota is not None:
            quotas.append(quota)
    return min(quotas) if quotas else None


@dataclass
class Capacity:
    """What the guard saw last: for ``GetStatus`` and ``/metrics``."""

    retention_s: float
    configured_s: float
    quota_bytes: int = 0
    db_bytes: int = 0
    db_in_use_bytes: int = 0
    quota_source: str = ""


class DecisionCapacityCollector:
    """The capacity guard's last look, read when ``/metrics`` is scraped (registered in the
    node's :attr:`~hlc_oracle.node.metrics.ServerMetrics.registry`)."""

    def __init__(self, capacity: Callable[[], Capacity | None]) -> None:
        self._capacity = capacity

    def collect(self) -> Iterator[Metric]:
        capacity = self._capacity()
        if capacity is None:
            return
        yield GaugeMetricFamily(
            "hlc_oracle_decision_retention_seconds",
            "Seconds the leader keeps group-commit decisions in etcd now (below the configured "
            "retention when the capacity guard shortened it)",
            value=capacity.retention_s,
        )
        yield GaugeMetricFamily(
            "hlc_oracle_decision_retention_configured_seconds",
            "cluster.decision_retention_s",
            value=capacity.configured_s,
        )
        yield GaugeMetricFamily(
            "hlc_oracle_etcd_db_in_use_bytes",
            "etcd's database in use, as the capacity guard last read it",
            value=capacity.db_in_use_bytes,
        )
        yield GaugeMetricFamily(
            "hlc_oracle_etcd_db_bytes",
            "etcd's database file (what its quota counts), as the capacity guard last read it",
            value=capacity.db_bytes,
        )
        yield GaugeMetricFamily(
            "hlc_oracle_etcd_quota_bytes",
            "etcd's quota (--quota-backend-bytes) the capacity guard works against",
            value=capacity.quota_bytes,
        )


class CapacityGuard:
    """Runs the guard for one term's decision log (``log``: a
    :class:`~hlc_oracle.cluster.decisions.DecisionLog`, whose ``retention_s`` it sets and whose
    ``trim`` it calls)."""

    def __init__(
        self,
        client: EtcdClient,
        log: TrimmedLog,
        *,
        quota_bytes: int = 0,
        floor_s: float = RETENTION_FLOOR_S,
        interval_s: float = CHECK_INTERVAL_S,
    ) -> None:
        self.client = client
        self.log = log
        self.configured_quota = quota_bytes
        self.floor_s = min(floor_s, log.retention_s)
        self.interval_s = interval_s
        self.capacity = Capacity(log.retention_s, log.retention_s)
        self._floor_warned_at = 0.0
        self._changed_at = 0.0
        self._quota: tuple[float, int] | None = None

    async def quota(self) -> int:
        """The quota (read again every :data:`QUOTA_REFRESH_S`)."""
        now = time.monotonic()
        if self._quota is None or now >= self._quota[0] + QUOTA_REFRESH_S:
            self._quota = (now, await self._read_quota())
        return self._quota[1]

    async def _read_quota(self) -> int:
        if self.configured_quota > 0:
            self.capacity.quota_source = "cluster.etcd_quota_bytes"
            return self.configured_quota
        if not self.client.security.tls:
            read = await asyncio.to_thread(read_quota, self.client.endpoints)
            if read is not None:
                self.capacity.quota_source = f"{QUOTA_METRIC} (/metrics)"
                return read
        if self.capacity.quota_source != "etcd's default":
            logger.warning(
                "etcd's quota is unknown: assuming etcd's default",
                extra={
                    "fields": {
                        "quota_bytes": ETCD_DEFAULT_QUOTA_BYTES,
                        "hint": "set cluster.etcd_quota_bytes to etcd's --quota-backend-bytes",
                    }
                },
            )
        self.capacity.quota_source = "etcd's default"
        return ETCD_DEFAULT_QUOTA_BYTES

    async def check(self) -> None:
        """One look at the database, and the retention it calls for."""
        quota = await self.quota()
        size = await self.client.db_size()
        capacity = self.capacity
        capacity.quota_bytes, capacity.db_bytes = quota, size.total
        capacity.db_in_use_bytes = size.in_use
        base_s = self.log.retention_s
        if size.in_use >= SHORTEN_AT * quota:
            # A log younger than its retention holds only its span: shortening the retention in
            # proportion would trim nothing until it fell below that span.
            base_s = min(base_s, max(self.floor_s, self.log.kept_span_s()))
        retention = next_retention(base_s, capacity.configured_s, size.in_use, quota, self.floor_s)
        since_change = time.monotonic() - self._changed_at
        if retention < self.log.retention_s and size.in_use < URGENT_AT * quota:
            if since_change < 2 * self.interval_s:
                retention = self.log.retention_s  # the last trim may not show yet
        elif retention > self.log.retention_s and since_change < self.log.retention_s:
            retention = self.log.retention_s
        fields = {
            "retention_s": round(retention, 1),
            "configured_s": capacity.configured_s,
            "floor_s": self.floor_s,
            "db_in_use_bytes": size.in_use,
            "db_bytes": size.total,
            "quota_bytes": quota,
        }
        if retention < self.log.retention_s:
            logger.warning(
                "etcd's database nears its quota: decision retention shortened",
                extra={"fields": fields},
            )
        elif retention > self.log.retention_s:
            logger.info("decision retention lengthened again", extra={"fields": fields})
        elif size.in_use >= SHORTEN_AT * quota and retention <= self.floor_s:
            now = time.monotonic()
            if now >= self._floor_warned_at + FLOOR_WARNING_INTERVAL_S:
                self._floor_warned_at = now
                logger.warning(
                    "etcd's database nears its quota with decision retention at its floor: "
                    "the commit rate is more than the quota holds (see the capacity formula)",
                    extra={"fields": fields},
                )
        shortened = retention < self.log.retention_s
        if retention != self.log.retention_s:
            self._changed_at = time.monotonic()
        self.log.retention_s = capacity.retention_s = retention
        if shortened or size.in_use >= SHORTEN_AT * quota:
            # Over the line, every check trims: the log's own trims come too seldom for a rate
            # that fills the database in seconds.
            await self.log.trim(compact_now=True)

    async def run(self) -> None:
        """Checks every ``interval_s`` until cancelled; etcd errors are retried."""
        while True:
            try:
                await self.check()
            except EtcdError as err:
                logger.warning("capacity check failed", extra={"fields": {"error": str(err)}})
            await asyncio.sleep(self.interval_s)
