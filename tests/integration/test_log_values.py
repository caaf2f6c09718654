"""What the server's log records say, as a reader sees them: no 1970 timestamp for a node that
handed out nothing, no ``reason=None`` in text, the data dir's creation said once."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from tests.support.oracle_process import OracleProcess

StartOracle = Callable[..., OracleProcess]


def records(oracle: OracleProcess) -> list[dict[str, object]]:
    return [json.loads(line) for line in oracle.log_text().splitlines() if line.startswith("{")]


def test_a_node_that_handed_out_nothing_logs_no_1970_timestamp(
    start_oracle: StartOracle, tmp_path: Path
) -> None:
    oracle = start_oracle(data_dir=tmp_path / "new" / "data")
    assert oracle.stop() == 0
    (stopped,) = [r for r in records(oracle) if r["message"] == "stopped"]
    assert stopped["last"] is None, stopped
    # A data dir made at start is said once, with its absolute path (an example config run as
    # root made /var/lib/hlc-oracle without a word).
    created = [r for r in records(oracle) if r["message"] == "created the data dir"]
    assert [r["data_dir"] for r in created] == [str((tmp_path / "new" / "data").resolve())]


def test_text_logs_leave_out_fields_without_a_value(start_oracle: StartOracle) -> None:
    oracle = start_oracle("--log-format", "text")
    assert oracle.stop() == 0
    lines = oracle.log_text().splitlines()
    assert "info    hlc_oracle.server: serving" in lines, lines
    assert not any("=None" in line for line in lines), lines
