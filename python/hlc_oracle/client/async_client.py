"""The asyncio client, :class:`AsyncOracleClient`: every RPC of both services, with timeouts,
retries and request merging.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Any, Self, TypeVar

import grpc

from hlc_oracle import Aborted, Committed, Timestamp, TimestampRange, Transaction
from hlc_oracle._core import encode_commit_request
from hlc_oracle.client.commit_batcher import CommitBatcher
from hlc_oracle.client.errors import OracleTlsHandshakeError, OracleUnavailableError, result_error
from hlc_oracle.client.handshake import diagnose, material_of
from hlc_oracle.client.retry import RetryPolicy, with_retries
from hlc_oracle.client.status import OracleStatus
from hlc_oracle.client.streams import commit_stream, timestamp_stream
from hlc_oracle.client.timestamp_batcher import TimestampBatcher
from hlc_oracle.client.wire import (
    TIMESTAMP_ORACLE_METHODS,
    TRANSACTIONS_METHODS,
    CommitAnswer,
    outcome_from_wire,
    range_from_wire,
    status_code,
    timestamp_from_wire,
    timestamp_to_wire,
    transaction_to_wire,
)
from hlc_oracle.proto import oracle_pb2 as pb

T = TypeVar("T")

DEFAULT_TARGET = "127.0.0.1:50051"


class AsyncOracleClient:
    """asyncio client. Use ``async with AsyncOracleClient(target) as client:``.

    ``timeout`` bounds every call (seconds); ``retry`` governs retries of ``UNAVAILABLE``;
    ``credentials`` (see :func:`channel_credentials`) switches to TLS; ``max_batch`` caps the
    count of one merged timestamp request (keep it at or below the server's
    ``limits.max_count``); ``commit_batch`` how many ``commit()`` callers share one
    ``CommitStream`` message, with at most ``commit_in_flight`` messages in flight;
    ``max_concurrent_calls`` bounds the unary calls in progress (more wait their turn).
    """

    def __init__(
        self,
        target: str = DEFAULT_TARGET,
        *,
        timeout: float = 5.0,
        retry: RetryPolicy | None = None,
        credentials: grpc.ChannelCredentials | None = None,
        max_batch: int = 1_000_000,
        options: list[tuple[str, Any]] | None = None,
        commit_batch: int = 512,
        commit_in_flight: int = 4,
        max_concurrent_calls: int = 256,
    ) -> None:
        self.target = target
        self.timeout = timeout
        self.retry = retry or RetryPolicy()
        self._tls = credentials is not None
        self._tls_material = material_of(credentials)
        if credentials is None:
            self._channel = grpc.aio.insecure_channel(target, options=options)
        else:
            self._channel = grpc.aio.secure_channel(target, credentials, options=options)
        self._get_timestamps = self._channel.unary_unary(
            TIMESTAMP_ORACLE_METHODS + "GetTimestamps",
            request_serializer=pb.GetTimestampsRequest.SerializeToString,
            response_deserializer=pb.GetTimestampsResponse.FromString,
        )
        self._observe = self._channel.unary_unary(
            TIMESTAMP_ORACLE_METHODS + "Observe",
            request_serializer=pb.ObserveRequest.SerializeToString,
            response_deserializer=pb.ObserveResponse.FromString,
        )
        self._status = self._channel.unary_unary(
            TIMESTAMP_ORACLE_METHODS + "GetStatus",
            request_serializer=pb.GetStatusRequest.SerializeToString,
            response_deserializer=pb.GetStatusResponse.FromString,
        )
        self._stream = timestamp_stream(self._channel)
        # grpcio refuses part of a burst of more than about a thousand calls opened at once on a
        # new connection (CANCELLED / RST_STREAM, measured against a bare grpcio server too), so
        # unary calls queue here instead.
        self._unary_calls = asyncio.Semaphore(max_concurrent_calls)
        self._batcher = TimestampBatcher(self._fetch_for_batch, max_batch=max_batch)
        self._commit = self._channel.unary_unary(
            TRANSACTIONS_METHODS + "Commit",
            request_serializer=pb.CommitRequest.SerializeToString,
            response_deserializer=pb.CommitResult.FromString,
        )
        self._abort = self._channel.unary_unary(
            TRANSACTIONS_METHODS + "Abort",
            request_serializer=pb.AbortRequest.SerializeToString,
            response_deserializer=pb.CommitResult.FromString,
        )
        self._transaction_status = self._channel.unary_unary(
            TRANSACTIONS_METHODS + "GetTransactionStatus",
            request_serializer=pb.TransactionStatusRequest.SerializeToString,
            response_deserializer=pb.TransactionStatusResponse.FromString,
        )
        self._commit_stream = commit_stream(self._channel)
        self._commit_batcher = CommitBatcher(
            self._send_commits, max_batch=commit_batch, max_in_flight=commit_in_flight
        )

    async def _unary(self, policy: RetryPolicy, call: Callable[[], Awaitable[T]]) -> T:
        """A unary call with retries, at most ``max_concurrent_calls`` at a time."""
        async with self._unary_calls:
            return await self._retrying(policy, call)

    async def _retrying(self, policy: RetryPolicy, call: Callable[[], Awaitable[T]]) -> T:
        """``with_retries``; when the oracle stays unreachable, a look at the TLS handshake tells
        a handshake failure (:class:`OracleTlsHandshakeError`) from a server that is not there."""
        try:
            return await with_retries(policy, call)
        except OracleUnavailableError as err:
            # Only a plain transport failure: a refusal (any mark) came from a server that the
            # handshake let through.
            if type(err) is not OracleUnavailableError or err.refusal is not None:
                raise
            failure = await diagnose(
                self.target, self._tls_material, self._tls, timeout=min(1.0, self.timeout)
            )
            if failure is None:
                raise
            raise OracleTlsHandshakeError(err.code, failure.cause, err.details) from err

    async def _fetch_for_batch(self, count: int) -> TimestampRange:
        return await self._retrying(
            self.retry,
            lambda: self._stream.request(pb.GetTimestampsRequest(count=count), self.timeout),
        )

    def get_timestamp(self) -> Awaitable[Timestamp]:
        """One timestamp; concurrent callers share one stream message."""
        return self._batcher.get()

    async def get_timestamps(self, count: int) -> TimestampRange:
        """``count`` consecutive timestamps. Concurrent calls (and ``get_timestamp()`` calls)
        share one stream message; each gets its own contiguous part of the merged range."""
        if not isinstance(count, int) or isinstance(count, bool):
            raise TypeError(f"count must be an int, got {type(count).__name__}")
        if not 1 <= count < 2**32:
            raise ValueError(f"count must be in 1..2**32-1, got {count}")
        return await self._batcher.get_range(count)

    async def get_timestamps_unary(self, count: int) -> TimestampRange:
        """``count`` consecutive timestamps from one ``GetTimestamps`` call of its own (no
        merging): the server sees exactly this count."""
        if not isinstance(count, int) or isinstance(count, bool):
            raise TypeError(f"count must be an int, got {type(count).__name__}")
        if not 0 <= count < 2**32:
            raise ValueError(f"count must be in 0..2**32-1, got {count}")
        request = pb.GetTimestampsRequest(count=count)
        response = await self._unary(
            self.retry, lambda: self._get_timestamps(request, timeout=self.timeout)
        )
        return range_from_wire(response)

    async def observe(self, remote: Timestamp) -> Timestamp:
        """Receive event on the oracle's clock; returns its new timestamp (above ``remote``)."""
        if not isinstance(remote, Timestamp):
            raise TypeError(f"remote must be a Timestamp, got {type(remote).__name__}")
        request = pb.ObserveRequest(remote=timestamp_to_wire(remote))
        response = await self._unary(
            self.retry, lambda: self._observe(request, timeout=self.timeout)
        )
        return timestamp_from_wire(response.timestamp)

    async def status(self) -> OracleStatus:
        response = await self._unary(
            self.retry, lambda: self._status(pb.GetStatusRequest(), timeout=self.timeout)
        )
        return OracleStatus.from_wire(response)

    @property
    def batches(self) -> int:
        """How many merged requests ``get_timestamp()`` has sent so far."""
        return self._batcher.batches

    # --- transactions ---

    async def _send_commits(self, transactions: list[Transaction]) -> list[CommitAnswer]:
        # Resending after UNAVAILABLE is safe: a decided id gets its first decision back.
        message = encode_commit_request(transactions)
        return await self._retrying(
            self.retry, lambda: self._commit_stream.request(message, self.timeout)
        )

    async def commit(self, txn: Transaction) -> Committed | Aborted:
        """Commits ``txn`` through group commit: ``Committed`` or ``Aborted``, as in-process.
        Concurrent calls share one ``CommitStream`` message; a refused transaction raises
        :class:`OracleError` with the status code (``INVALID_ARGUMENT``, ``OUT_OF_RANGE``,
        ``ALREADY_EXISTS``, ``RESOURCE_EXHAUSTED``, ...)."""
        if not isinstance(txn, Transaction):
            raise TypeError(f"txn must be a Transaction, got {type(txn).__name__}")
        answer = await self._commit_batcher.submit(txn)
        if isinstance(answer, tuple):
            _, code_number, message = answer
            raise result_error(status_code(code_number), message)
        return answer

    async def commit_unary(self, txn: Transaction) -> Committed | Aborted:
        """Like :meth:`commit`, as one unary ``Commit`` call (no merging)."""
        if not isinstance(txn, Transaction):
            raise TypeError(f"txn must be a Transaction, got {type(txn).__name__}")
        request = pb.CommitRequest(transaction=transaction_to_wire(txn))
        result = await self._unary(self.retry, lambda: self._commit(request, timeout=self.timeout))
        return outcome_from_wire(result)

    @staticmethod
    def _txn_id(txn_id: object) -> int:
        if not isinstance(txn_id, int) or isinstance(txn_id, bool):
            raise TypeError(f"txn_id must be an int, got {type(txn_id).__name__}")
        if not 0 <= txn_id < 2**64:
            raise ValueError(f"txn_id must be in 1..2**64-1, got {txn_id}")
        return txn_id

    async def abort(self, txn_id: int) -> Committed | Aborted:
        """Aborts an undecided id (a late commit of it is then refused); returns the decision."""
        request = pb.AbortRequest(txn_id=self._txn_id(txn_id))
        result = await self._unary(self.retry, lambda: self._abort(request, timeout=self.timeout))
        return outcome_from_wire(result)

    async def transaction_status(self, txn_id: int) -> Committed | Aborted | None:
        """The decision on ``txn_id``, or None when the oracle does not know it."""
        request = pb.TransactionStatusRequest(txn_id=self._txn_id(txn_id))
        response = await self._unary(
            self.retry, lambda: self._transaction_status(request, timeout=self.timeout)
        )
        return outcome_from_wire(response.result) if response.known else None

    @property
    def commit_batches(self) -> int:
        """How many merged ``CommitStream`` messages ``commit()`` has sent so far."""
        return self._commit_batcher.batches

    async def close(self) -> None:
        await self._commit_batcher.close()
        await self._commit_stream.close()
        await self._batcher.close()
        await self._stream.close()
        await self._channel.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()
