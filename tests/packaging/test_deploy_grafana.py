"""deploy/grafana-dashboard.json: it parses as a Grafana dashboard, covers what an operator
watches (requests, timestamps, commits, batches, fdatasync, skew, the cluster), and every metric
it queries is one a real server exports on /metrics."""

from __future__ import annotations

import json
import re
import urllib.request
from pathlib import Path
from typing import Any

from hlc_oracle import Transaction
from hlc_oracle.client import OracleClient
from prometheus_client.parser import text_string_to_metric_families

from tests.support.oracle_process import OracleProcess
from tests.support.repository import DEPLOY

METRIC_NAME = re.compile(r"hlc_oracle_\w+")
DASHBOARD = DEPLOY / "grafana-dashboard.json"
# Sample names a family of each type exposes (the parser strips the suffixes from the family).
SUFFIXES = {
    "counter": ("_total",),
    "gauge": ("",),
    "histogram": ("_bucket", "_sum", "_count"),
    "summary": ("_sum", "_count", ""),
    "unknown": ("",),
}


def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return loaded


def queries(board: dict[str, Any]) -> list[str]:
    found = [target["expr"] for panel in board["panels"] for target in panel.get("targets", [])]
    for variable in board["templating"]["list"]:
        query = variable.get("query")
        if isinstance(query, dict):
            found.append(query["query"])
    return found


def test_dashboard_shape() -> None:
    board = dashboard()
    assert board["uid"] == "hlc-oracle" and board["schemaVersion"] >= 36
    panels = [panel for panel in board["panels"] if panel["type"] != "row"]
    ids = [panel["id"] for panel in board["panels"]]
    assert len(ids) == len(set(ids))
    for panel in panels:
        assert panel["targets"], panel["title"]
        assert panel["datasource"]["uid"] == "${datasource}"
        for target in panel["targets"]:
            assert target["expr"].count("(") == target["expr"].count(")"), target["expr"]
    titles = " ".join(panel["title"].lower() for panel in panels)
    for topic in ("requests/s", "latency", "timestamps/s", "commits/s by outcome",
                  "per batch", "fdatasync", "offset", "skew state", "ntp", "role", "epoch",
                  "keepalive"):  # fmt: skip
        assert topic in titles, topic


def test_every_queried_metric_is_exported_by_the_server(tmp_path: Path) -> None:
    queried = {name for expr in queries(dashboard()) for name in METRIC_NAME.findall(expr)}
    assert len(queried) >= 20
    with OracleProcess(tmp_path / "data", "--metrics-port", "0") as oracle:
        with OracleClient(oracle.target) as client:
            start = client.get_timestamp()
            for txn_id in range(1, 6):
                client.commit(Transaction(txn_id, start, [], [b"key%d" % txn_id]))
        url = f"http://127.0.0.1:{oracle.metrics_port}/metrics"
        with urllib.request.urlopen(url) as page:
            text = page.read().decode()
    exported = {
        family.name + suffix
        for family in text_string_to_metric_families(text)
        for suffix in SUFFIXES[family.type]
    }
    assert queried <= exported, sorted(queried - exported)
    # The group-commit figures count what happened: five commits, each batch one fdatasync.
    samples = {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }
    committed = (("outcome", "committed"),)
    assert samples[("hlc_oracle_commit_decisions_total", committed)] == 5
    batches = samples[("hlc_oracle_commit_batches_total", ())]
    assert 1 <= batches <= 5
    assert samples[("hlc_oracle_commit_log_sync_seconds_count", ())] >= batches
    assert samples[("hlc_oracle_commit_log_sync_seconds_sum", ())] > 0
