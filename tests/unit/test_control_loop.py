"""ControlLoop: a thread with its own event loop, reached from another loop without blocking
it; and the exception handler that drops grpc.aio's spurious poller wake-up and nothing else."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest
from hlc_oracle.cluster.control_loop import ControlLoop
from hlc_oracle.loop_thread import drop_spurious_poller_wakeups, is_spurious_poller_wakeup


def test_call_runs_on_the_control_thread_without_blocking_the_caller() -> None:
    control = ControlLoop("test-control")
    control.start()
    try:

        async def where() -> str:
            await asyncio.sleep(0.05)
            return threading.current_thread().name

        async def caller() -> tuple[str, int]:
            ticks = 0
            call = asyncio.ensure_future(control.call(where()))
            while not call.done():  # the caller's loop keeps running meanwhile
                ticks += 1
                await asyncio.sleep(0.001)
            return await call, ticks

        name, ticks = asyncio.run(caller())
        assert name == "test-control" and ticks > 5
    finally:
        control.stop()
    assert not control.running


def _context(exception: BaseException, callback: str) -> dict[str, Any]:
    return {"message": f"Exception in callback {callback}", "exception": exception}


@pytest.mark.parametrize(
    ("context", "dropped"),
    [
        (_context(BlockingIOError(11, "again"), "PollerCompletionQueue._handle_events()"), True),
        (_context(BlockingIOError(11, "again"), "something_else()"), False),
        (_context(OSError("boom"), "PollerCompletionQueue._handle_events()"), False),
        ({"message": "Task was destroyed but it is pending!"}, False),
    ],
)
def test_only_the_spurious_poller_wakeup_is_dropped(context: dict[str, Any], dropped: bool) -> None:
    assert is_spurious_poller_wakeup(context) == dropped
    loop = asyncio.new_event_loop()
    seen: list[dict[str, Any]] = []
    try:
        loop.set_exception_handler(lambda _, ctx: seen.append(ctx))
        drop_spurious_poller_wakeups(loop)
        loop.call_exception_handler(context)
    finally:
        loop.close()
    assert seen == ([] if dropped else [context])
