"""HLC core from Python, each beside baselines in the same run: ``time.time_ns()`` (the cost of
just reading the clock from Python) and a pure-Python HLC (``tests/support/models/hlc.py``)."""

import time
from typing import Any

import pytest
from hlc_oracle import Clock, Timestamp

from tests.support.models import hlc as model

GROUPS = ["now", "update", "reserve", "to_bytes", "parse"]


@pytest.mark.parametrize("group", GROUPS)
def test_time_ns(baseline: Any, group: str, measure_calls: Any) -> None:
    baseline.group = group
    measure_calls(baseline, time.time_ns)


def test_clock_now(benchmark: Any, measure_calls: Any, interleaved_ratio: Any) -> None:
    benchmark.group = "now"
    clock = Clock()
    measure_calls(benchmark, clock.now)
    benchmark.extra_info["interleaved_ratio_to_time_ns"] = round(
        interleaved_ratio(clock.now, time.time_ns), 3
    )


def test_python_hlc_now(benchmark: Any, measure_calls: Any) -> None:
    benchmark.group = "now"
    measure_calls(benchmark, model.PythonHlc().now)


def test_clock_update(benchmark: Any, measure_calls: Any, interleaved_ratio: Any) -> None:
    benchmark.group = "update"
    clock = Clock(node=1)
    remote = Clock(node=2).now()
    measure_calls(benchmark, clock.update, remote)
    benchmark.extra_info["interleaved_ratio_to_time_ns"] = round(
        interleaved_ratio(clock.update, time.time_ns, (remote,)), 3
    )


def test_python_hlc_update(benchmark: Any, measure_calls: Any) -> None:
    benchmark.group = "update"
    hlc = model.PythonHlc()
    remote = model.PythonHlc().now()
    measure_calls(benchmark, hlc.update, remote)


@pytest.mark.parametrize("n", [1, 1_000_000])
def test_clock_reserve(benchmark: Any, n: int, measure_calls: Any, interleaved_ratio: Any) -> None:
    benchmark.group = "reserve"
    clock = Clock()
    measure_calls(benchmark, clock.reserve, n)
    benchmark.extra_info["interleaved_ratio_to_time_ns"] = round(
        interleaved_ratio(clock.reserve, time.time_ns, (n,)), 3
    )


def test_timestamp_to_bytes(benchmark: Any, measure_calls: Any) -> None:
    benchmark.group = "to_bytes"
    measure_calls(benchmark, Clock().now().to_bytes)


def test_python_to_bytes(benchmark: Any, measure_calls: Any) -> None:
    benchmark.group = "to_bytes"
    ts = Clock().now()
    measure_calls(benchmark, model.to_bytes, ts.physical, ts.logical, ts.node)


def test_timestamp_parse(benchmark: Any, measure_calls: Any) -> None:
    benchmark.group = "parse"
    measure_calls(benchmark, Timestamp.parse, str(Clock().now()))


def test_python_parse(benchmark: Any, measure_calls: Any) -> None:
    benchmark.group = "parse"
    measure_calls(benchmark, model.parse_text, str(Clock().now()))
