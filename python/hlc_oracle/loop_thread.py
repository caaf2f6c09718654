"""One thread running one asyncio event loop, reached from other threads and event loops
without blocking them: the blocking client drives its :class:`~hlc_oracle.client.AsyncOracleClient`
on one, and a clustered node runs its leadership work on one
(:class:`~hlc_oracle.cluster.control_loop.ControlLoop`).

- another event loop reaches it with ``await thread.call(coroutine)`` (``asyncio.wrap_future``
  of ``run_coroutine_threadsafe``), never by blocking on a result; a thread without a loop gets a
  ``concurrent.futures.Future`` from :meth:`LoopThread.submit`;
- every loop that talks gRPC here drops grpc.aio's harmless spurious poller wake-up
  (:func:`drop_spurious_poller_wakeups`): grpc.aio binds one loop per thread, its shared poller
  wakes every bound loop, and the loops that find nothing to read log a ``BlockingIOError`` from
  ``PollerCompletionQueue._handle_events``;
- :meth:`LoopThread.stop` cancels what is left on the loop and gives it a moment
  (``stop_timeout_s``), so no task is destroyed pending, then closes the loop.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

log = logging.getLogger("hlc_oracle.loop_thread")

T = TypeVar("T")

#: Seconds a loop's last tasks get to finish when it stops (unless its thread says otherwise).
STOP_TIMEOUT_S = 2.0


def is_spurious_poller_wakeup(context: dict[str, Any]) -> bool:
    """Whether ``context`` (an event loop's exception context) is grpc.aio's harmless
    ``BlockingIOError`` of a loop that found another loop had read the poller's wake-up byte."""
    if not isinstance(context.get("exception"), BlockingIOError):
        return False
    where = f"{context.get('message', '')} {context.get('handle', '')!r}"
    return "PollerCompletionQueue._handle_events" in where


def drop_spurious_poller_wakeups(loop: asyncio.AbstractEventLoop) -> None:
    """Installs on ``loop`` an exception handler that drops :func:`is_spurious_poller_wakeup`
    records and passes every other one on (to the handler set before, or the default)."""
    previous = loop.get_exception_handler()

    def handle(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        if is_spurious_poller_wakeup(context):
            return
        if previous is not None:
            previous(loop, context)
        else:
            loop.default_exception_handler(context)

    loop.set_exception_handler(handle)


class LoopThread:
    """One thread running one asyncio event loop; see the module docstring."""

    def __init__(self, name: str, stop_timeout_s: float = STOP_TIMEOUT_S) -> None:
        self.name = name
        #: Seconds the loop's last tasks get to finish when it stops.
        self.stop_timeout_s = stop_timeout_s
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            raise RuntimeError(f"the {self.name} loop is not started")
        return self._loop

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def in_loop(self) -> bool:
        """Whether the caller runs on this loop's thread."""
        return self._thread is threading.current_thread()

    def start(self) -> None:
        """Starts the thread; returns once its loop runs."""
        if self._thread is not None:
            return
        self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
        self._thread.start()
        self._ready.wait()

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        drop_spurious_poller_wakeups(loop)
        self._loop = loop
        loop.call_soon(self._ready.set)
        try:
            loop.run_forever()
        finally:
            try:
                self._finish_tasks(loop, self.stop_timeout_s)
                loop.run_until_complete(loop.shutdown_asyncgens())
                loop.run_until_complete(loop.shutdown_default_executor())
            finally:
                asyncio.set_event_loop(None)
                loop.close()

    @staticmethod
    def _finish_tasks(loop: asyncio.AbstractEventLoop, timeout_s: float) -> None:
        """Cancels what is left on the loop and lets it end (bounded): no task is destroyed
        pending, which would log an error."""
        tasks = asyncio.all_tasks(loop)
        if not tasks:
            return
        for task in tasks:
            task.cancel()
        done, pending = loop.run_until_complete(asyncio.wait(tasks, timeout=timeout_s))
        for task in done:
            if not task.cancelled() and task.exception() is not None:
                log.warning(
                    "task ended with an error at shutdown",
                    extra={"fields": {"task": task.get_name(), "error": repr(task.exception())}},
                )
        if pending:
            log.warning(
                "tasks still running at shutdown",
                extra={"fields": {"tasks": sorted(task.get_name() for task in pending)}},
            )

    def submit(self, coroutine: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        """Runs ``coroutine`` on this loop, from any thread. Never wait on the result from an
        event loop's thread: add a callback, or use :meth:`call`."""
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop)

    async def call(self, coroutine: Coroutine[Any, Any, T]) -> T:
        """Awaits ``coroutine`` run on this loop, from another event loop (cancelling the caller
        cancels it). On this loop itself, it is simply awaited."""
        if self.in_loop():
            return await coroutine
        return await asyncio.wrap_future(self.submit(coroutine))

    def stop(self, timeout_s: float | None = None) -> None:
        """Stops the loop (its tasks are cancelled and given a moment) and joins the thread.
        Call it from another thread than the loop's (an event loop: ``asyncio.to_thread``)."""
        thread, loop = self._thread, self._loop
        if thread is None or loop is None:
            return
        with contextlib.suppress(RuntimeError):  # already closed
            loop.call_soon_threadsafe(loop.stop)
        thread.join(self.stop_timeout_s + 1.0 if timeout_s is None else timeout_s)
        if thread.is_alive():
            log.warning(f"the {self.name} thread did not stop in time", extra={"fields": {}})
