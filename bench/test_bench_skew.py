"""Skew benchmarks: how far HLC time runs from physical time, and what one NTP query measures.

Divergence is ``timestamp.physical - physical clock read right after``, in microseconds: under a
tight ``now()`` loop it is the HLC's own lead (the logical counter spilling into physical time),
under ``update()`` with remote timestamps up to the max offset ahead it is what skewed peers push
onto this node. NTP figures are offset and round-trip delay to a real ``chronyd`` on loopback.

Each benchmark also saves its figures (p50 / p99 / max / min, microseconds) to
``bench/results/skew.json`` (``HLC_SKEW_RESULTS`` overrides the path);
``bench/render_skew.py`` turns that into a PNG and a Markdown table.
"""

from __future__ import annotations

import json
import os
import random
import socket
import statistics
import struct
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hlc_oracle import Clock, Timestamp
from hlc_oracle.skew import NtpServer, query_server

from tests.support.ntp.chrony import ChronyServer

OPS = 20_000
ROUNDS = 5
NTP_QUERIES = 300
MAX_OFFSET_US = 500_000
UPDATE_SHARE = 10  # one update() in ten operations
RESULTS: dict[str, dict[str, Any]] = {}


def results_path() -> Path:
    default = Path(__file__).parent / "results" / "skew.json"
    return Path(os.environ.get("HLC_SKEW_RESULTS", default))


@pytest.fixture(scope="module", autouse=True)
def save_results() -> Iterator[None]:
    yield
    path = results_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    report = {"max_offset_us": MAX_OFFSET_US, "ops": OPS, "series": RESULTS}
    path.write_text(json.dumps(report, indent=2) + "\n")


@pytest.fixture(scope="module")
def chrony() -> Iterator[ChronyServer]:
    with ChronyServer() as server:
        yield server


