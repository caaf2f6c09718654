"""The cluster under faults, Jepsen-style: real etcd (one member or three), three real nodes
(lease TTL 1 s), a few client tasks taking timestamps and committing through the library client
given every node while a fault happens, then every commit's status read back and the whole history
judged by one checker (tests/support/history.py): no timestamp twice, real-time order, nothing
more than max_offset/2 ahead of the host's clock, every acknowledged decision reads back the same,
nothing decided twice.

The scenarios are defined once, in tests/support/nemesis.py (``SCENARIOS``); here each runs a
round or a few, and asserts the checker's verdict and that the cluster served again after every
round. How long a fault interrupted service is a figure: bench/test_bench_faults.py runs more
rounds and records it.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.nemesis import SCENARIOS, run_scenario

#: Calls the checker must see at the least: a run that recorded less proves little.
MIN_OPERATIONS = 20
#: Rounds of each scenario (one where not named): enough for every node to lead at some point
#: where a node's clock is off.
ROUNDS = {
    "kill -9 of the leader": 2,
    "one clock 2 s ahead, leaders killed": 3,
    "one clock 2 s behind, leaders killed": 3,
}


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_fault(tmp_path: Path, name: str) -> None:
    outcome = run_scenario(SCENARIOS[name], tmp_path, ROUNDS.get(name, 1))
    outcome.result.assert_valid()
    assert outcome.result.figures["ok"] >= MIN_OPERATIONS, outcome.result.figures  # type: ignore[operator]
