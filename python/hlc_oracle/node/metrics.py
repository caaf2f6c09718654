"""Prometheus metrics of one node, in their own registry (several nodes can share a process).

The gRPC handlers, the window and the cluster node all count here; a clustered leader's decision
capacity adds its own collector (:class:`~hlc_oracle.cluster.capacity.DecisionCapacityCollector`)
to :attr:`ServerMetrics.registry`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

from hlc_oracle._core import SYNC_BUCKET_BOUNDS_US

if TYPE_CHECKING:
    from hlc_oracle.scheduler import GroupCommitScheduler

# Unary latency on loopback is tens of microseconds; the buckets reach from there to a second.
LATENCY_BUCKETS = (
    25e-6, 50e-6, 100e-6, 200e-6, 400e-6, 800e-6, 1.6e-3, 3.2e-3, 6.4e-3, 12.8e-3, 50e-3, 0.2, 1.0,
)  # fmt: skip


class ServerMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "hlc_oracle_requests",
            "Requests (stream messages count one each) by method and gRPC status code",
            ["method", "code"],
            registry=self.registry,
        )
        self.timestamps = Counter(
            "hlc_oracle_timestamps",
            "Timestamps handed out (GetTimestamps and StreamTimestamps)",
            registry=self.registry,
        )
        self.latency = Histogram(
            "hlc_oracle_request_latency_seconds",
            "Time to handle one request or stream message, in the server",
            ["method"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.transactions = Counter(
            "hlc_oracle_transactions",
            "Transactions answered by the Transactions service: committed, aborted or refused",
            ["outcome"],
            registry=self.registry,
        )
        self.window_saves = Counter(
            "hlc_oracle_window_saves",
            "Durable saves of the persisted timestamp window",
            registry=self.registry,
        )
        self.ceiling_waits = Counter(
            "hlc_oracle_ceiling_waits",
            "Requests (timestamps) or batches (commit) that reached the clock's ceiling and waited "
            "for a window save: the window is renewed ahead of demand, so this stays near zero",
            ["path"],
            registry=self.registry,
        )
        self.window_limit = Gauge(
            "hlc_oracle_window_limit_physical_us",
            "Physical limit (microseconds since the epoch) of the saved timestamp window",
            registry=self.registry,
        )
        self.serving = Gauge(
            "hlc_oracle_serving", "1 while the node serves timestamps", registry=self.registry
        )
        # Clustered mode (hlc_oracle.cluster); a standalone node reports role="standalone".
        self.cluster_role = Gauge(
            "hlc_oracle_cluster_role",
            "1 for this node's current role (leader, follower or standalone), 0 for the others",
            ["role"],
            registry=self.registry,
        )
        self.cluster_epoch = Gauge(
            "hlc_oracle_cluster_epoch",
            "Epoch (the leader key's create revision in etcd) of the leader this node knows",
            registry=self.registry,
        )
        self.cluster_leader_changes = Counter(
            "hlc_oracle_cluster_leader_changes",
            "New leader epochs this node has seen (won or observed)",
            registry=self.registry,
        )
        self.cluster_leaders_deposed = Counter(
            "hlc_oracle_cluster_leaders_deposed",
            "Leader terms this follower ended because the leader's process was gone (its address "
            "refused connections), without waiting for its lease",
            registry=self.registry,
        )
        self.cluster_leader_key_lost = Counter(
            "hlc_oracle_cluster_leader_key_lost",
            "Leader terms this node ended because its watch of its own leader key saw the key "
            "deleted or overwritten (deposed by a follower, deleted by an operator, or its lease "
            "expired in etcd)",
            registry=self.registry,
        )
        self.cluster_leader_connected = Gauge(
            "hlc_oracle_cluster_leader_connected",
            "1 while this follower holds its liveness connection to the leader's address (a "
            "leader whose address then refuses connections is deposed at once)",
            registry=self.registry,
        )
        self.cluster_keepalive_age = Gauge(
            "hlc_oracle_cluster_keepalive_age_seconds",
            "Seconds since etcd last acknowledged this node's lease keepalive (0 standalone)",
            registry=self.registry,
        )
        self.set_role("standalone")
        self._children: dict[tuple[str, str], Any] = {}
        self._histograms: dict[str, Any] = {}

    def observe(self, method: str, code: str, started: float) -> None:
        """Counts a request of ``method`` that ended with ``code``; ``started``: perf_counter."""
        elapsed = time.perf_counter() - started
        key = (method, code)
        counter = self._children.get(key)
        if counter is None:
            counter = self._children[key] = self.requests.labels(method, code)
        counter.inc()
        histogram = self._histograms.get(method)
        if histogram is None:
            histogram = self._histograms[method] = self.latency.labels(method)
        histogram.observe(elapsed)

    def set_role(self, role: str) -> None:
        for name in ("leader", "follower", "standalone"):
            self.cluster_role.labels(name).set(1 if name == role else 0)

    def window_saved(self, limit_us: int) -> None:
        self.window_saves.inc()
        self.window_limit.set(limit_us)

    def watch_group_commit(self, scheduler: Callable[[], GroupCommitScheduler | None]) -> None:
        """Exports group commit's figures from ``scheduler()`` (the current one, or None)."""
        self.registry.register(GroupCommitCollector(scheduler))

    def serve(self, host: str, port: int) -> tuple[int, Callable[[], None]]:
        """Starts the ``/metrics`` HTTP endpoint; returns the bound port and a stop function."""
        server, thread = start_http_server(port, addr=host, registry=self.registry)

        def stop() -> None:
            server.shutdown()
            server.server_close()
            thread.join(timeout=5)

        return int(server.server_port), stop


class GroupCommitCollector:
    """Group commit's figures, read from the scheduler when ``/metrics`` is scraped, so the
    request path pays nothing: batches, decisions by outcome, the queue, and how long the commit
    log's ``fdatasync`` takes (a histogram the Rust log keeps). Counters start again from zero
    when a new scheduler opens (a clustered node's next term), which ``rate()`` handles."""

    def __init__(self, scheduler: Callable[[], GroupCommitScheduler | None]) -> None:
        self._scheduler = scheduler

    def collect(self) -> Iterator[Metric]:
        scheduler = self._scheduler()
        if scheduler is None:
            return
        stats = scheduler.stats()
        yield CounterMetricFamily(
            "hlc_oracle_commit_batches",
            "Group-commit batches decided (one durable write each)",
            value=stats["batches"] or 0,
        )
        decisions = CounterMetricFamily(
            "hlc_oracle_commit_decisions",
            "Transactions decided by group commit (resubmissions answered from the index not "
            "counted), by outcome",
            labels=["outcome"],
        )
        decisions.add_metric(["committed"], stats["committed"] or 0)
        decisions.add_metric(["aborted"], stats["aborted"] or 0)
        yield decisions
        yield GaugeMetricFamily(
            "hlc_oracle_commit_queue_length",
            "Commit requests waiting for a batch",
            value=stats["queued"] or 0,
        )
        timings = scheduler.engine.sync_timings()
        if timings is not None:
            counts, total_ns = timings
            buckets: list[tuple[str, float]] = []
            cumulative = 0
            for bound_us, count in zip((*SYNC_BUCKET_BOUNDS_US, None), counts, strict=True):
                cumulative += count
                bound = str(bound_us / 1e6) if bound_us is not None else "+Inf"
                buckets.append((bound, cumulative))
            yield HistogramMetricFamily(
                "hlc_oracle_commit_log_sync_seconds",
                "Duration of each fdatasync of the commit log (one per batch in sync durability)",
                buckets=buckets,
                sum_value=total_ns / 1e9,
            )
