"""Shared benchmark fixtures. ``baseline`` marks a benchmark as the reference of its group;
``loop``, one event loop per module; ``close_channels``, closing the gRPC channels a test made
(bench/support.py has the shared loads and measurements)."""

import asyncio
import statistics
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from bench.support import CHANNELS


@pytest.fixture
def baseline(benchmark: Any) -> Any:
    """A ``benchmark`` fixture whose result is the group's baseline in ``bench/ratios.py``."""
    benchmark.extra_info["baseline"] = True
    return benchmark


def _measure_calls(benchmark: Any, target: Callable[..., Any], *args: Any) -> Any:
    return benchmark.pedantic(target, args=args, iterations=2_000, rounds=60, warmup_rounds=3)


@pytest.fixture
def measure_calls() -> Callable[..., Any]:
    """``measure_calls(benchmark, target, *args)``: fixed loop counts with a warm-up, the same for
    every member of a group. Calls of tens to hundreds of nanoseconds need it: the default
    calibration picks loop counts that vary run to run, and with them the per-call overhead of
    the timing loop, which moved same-run ratios by up to 2x here."""
    return _measure_calls


def _interleaved_ratio(
    subject: Callable[..., Any],
    reference: Callable[..., Any],
    args: tuple[Any, ...] = (),
    reference_args: tuple[Any, ...] = (),
    calls: int = 20_000,
    pairs: int = 15,
) -> float:
    """Median over ``pairs`` of (time of ``calls`` subject calls) / (time of as many reference
    calls), the two blocks of a pair run back to back: load that comes and goes hits both sides
    of a pair alike, where two benchmarks run one after the other can see different machines."""
    ratios = []
    for _ in range(pairs):
        started = time.perf_counter()
        for _ in range(calls):
            reference(*reference_args)
        middle = time.perf_counter()
        for _ in range(calls):
            subject(*args)
        ratios.append((time.perf_counter() - middle) / (middle - started))
    return statistics.median(ratios)


@pytest.fixture
def interleaved_ratio() -> Callable[..., float]:
    """``interleaved_ratio(subject, reference, args=(), reference_args=())``: see
    :func:`_interleaved_ratio`."""
    return _interleaved_ratio


@pytest.fixture(scope="module")
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    """One event loop for the module's benchmarks: channels and clients made on it live across
    tests."""
    event_loop = asyncio.new_event_loop()
    yield event_loop
    event_loop.close()


@pytest.fixture
def close_channels(loop: asyncio.AbstractEventLoop) -> Iterator[None]:
    """Closes the channels a test made (``bench.support.aio_channel``) when it ends. With them
    left open until the module ended, whichever server ran second measured about 1.4x slower,
    in both orders."""
    yield
    for channel in CHANNELS:
        loop.run_until_complete(channel.close())
    CHANNELS.clear()
