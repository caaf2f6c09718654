"""HLC core from Python, each beside baselines in the same run: ``time.time_ns()`` (the cost of
just reading the clock from Python) and a pure-Python HLC (``tests/models/hlc.py``)."""

import time
from typing import Any

import pytest
from hlc_oracle import Clock, Timestamp

from tests.models import hlc as model

GROUPS = ["now", "update", "reserve", "to_bytes", "parse"]


@pytest.mark.parametrize("group", GROUPS)
def test_time_ns(baseline: Any, group: str) -> None:
    baseline.group = group
    baseline(time.time_ns)


def test_clock_now(benchmark: Any) -> None:
    benchmark.group = "now"
    benchmark(Clock().now)


def test_python_hlc_now(benchmark: Any) -> None:
    benchmark.group = "now"
    benchmark(model.PythonHlc().now)


def test_clock_update(benchmark: Any) -> None:
    benchmark.group = "update"
    clock = Clock(node=1)
    remote = Clock(node=2).now()
    benchmark(clock.update, remote)


def test_python_hlc_update(benchmark: Any) -> None:
    benchmark.group = "update"
    hlc = model.PythonHlc()
    remote = model.PythonHlc().now()
    benchmark(hlc.update, remote)


@pytest.mark.parametrize("n", [1, 1_000_000])
def test_clock_reserve(benchmark: Any, n: int) -> None:
    benchmark.group = "reserve"
    benchmark(Clock().reserve, n)


def test_timestamp_to_bytes(benchmark: Any) -> None:
    benchmark.group = "to_bytes"
    benchmark(Clock().now().to_bytes)


def test_python_to_bytes(benchmark: Any) -> None:
    benchmark.group = "to_bytes"
    ts = Clock().now()
    benchmark(model.to_bytes, ts.physical, ts.logical, ts.node)


def test_timestamp_parse(benchmark: Any) -> None:
    benchmark.group = "parse"
    benchmark(Timestamp.parse, str(Clock().now()))


def test_python_parse(benchmark: Any) -> None:
    benchmark.group = "parse"
    benchmark(model.parse_text, str(Clock().now()))
