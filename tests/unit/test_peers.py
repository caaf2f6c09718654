"""The peers check without a network: the threshold's derivation, one measurement, the verdict
over a table of peers, the latch through a spell without majority, the campaign deferral, and
the monitor's rounds against an in-process directory and transport."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

import pytest
from hlc_oracle import Clock, ManualClock
from hlc_oracle.cluster.candidacy import MAX_DEFER_S, campaign_deferral, can_serve_at_once
from hlc_oracle.skew.combine import OffsetEstimate
from hlc_oracle.skew.metrics import PeersMetricsCollector
from hlc_oracle.skew.peers import (
    PeerOffsetMonitor,
    PeersConfig,
    PeersState,
    PeerState,
    classify,
    derive_threshold_us,
    judge_peers,
    measure,
)
from prometheus_client import CollectorRegistry

MAX_OFFSET_US = 500_000
THRESHOLD_US = 30_000


@pytest.mark.parametrize(
    ("max_offset_us", "window_us", "max_bound_us", "expected"),
    [
        # The defaults: M/2 - W - 2b = 250 - 200 - 20 ms.
        (500_000, 200_000, 10_000, 30_000),
        (500_000, 100_000, 10_000, 130_000),
        # A window too large for the bound: the floor M/20.
        (500_000, 250_000, 10_000, 25_000),
        (40_000_000, 20_000_000, 800_000, 2_000_000),
    ],
)
def test_threshold_derivation(
    max_offset_us: int, window_us: int, max_bound_us: int, expected: int
) -> None:
    assert derive_threshold_us(max_offset_us, window_us, max_bound_us) == expected


def test_config_threshold_set_or_derived() -> None:
    assert PeersConfig().threshold_for(MAX_OFFSET_US, 200_000) == 30_000
    assert PeersConfig(threshold_us=7).threshold_for(MAX_OFFSET_US, 200_000) == 7
    with pytest.raises(ValueError, match="interval_s"):
        PeersConfig(interval_s=0)
    with pytest.raises(TypeError, match="threshold_us"):
        PeersConfig(threshold_us="1")  # type: ignore[arg-type]


def test_one_measurement_is_peer_time_plus_half_the_round_trip_minus_local_time() -> None:
    # The peer read 1_000_000 during a 2 ms round trip that ended at local 1_003_000.
    sample = measure("node 2", 1_000_000, 2_000, 1_003_000, 5.0)
    assert (sample.offset_us, sample.bound_us, sample.healthy) == (-2_000, 1_000, True)


def estimate(offset_us: int, bound_us: int = 500) -> OffsetEstimate:
    return OffsetEstimate(offset_us, bound_us, ("x",), (), True, 0.0)


@pytest.mark.parametrize(
    ("offset_us", "bound_us", "expected"),
    [
        (0, 500, False),
        (-2_000_000, 500, True),
        (2_000_000, 500, True),
        # Past the threshold by less than the bound: not evidence of skew.
        (30_400, 500, False),
        (30_600, 500, True),
        # Far whatever the bound; near only with a bound within max_bound_us.
        (2_000_000, 900_000, True),
        (0, 20_000, None),
    ],
)
def test_classify(offset_us: int, bound_us: int, expected: bool | None) -> None:
    assert classify(estimate(offset_us, bound_us), THRESHOLD_US, 10_000) is expected
    assert classify(None, THRESHOLD_US, 10_000) is None


def peer(node_id: int, offset_us: int | None) -> PeerState:
    found = None if offset_us is None else estimate(offset_us)
    return PeerState(
        node_id,
        f"127.0.0.1:{5000 + node_id}",
        found,
        classify(found, THRESHOLD_US, 10_000),
        1,
        0,
        "",
    )


AHEAD = -2_000_000  # peer - local: this node's clock is 2 s ahead


@pytest.mark.parametrize(
    ("offsets", "state"),
    [
        # Three nodes, this one 2 s ahead of both others.
        ([AHEAD, AHEAD], PeersState.FAR),
        # Three nodes, this one healthy, one peer 2 s off: one of two peers is near.
        ([0, AHEAD], PeersState.OK),
        ([100, -200], PeersState.OK),
        # Two nodes: one peer, no majority, whatever it says.
        ([AHEAD], PeersState.NO_MAJORITY),
        ([0], PeersState.NO_MAJORITY),
        # Three nodes, one peer unreachable: no majority.
        ([AHEAD, None], PeersState.NO_MAJORITY),
        ([], PeersState.NO_MAJORITY),
        # Five nodes: far from three of four.
        ([AHEAD, AHEAD, AHEAD, 0], PeersState.FAR),
        # Far from two of four: a tie is not a majority.
        ([AHEAD, AHEAD, 0, 0], PeersState.OK),
    ],
)
def test_verdict_table(offsets: list[int | None], state: PeersState) -> None:
    peers = [peer(node, offset) for node, offset in enumerate(offsets, start=2)]
    verdict = judge_peers(peers, THRESHOLD_US)
    assert verdict.state is state, verdict.message
    assert verdict.refuses_leadership is (state is PeersState.FAR)
    if state is PeersState.FAR:
        assert "clock is 2.000000 s ahead of its peers" in verdict.message
        assert "does not campaign or lead" in verdict.message
    if state is PeersState.NO_MAJORITY:
        assert "no majority" in verdict.message and "NTP guard decides alone" in verdict.message


def test_behind_is_named_behind() -> None:
    verdict = judge_peers([peer(2, 2_000_000), peer(3, 2_000_100)], THRESHOLD_US)
    assert "clock is 2.000050 s behind its peers" in verdict.message


def test_far_stands_through_a_spell_without_majority() -> None:
    far = judge_peers([peer(2, AHEAD), peer(3, AHEAD)], THRESHOLD_US)
    # The leader died: one peer left, still far, or even near, or none: no evidence of recovery.
    for left in ([peer(2, AHEAD), peer(3, None)], [peer(2, 0)], []):
        latched = judge_peers(left, THRESHOLD_US, far)
        assert latched.state is PeersState.FAR and latched.offset_us == far.offset_us
        assert "no evidence of recovery" in latched.message
        assert "2.000000 s ahead" in latched.message
    # A majority that finds it near clears it.
    assert judge_peers([peer(2, 0), peer(3, 0)], THRESHOLD_US, far).state is PeersState.OK


@pytest.mark.parametrize(
    ("saved_ahead_us", "live_peers", "expected_s"),
    [
        (None, 2, 0.0),
        (200_000, 2, 0.0),  # within max_offset/2: serves at once
        (2_000_000, 2, 1.75),  # waits out 2 s - 0.25 s: defers that long
        (2_000_000, 0, 0.0),  # nobody else could take over
        (60_000_000, 2, MAX_DEFER_S),
    ],
)
def test_campaign_deferral(saved_ahead_us: int | None, live_peers: int, expected_s: float) -> None:
    physical = ManualClock(1_000_000_000)
    clock = Clock(1, MAX_OFFSET_US, physical)
    saved = None if saved_ahead_us is None else 1_000_000_000 + saved_ahead_us - 1

    async def count(lead_us: int) -> int:
        return live_peers

    deferral = asyncio.run(campaign_deferral(clock, saved, count))
    assert deferral.seconds == pytest.approx(expected_s)
    assert bool(deferral.reason) is (expected_s > 0)


@pytest.mark.parametrize(
    ("lead_us", "peer_offset_us", "expected"),
    [
        # This node 2 s behind a healthy peer: the peer is 2 s ahead of it, within the bound.
        (2_000_000, 2_000_000, True),
        (2_000_000, 1_700_000, False),
        # Everyone lags alike (a large window): nobody can serve at once.
        (3_000_000, 0, False),
        (3_000_000, None, True),  # not measured: counted as able
    ],
)
def test_which_peers_could_serve_at_once(
    lead_us: int, peer_offset_us: int | None, expected: bool
) -> None:
    assert can_serve_at_once(lead_us, peer_offset_us, MAX_OFFSET_US) is expected


class Directory:
    def __init__(self, peers: dict[int, str]) -> None:
        self.found = peers

    async def peers(self) -> Mapping[int, str]:
        return self.found

    async def close(self) -> None:
        pass


class Transport:
    """Peers whose clocks are ``skews`` (us) off the local one; an address not listed fails."""

    def __init__(self, now_us: list[int], skews: dict[str, tuple[int, int]]) -> None:
        self.now_us = now_us
        self.skews = skews

    async def call(self, address: str, timeout_s: float) -> tuple[int, int]:
        if address not in self.skews:
            raise ConnectionRefusedError(address)
        node, skew = self.skews[address]
        return node, self.now_us[0] + skew

    async def close(self) -> None:
        pass


def test_monitor_rounds() -> None:
    now = [1_000_000_000]
    directory = Directory({1: "self", 2: "a", 3: "b"})
    transport = Transport(now, {"a": (2, 2_000_000), "b": (3, 2_000_000)})
    monitor = PeerOffsetMonitor(
        PeersConfig(),
        node_id=1,
        max_offset_us=MAX_OFFSET_US,
        window_us=200_000,
        local_now_us=lambda: now[0],
        directory=lambda: directory,
        transport=lambda: transport,
    )
    seen: list[PeersState] = []
    monitor.add_listener(lambda verdict: seen.append(verdict.state))
    assert monitor.leadership_refusal() is None  # nothing measured yet: no majority

    async def rounds() -> None:
        await monitor.measure_round(directory, transport)
        assert monitor.verdict.state is PeersState.FAR
        refusal = monitor.leadership_refusal()
        assert refusal is not None and "behind its peers" in refusal
        assert monitor.peer_offsets() == {
            2: pytest.approx(2_000_000, abs=1_000),
            3: pytest.approx(2_000_000, abs=1_000),
        }
        # A peer that answers as another node id is not measured.
        transport.skews["b"] = (4, 0)
        await monitor.measure_round(directory, transport)
        by_node = {p.node_id: p for p in monitor.verdict.peers}
        assert "answers as node 4" in by_node[3].last_error
        # A peer that left the cluster is dropped.
        directory.found = {1: "self", 2: "a"}
        await monitor.measure_round(directory, transport)
        assert [p.node_id for p in monitor.verdict.peers] == [2]

    asyncio.run(rounds())
    assert seen[0] is PeersState.FAR
    assert monitor.pings == 5 and monitor.directory_reads == 3
    registry = CollectorRegistry()
    registry.register(PeersMetricsCollector(monitor))
    assert registry.get_sample_value(
        "hlc_oracle_peer_clock_offset_seconds", {"peer": "2"}
    ) == pytest.approx(2.0, abs=1e-3)
    assert registry.get_sample_value("hlc_oracle_peers_state", {"state": "far"}) == 1.0
    assert registry.get_sample_value("hlc_oracle_peers_threshold_seconds") == 0.03
    assert registry.get_sample_value("hlc_oracle_peers_messages_total", {"kind": "peer_clock"}) == 5


class SilentTransport(Transport):
    """A peer that never answers (its calls wait until cancelled)."""

    def __init__(self) -> None:
        super().__init__([0], {})
        self.calling = asyncio.Event()
        self.closed = False

    async def call(self, address: str, timeout_s: float) -> tuple[int, int]:
        self.calling.set()
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    async def close(self) -> None:
        self.closed = True


def test_stop_cancels_a_round_that_waits_for_a_silent_peer() -> None:
    """A node's stop (its hand-over) does not wait for a peer that does not answer: the round
    is cancelled and its transport closed before ``stop`` returns."""
    transport = SilentTransport()
    config = PeersConfig(timeout_s=60.0)
    monitor = PeerOffsetMonitor(
        config,
        node_id=1,
        max_offset_us=MAX_OFFSET_US,
        window_us=200_000,
        local_now_us=lambda: 0,
        directory=lambda: Directory({1: "self", 2: "silent"}),
        transport=lambda: transport,
    )

    async def run() -> None:
        task = monitor.start()
        await asyncio.wait_for(transport.calling.wait(), 10)
        await asyncio.wait_for(monitor.stop(timeout_s=0.0), 10)
        assert task.done() and task.cancelled() and transport.closed

    asyncio.run(run())
