"""Prometheus collectors of the skew monitor (:class:`SkewMetricsCollector`) and of the peers
check (:class:`PeersMetricsCollector`)."""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from hlc_oracle.skew.guard import GuardState
from hlc_oracle.skew.monitor import SkewMonitor, SkewStatus
from hlc_oracle.skew.peers import PeerOffsetMonitor, PeersState, PeersVerdict


class SkewMetricsCollector(Collector):
    """Prometheus metrics read from :meth:`SkewMonitor.status` at scrape time (seconds, as
    Prometheus prefers; the rest of this module speaks microseconds).

    ``registry.register(SkewMetricsCollector(monitor))``.
    """

    def __init__(self, monitor: SkewMonitor) -> None:
        self.monitor = monitor

    def describe(self) -> Iterable[Metric]:
        return self._families(None)

    def collect(self) -> Iterable[Metric]:
        return self._families(self.monitor.status())

    def _families(self, status: SkewStatus | None) -> list[Metric]:
        offset = GaugeMetricFamily(
            "hlc_oracle_clock_offset_seconds",
            "Combined NTP offset of the local clock (server - local; positive: local is behind)",
        )
        bound = GaugeMetricFamily(
            "hlc_oracle_clock_offset_bound_seconds",
            "Error bound of the combined offset: the truth is within offset +- bound",
        )
        levels = GaugeMetricFamily(
            "hlc_oracle_clock_offset_level_seconds",
            "Guard levels on the absolute offset",
            labels=["level"],
        )
        state = GaugeMetricFamily(
            "hlc_oracle_clock_skew_state",
            "1 for the skew guard's current state (ok, warning, unsafe, unknown)",
            labels=["state"],
        )
        serving = GaugeMetricFamily(
            "hlc_oracle_clock_skew_serving", "1 while the skew guard lets the node serve"
        )
        server_offset = GaugeMetricFamily(
            "hlc_oracle_ntp_server_offset_seconds",
            "Offset in the last good answer of each NTP server",
            labels=["server"],
        )
        server_delay = GaugeMetricFamily(
            "hlc_oracle_ntp_server_delay_seconds",
            "Round-trip delay of the last good answer of each NTP server",
            labels=["server"],
        )
        server_stratum = GaugeMetricFamily(
            "hlc_oracle_ntp_server_stratum",
            "Stratum in the last good answer of each NTP server",
            labels=["server"],
        )
        server_last_good = GaugeMetricFamily(
            "hlc_oracle_ntp_server_last_good_timestamp_seconds",
            "Unix time of the last good answer of each NTP server",
            labels=["server"],
        )
        samples = CounterMetricFamily(
            "hlc_oracle_ntp_samples",
            "NTP queries by server and result (good, or unhealthy: timeout, garbage, ...)",
            labels=["server", "result"],
        )
        polls = CounterMetricFamily("hlc_oracle_ntp_polls", "Poll rounds of the skew monitor")
        jumps = CounterMetricFamily(
            "hlc_oracle_clock_wall_jumps",
            "Wall-clock jumps against the monotonic clock past the threshold",
            labels=["direction"],
        )
        families = [
            offset,
            bound,
            levels,
            state,
            serving,
            server_offset,
            server_delay,
            server_stratum,
            server_last_good,
            samples,
            polls,
            jumps,
        ]
        if status is None:
            return families
        if status.estimate is not None:
            offset.add_metric([], status.estimate.offset_us / 1e6)
            bound.add_metric([], status.estimate.bound_us / 1e6)
        levels.add_metric(["warning"], status.warning_level_us / 1e6)
        levels.add_metric(["serving"], status.serving_level_us / 1e6)
        levels.add_metric(["max_offset"], status.max_offset_us / 1e6)
        for candidate in GuardState:
            state.add_metric([candidate.value], 1.0 if candidate is status.state else 0.0)
        serving.add_metric([], 1.0 if status.serving else 0.0)
        for server in status.servers:
            good = server.last_good
            if good is not None and good.offset_us is not None:
                server_offset.add_metric([server.server], good.offset_us / 1e6)
                server_delay.add_metric([server.server], (good.delay_us or 0) / 1e6)
                server_stratum.add_metric([server.server], float(good.stratum or 0))
                server_last_good.add_metric([server.server], good.wall_s)
            samples.add_metric([server.server, "good"], float(server.good_samples))
            samples.add_metric([server.server, "unhealthy"], float(server.bad_samples))
        polls.add_metric([], float(status.polls))
        jumps.add_metric(["forward"], float(status.forward_jumps))
        jumps.add_metric(["backward"], float(status.backward_jumps))
        return families


class PeersMetricsCollector(Collector):
    """The peers check's figures, read from the monitor's last verdict at scrape time."""

    def __init__(self, monitor: PeerOffsetMonitor) -> None:
        self.monitor = monitor

    def describe(self) -> Iterable[Metric]:
        return self._families(None)

    def collect(self) -> Iterable[Metric]:
        return self._families(self.monitor.verdict)

    def _families(self, verdict: PeersVerdict | None) -> list[Metric]:
        offset = GaugeMetricFamily(
            "hlc_oracle_peer_clock_offset_seconds",
            "Combined offset of each peer's clock (peer - local; positive: this node is behind)",
            labels=["peer"],
        )
        bound = GaugeMetricFamily(
            "hlc_oracle_peer_clock_offset_bound_seconds",
            "Error bound of each peer's offset: the truth is within offset +- bound",
            labels=["peer"],
        )
        far = GaugeMetricFamily(
            "hlc_oracle_peer_clock_far",
            "1 while a peer is more than the threshold away, on the evidence",
            labels=["peer"],
        )
        state = GaugeMetricFamily(
            "hlc_oracle_peers_state",
            "1 for the peers check's current verdict (ok, far, no-majority, off)",
            labels=["state"],
        )
        threshold = GaugeMetricFamily(
            "hlc_oracle_peers_threshold_seconds", "Offset past which a peer counts as far"
        )
        samples = CounterMetricFamily(
            "hlc_oracle_peer_clock_samples",
            "Measurements of each peer by result (good, or failed: unreachable, too slow)",
            labels=["peer", "result"],
        )
        messages = CounterMetricFamily(
            "hlc_oracle_peers_messages",
            "Round trips of the peers check: GetPeerClock calls and reads of the member keys",
            labels=["kind"],
        )
        families = [offset, bound, far, state, threshold, samples, messages]
        if verdict is None:
            return families
        for peer in verdict.peers:
            label = str(peer.node_id)
            if peer.estimate is not None:
                offset.add_metric([label], peer.estimate.offset_us / 1e6)
                bound.add_metric([label], peer.estimate.bound_us / 1e6)
                far.add_metric([label], 1.0 if peer.far else 0.0)
            samples.add_metric([label, "good"], float(peer.good_samples))
            samples.add_metric([label, "failed"], float(peer.failed_samples))
        for candidate in PeersState:
            state.add_metric([candidate.value], 1.0 if candidate is verdict.state else 0.0)
        threshold.add_metric([], verdict.threshold_us / 1e6)
        messages.add_metric(["peer_clock"], float(self.monitor.pings))
        messages.add_metric(["members_read"], float(self.monitor.directory_reads))
        return families