def summary(values: list[int], unit_cost_s: float | None = None) -> dict[str, Any]:
    ordered = sorted(values)
    figures: dict[str, Any] = {
        "n": len(ordered),
        "p50_us": ordered[len(ordered) // 2],
        "p99_us": ordered[min(len(ordered) - 1, (len(ordered) * 99) // 100)],
        "max_us": ordered[-1],
        "min_us": ordered[0],
        "mean_us": round(statistics.fmean(ordered), 1),
    }
    if unit_cost_s is not None:
        figures["cost_per_op_ns"] = round(unit_cost_s * 1e9, 1)
    return figures


def record(name: str, benchmark: Any, values: list[int], ops_per_call: int) -> None:
    # pytest-benchmark has stats only when timing is on (not under --benchmark-disable).
    stats = getattr(getattr(benchmark, "stats", None), "stats", None)
    per_call = stats.median if stats is not None else None
    figures = summary(values, per_call / ops_per_call if per_call else None)
    RESULTS[name] = figures
    benchmark.extra_info.update({f"{name}: {key}": value for key, value in figures.items()})


def divergence_loop(clock: Clock, step: Callable[[int], Timestamp], sink: list[int]) -> None:
    sink.clear()
    physical_now = clock.physical_now
    append = sink.append
    for i in range(OPS):
        stamp = step(i)
        append(stamp.physical - physical_now())


# ---------------------------------------------------------------------------- now() loop


@pytest.mark.benchmark(group="skew-divergence-now")
def test_physical_read_gap(baseline: Any) -> None:
    """The floor of the measurement: two physical reads back to back, no HLC."""
    clock = Clock(node=1, max_offset_us=MAX_OFFSET_US)
    sink: list[int] = []

    def step(_: int) -> Timestamp:
        return Timestamp(clock.physical_now(), 0, 1)

    baseline.pedantic(divergence_loop, args=(clock, step, sink), rounds=ROUNDS, iterations=1)
    record("physical read gap", baseline, sink, OPS)


@pytest.mark.benchmark(group="skew-divergence-now")
def test_hlc_now_divergence(benchmark: Any) -> None:
    clock = Clock(node=1, max_offset_us=MAX_OFFSET_US)
    sink: list[int] = []
    benchmark.pedantic(
        divergence_loop, args=(clock, lambda _: clock.now(), sink), rounds=ROUNDS, iterations=1
    )
    record("now() loop", benchmark, sink, OPS)


# ---------------------------------------------------------------------------- mixed update()


def mixed_step(clock: Clock, ahead_us: int) -> Callable[[int], Timestamp]:
    """Every tenth operation receives a remote timestamp up to ``ahead_us`` ahead."""
    rng = random.Random(6)
    now, update = clock.now, clock.update

    def step(i: int) -> Timestamp:
        if i % UPDATE_SHARE:
            return now()
        return update(Timestamp(clock.physical_now() + rng.randrange(ahead_us), 0, 2))

    return step


@pytest.mark.benchmark(group="skew-divergence-mixed")
def test_mixed_update_in_sync(baseline: Any) -> None:
    """Peers behind or at this node's time: update() adds no lead."""
    clock = Clock(node=1, max_offset_us=MAX_OFFSET_US)
    sink: list[int] = []

    def step(i: int) -> Timestamp:
        if i % UPDATE_SHARE:
            return clock.now()
        return clock.update(Timestamp(clock.physical_now() - 1_000, 0, 2))

    baseline.pedantic(divergence_loop, args=(clock, step, sink), rounds=ROUNDS, iterations=1)
    record("mixed, peers in sync", baseline, sink, OPS)


@pytest.mark.benchmark(group="skew-divergence-mixed")
def test_mixed_update_peers_ahead(benchmark: Any) -> None:
    """Peers up to the max offset ahead: HLC time follows the fastest peer, never further."""
    sink: list[int] = []

    def run() -> None:
        # A fresh clock per round: each round starts in sync and is pushed ahead by its peers.
        clock = Clock(node=1, max_offset_us=MAX_OFFSET_US)
        divergence_loop(clock, mixed_step(clock, MAX_OFFSET_US - 1), sink)

    benchmark.pedantic(run, rounds=ROUNDS, iterations=1)
    record("mixed, peers up to max offset ahead", benchmark, sink, OPS)


# ---------------------------------------------------------------------------- NTP to chrony

NTP_EPOCH_OFFSET = 2_208_988_800


def raw_exchange(sock: socket.socket, address: tuple[str, int]) -> float:
    """One bare NTP client exchange (no ntplib, no validation): the floor of a query's cost."""
    sent = time.time()
    seconds = int(sent) + NTP_EPOCH_OFFSET
    fraction = int((sent % 1) * (1 << 32))
    sock.sendto(b"\x23" + bytes(39) + struct.pack("!II", seconds, fraction), address)
    sock.recvfrom(512)
    return sent


@pytest.mark.benchmark(group="skew-ntp-query")
def test_raw_udp_exchange(baseline: Any, chrony: ChronyServer) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(1.0)
        baseline.pedantic(
            raw_exchange,
            args=(sock, ("127.0.0.1", chrony.port)),
            rounds=NTP_QUERIES,
            iterations=1,
        )


@pytest.mark.benchmark(group="skew-ntp-query")
def test_ntp_query_to_chrony(benchmark: Any, chrony: ChronyServer) -> None:
    server = NtpServer.parse(chrony.address)
    offsets: list[int] = []
    delays: list[int] = []

    def query() -> None:
        sample = query_server(server, timeout_s=1.0)
        assert sample.healthy, sample.detail
        assert sample.offset_us is not None and sample.delay_us is not None
        offsets.append(sample.offset_us)
        delays.append(sample.delay_us)

    benchmark.pedantic(query, rounds=NTP_QUERIES, iterations=1)
    record("NTP offset to chrony", benchmark, offsets, 1)
    record("NTP delay to chrony", benchmark, delays, 1)
    RESULTS["NTP absolute offset to chrony"] = summary([abs(o) for o in offsets])
