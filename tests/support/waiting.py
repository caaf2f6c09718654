"""Bounded waits for a condition nothing announces: poll it, fail the test at the deadline."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import pytest


def wait_for(predicate: Callable[[], bool], timeout_s: float, pause_s: float = 0.02) -> float:
    """Polls ``predicate`` every ``pause_s`` until it holds; the seconds that took. Fails the
    test after ``timeout_s``."""
    start = time.monotonic()
    while not predicate():
        if time.monotonic() - start > timeout_s:
            pytest.fail(f"condition not reached within {timeout_s} s")
        time.sleep(pause_s)
    return time.monotonic() - start


async def wait_for_async(
    predicate: Callable[[], bool], timeout_s: float, pause_s: float = 0.02
) -> float:
    """:func:`wait_for` on an event loop: the loop runs between polls."""
    start = time.monotonic()
    while not predicate():
        if time.monotonic() - start > timeout_s:
            pytest.fail(f"condition not reached within {timeout_s} s")
        await asyncio.sleep(pause_s)
    return time.monotonic() - start
