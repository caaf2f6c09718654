"""Shared benchmark fixtures. ``baseline`` marks a benchmark as the reference of its group."""

from typing import Any

import pytest


@pytest.fixture
def baseline(benchmark: Any) -> Any:
    """A ``benchmark`` fixture whose result is the group's baseline in ``bench/ratios.py``."""
    benchmark.extra_info["baseline"] = True
    return benchmark
