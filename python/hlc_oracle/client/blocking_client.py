"""The blocking client, :class:`OracleClient`: an :class:`AsyncOracleClient` driven on a private
event-loop thread, safe to share between threads.
"""

from __future__ import annotations

import contextlib
import weakref
from collections.abc import Coroutine, Sequence
from types import TracebackType
from typing import Any, Self, TypeVar

import grpc

from hlc_oracle import Aborted, Committed, Timestamp, TimestampRange, Transaction
from hlc_oracle.client.async_client import DEFAULT_TARGET, AsyncOracleClient
from hlc_oracle.client.commit_many import CommitManyResults
from hlc_oracle.client.errors import OracleError
from hlc_oracle.client.status import OracleStatus
from hlc_oracle.loop_thread import LoopThread

T = TypeVar("T")

# How long close() waits for the private loop's tasks and thread (they normally take milliseconds).
_FINISH_TIMEOUT_S = 5.0


def _shut_down(loop_thread: LoopThread, client: AsyncOracleClient | None) -> None:
    """Closes ``client`` on its private loop, then stops that loop's thread, which lets every task
    left there finish (gRPC's own included) before it closes the loop: closing it with tasks
    pending printed "Task was destroyed but it is pending!" and, from gRPC callbacks, "Event loop
    is closed"."""
    if client is not None and loop_thread.running:
        with contextlib.suppress(Exception):
            loop_thread.submit(client.close()).result(timeout=_FINISH_TIMEOUT_S)
    loop_thread.stop()


class OracleClient:
    """Blocking client; safe to share between threads. ``with OracleClient(target) as client:``.

    It drives an :class:`AsyncOracleClient` on its own event-loop thread, so concurrent
    ``get_timestamp()`` calls from many threads are merged in the same way. Arguments are those of
    :class:`AsyncOracleClient`.
    """

    def __init__(self, target: str | Sequence[str] = DEFAULT_TARGET, **kwargs: Any) -> None:
        self._loop_thread = LoopThread("hlc-oracle-client", stop_timeout_s=_FINISH_TIMEOUT_S)
        self._loop_thread.start()
        self._closed = False

        async def build() -> AsyncOracleClient:
            return AsyncOracleClient(target, **kwargs)

        try:
            self._client = self._run(build())
        except BaseException:
            _shut_down(self._loop_thread, None)
            raise
        # Closes the client once: from close(), when it is garbage-collected, or at interpreter
        # exit for a client never closed (its pending tasks would otherwise be destroyed with the
        # loop: "Task was destroyed but it is pending!", and gRPC's callbacks would find the
        # loop closed). The finalizer holds the loop's thread and the async client, never self.
        self._finalizer = weakref.finalize(self, _shut_down, self._loop_thread, self._client)

    def _run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        if self._closed:
            coroutine.close()
            raise OracleError(grpc.StatusCode.CANCELLED, "client closed")
        return self._loop_thread.submit(coroutine).result()

    @property
    def target(self) -> str:
        return self._client.target

    def get_timestamp(self) -> Timestamp:
        async def one() -> Timestamp:
            return await self._client.get_timestamp()

        return self._run(one())

    def get_timestamps(self, count: int) -> TimestampRange:
        return self._run(self._client.get_timestamps(count))

    def get_timestamps_unary(self, count: int) -> TimestampRange:
        return self._run(self._client.get_timestamps_unary(count))

    def observe(self, remote: Timestamp) -> Timestamp:
        return self._run(self._client.observe(remote))

    def status(self) -> OracleStatus:
        return self._run(self._client.status())

    def statuses(self) -> dict[str, OracleStatus | OracleError]:
        return self._run(self._client.statuses())

    @property
    def batches(self) -> int:
        return self._client.batches

    def commit(self, txn: Transaction) -> Committed | Aborted:
        return self._run(self._client.commit(txn))

    def commit_many(self, txns: Sequence[Transaction]) -> CommitManyResults:
        """See :meth:`AsyncOracleClient.commit_many`."""
        return self._run(self._client.commit_many(txns))

    def commit_unary(self, txn: Transaction) -> Committed | Aborted:
        return self._run(self._client.commit_unary(txn))

    def abort(self, txn_id: int, start_ts: Timestamp | None = None) -> Committed | Aborted:
        """See :meth:`AsyncOracleClient.abort`."""
        return self._run(self._client.abort(txn_id, start_ts))

    def transaction_status(
        self, txn_id: int, start_ts: Timestamp | None = None
    ) -> Committed | Aborted | None:
        """See :meth:`AsyncOracleClient.transaction_status`."""
        return self._run(self._client.transaction_status(txn_id, start_ts))

    def close(self) -> None:
        """Closes the client (what still waits fails with ``CANCELLED``); idempotent. A client
        never closed is closed when it is garbage-collected, or at interpreter exit."""
        if self._closed:
            return
        self._closed = True
        self._finalizer()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()
