"""Ending a service's open request streams at a graceful stop.

A client may hold a stream (``CommitStream``, ``StreamTimestamps``) open and idle for as long as it
likes; gRPC's graceful stop would wait the whole shutdown grace for it, then cancel it. A stopping
node instead ends each open stream with the refusal its gate gives (``UNAVAILABLE`` with the usual
refusal metadata: a client retries elsewhere) as soon as :meth:`OpenStreams.end_all` is called,
once what the stream had handed over is answered.

Handlers read their requests through :meth:`OpenStreams.next_request`, which notes the handler's
task as idle while it waits for the client. ``end_all`` cancels only idle handlers, so the
cancellation lands at that read and nowhere else (never while a decision is being made or
answered); the read then raises :class:`StreamEndedError`, and the handler answers with the refusal.
A stream opened after ``end_all`` ends at its first read.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any


class StreamEndedError(Exception):
    """The server is stopping: the stream must end with the gate's refusal."""


class OpenStreams:
    """The idle request streams of one service (all on the server's event loop)."""

    def __init__(self) -> None:
        self.ending = False
        self._idle: set[asyncio.Task[Any]] = set()

    async def next_request(self, requests: AsyncIterator[bytes]) -> bytes | None:
        """The stream's next request, ``None`` when the client ended it; raises
        :class:`StreamEndedError` once :meth:`end_all` was called."""
        if self.ending:
            raise StreamEndedError
        task = asyncio.current_task()
        assert task is not None
        self._idle.add(task)
        try:
            return await anext(requests)
        except StopAsyncIteration:
            return None
        except asyncio.CancelledError:
            if self.ending:
                task.uncancel()  # consumed here: the handler goes on to answer the refusal
                raise StreamEndedError from None
            raise
        finally:
            self._idle.discard(task)

    def end_all(self) -> None:
        """Ends every open stream (those busy end at their next read)."""
        self.ending = True
        for task in list(self._idle):
            task.cancel()
