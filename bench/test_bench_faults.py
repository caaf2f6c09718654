"""The cluster fault scenarios (tests/support/nemesis.py, ``SCENARIOS``), longer: each runs
``ROUNDS`` rounds of its fault under load (three client tasks taking timestamps and committing
through the library client given all three nodes; lease TTL 1 s; etcd with
``--election-timeout 100``), then every commit is read back and the one checker
(tests/support/history.py) judges the whole history.

Figures, not timings (the benchmark's own time is one pass), in ``extra_info``:

- ``gaps_ms``: per round, the longest time without a successful call, from 200 ms before the
  fault to the first success after the cluster served again; ``max_gap_ms``, ``median_gap_ms``;
- ``new_terms``: rounds that ended under a new leader's term (every round of a fault that
  takes the leader away; none, on a quiet host, of one that spares it);
- ``anomalies``: what the checker found, by kind (``{}``: the history is valid);
- the history's ``figures``: operations, successes, commits and aborts acknowledged, commits
  whose outcome stayed unknown (``indeterminate``), errors by type, and ``max_lead_us``, the most
  any timestamp ran ahead of the host's clock at its call's completion.

The smoke run (``make test``, benchmarks disabled) skips these: tests/integration/
test_cluster_faults.py runs every scenario already.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from bench.support import record_gaps
from tests.support.nemesis import SCENARIOS, Outcome, run_scenario

ROUNDS = 6


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_fault_scenario(benchmark: Any, tmp_path: Path, name: str) -> None:
    if benchmark.disabled:
        pytest.skip("tests/integration/test_cluster_faults.py runs this scenario")
    benchmark.group = "cluster faults"
    outcomes: list[Outcome] = []
    benchmark.pedantic(
        lambda: outcomes.append(run_scenario(SCENARIOS[name], tmp_path, ROUNDS)),
        rounds=1,
        iterations=1,
    )
    (outcome,) = outcomes
    gaps = outcome.gaps_ms
    record_gaps(benchmark, gaps)
    benchmark.extra_info["new_terms"] = outcome.new_terms
    benchmark.extra_info["anomalies"] = dict(
        Counter(anomaly.kind for anomaly in outcome.result.anomalies)
    )
    benchmark.extra_info.update(outcome.result.figures)
