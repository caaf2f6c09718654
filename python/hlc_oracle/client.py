"""Clients of the ``hlc_oracle.v1.TimestampOracle`` service.

- :class:`AsyncOracleClient` (asyncio) and :class:`OracleClient` (blocking, thread-safe; it runs an
  :class:`AsyncOracleClient` on a private event-loop thread).
- ``get_timestamp()`` calls made concurrently from one process are merged, as TiDB PD's client
  does: :class:`TimestampBatcher` collects the callers waiting while a request is in flight, asks
  for all of them in one message on one stream (``count`` = number of callers), and splits the
  range back, so each caller still gets a distinct timestamp.
- ``get_timestamps(n)`` returns a :class:`~hlc_oracle.TimestampRange`; concurrent calls merge
  the same way (each gets its own contiguous part); ``get_timestamps_unary(n)`` is one
  ``GetTimestamps`` call of its own.
- ``commit(txn)`` calls made concurrently are merged the same way (:class:`CommitBatcher`: one
  ``CommitStream`` message carries every waiting caller's transaction); ``abort(txn_id)`` and
  ``transaction_status(txn_id)`` are unary.
- Every call has a timeout; ``UNAVAILABLE`` is retried with exponential backoff and jitter.
  Failures raise :class:`OracleError` (or a subclass) carrying the gRPC status code.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import random
import threading
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Generic, Self, TypeVar

import grpc

from hlc_oracle import Aborted, Committed, HlcError, Timestamp, TimestampRange, Transaction
from hlc_oracle._core import decode_commit_results, encode_commit_request
from hlc_oracle.proto import REFUSAL_METADATA_KEY, REFUSAL_NOT_SERVING
from hlc_oracle.proto import oracle_pb2 as pb
from hlc_oracle.tls import read_pem

T = TypeVar("T")
Answer = TypeVar("Answer")

DEFAULT_TARGET = "127.0.0.1:50051"
_SERVICE = "/hlc_oracle.v1.TimestampOracle/"
_TRANSACTIONS = "/hlc_oracle.v1.Transactions/"


class OracleError(HlcError):
    """The oracle answered with a non-OK status (``code``), or could not be reached.

    ``refusal`` is set when the oracle itself sent the status with its refusal mark:
    ``"not-serving"`` or ``"over-limit"`` (a count above the server's ``max_count``).
    """

    def __init__(self, code: grpc.StatusCode, details: str, refusal: str | None = None) -> None:
        super().__init__(f"{code.name}: {details}")
        self.code = code
        self.details = details
        self.refusal = refusal


class OracleUnavailableError(OracleError):
    """The oracle is not serving or cannot be reached (``UNAVAILABLE``), after all retries."""


class OracleNotServingError(OracleUnavailableError):
    """The oracle was reached and refused: it is not serving now (starting, shutting down, clock
    skew past the limit, ...; ``details`` says why). Retried like any ``UNAVAILABLE``."""


class OracleTimeoutError(OracleError):
    """The call did not finish within the client's timeout (``DEADLINE_EXCEEDED``)."""


def error_from_rpc(err: grpc.RpcError) -> OracleError:
    code: grpc.StatusCode = err.code()
    details: str = err.details() or ""
    refusal = None
    trailing = getattr(err, "trailing_metadata", None)
    for key, value in (trailing() if callable(trailing) else None) or ():
        if key == REFUSAL_METADATA_KEY:
            refusal = value if isinstance(value, str) else value.decode("ascii", "replace")
    kind = {
        grpc.StatusCode.UNAVAILABLE: (
            OracleNotServingError if refusal is not None else OracleUnavailableError
        ),
        grpc.StatusCode.DEADLINE_EXCEEDED: OracleTimeoutError,
    }.get(code, OracleError)
    return kind(code, details, refusal)


def timestamp_from_wire(message: pb.Timestamp) -> Timestamp:
    return Timestamp(message.physical, message.logical, message.node)


def timestamp_to_wire(ts: Timestamp) -> pb.Timestamp:
    return pb.Timestamp(physical=ts.physical, logical=ts.logical, node=ts.node)


def range_from_wire(message: pb.GetTimestampsResponse) -> TimestampRange:
    return TimestampRange(timestamp_from_wire(message.first), message.count)


@dataclass(frozen=True)
class OracleStatus:
    """``GetStatus``: every field of the response, flattened (``clock.*`` at the top level; NTP
    servers as dicts); ``message`` is the response itself."""

    node_id: int
    role: str
    last_timestamp: Timestamp
    persisted_window_us: int
    uptime_seconds: float
    version: str
    max_offset_us: int
    backward_jumps: int
    physical_now_us: int
    serving: bool
    not_serving_reason: str
    max_count: int
    # The skew guard: state, why, the NTP offset estimate (None when unknown) and its bound, the
    # two levels on |offset| (a warning past the first, not serving under the refuse policy past
    # the second), wall-clock jumps against the monotonic clock, NTP polls so far, and each NTP
    # server's last answer.
    skew_state: str
    skew_message: str
    ntp_offset_us: int | None
    ntp_offset_bound_us: int | None
    skew_warning_level_us: int
    skew_serving_level_us: int
    wall_forward_jumps: int
    wall_backward_jumps: int
    ntp_polls: int
    ntp_servers: list[dict[str, Any]]
    message: pb.GetStatusResponse

    @classmethod
    def from_wire(cls, message: pb.GetStatusResponse) -> OracleStatus:
        clock = message.clock
        return cls(
            node_id=message.node_id,
            role=message.role,
            last_timestamp=timestamp_from_wire(message.last_timestamp),
            persisted_window_us=message.persisted_window_us,
            uptime_seconds=message.uptime_seconds,
            version=message.version,
            max_offset_us=message.clock.max_offset_us,
            backward_jumps=message.clock.backward_jumps,
            physical_now_us=message.clock.physical_now_us,
            serving=message.serving,
            not_serving_reason=message.not_serving_reason,
            max_count=message.max_count,
            skew_state=clock.skew_state,
            skew_message=clock.skew_message,
            ntp_offset_us=clock.ntp_offset_us if clock.ntp_offset_known else None,
            ntp_offset_bound_us=clock.ntp_offset_bound_us if clock.ntp_offset_known else None,
            skew_warning_level_us=clock.skew_warning_level_us,
            skew_serving_level_us=clock.skew_serving_level_us,
            wall_forward_jumps=clock.wall_forward_jumps,
            wall_backward_jumps=clock.wall_backward_jumps,
            ntp_polls=clock.ntp_polls,
            ntp_servers=[_ntp_server(server) for server in clock.ntp_servers],
            message=message,
        )


def _ntp_server(server: pb.NtpServerStatus) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "server": server.server,
        "last_status": server.last_status,
        "last_detail": server.last_detail,
        "good_samples": server.good_samples,
        "unhealthy_samples": server.unhealthy_samples,
    }
    if server.has_good_answer:
        entry.update(
            offset_us=server.offset_us,
            delay_us=server.delay_us,
            stratum=server.stratum,
            leap=server.leap,
            last_good_unix_s=server.last_good_unix_s,
        )
    return entry


@dataclass(frozen=True)
class RetryPolicy:
    """Retries of ``UNAVAILABLE``: ``attempts`` tries in all, sleeping ``initial_backoff_s``,
    doubling up to ``max_backoff_s``, each sleep with up to 50% random jitter."""

    attempts: int = 5
    initial_backoff_s: float = 0.05
    max_backoff_s: float = 1.0

    def delays(self) -> list[float]:
        delay = self.initial_backoff_s
        result = []
        for _ in range(self.attempts - 1):
            result.append(delay * (0.5 + random.random() / 2))
            delay = min(delay * 2, self.max_backoff_s)
        return result


async def with_retries(policy: RetryPolicy, call: Callable[[], Awaitable[T]]) -> T:
    """``await call()``, retried on ``UNAVAILABLE``; gRPC failures become :class:`OracleError`."""
    for delay in [*policy.delays(), None]:
        try:
            return await call()
        except grpc.RpcError as err:
            error = error_from_rpc(err)
        except OracleUnavailableError as err:
            error = err
        if not isinstance(error, OracleUnavailableError) or delay is None:
            raise error
        await asyncio.sleep(delay)
    raise AssertionError("unreachable")  # pragma: no cover


class TimestampBatcher:
    """Merges concurrent requests into one ``fetch(total)`` and splits the range back.

    :meth:`get` asks for one timestamp, :meth:`get_range` for ``count`` consecutive ones. While a
    fetch is in flight, new requests queue; when it returns, the queued requests (up to
    ``max_batch`` timestamps in all, and always at least one request) go out as one fetch whose
    range is cut in arrival order: each request gets its own timestamp or contiguous sub-range. A
    failed fetch fails every request of that batch, except that a merged batch refused with
    ``RESOURCE_EXHAUSTED`` (above the server's count limit) is retried request by request.
    """

    def __init__(
        self, fetch: Callable[[int], Awaitable[TimestampRange]], max_batch: int = 1_000_000
    ) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be at least 1, got {max_batch}")
        self._fetch = fetch
        self._max_batch = max_batch
        self._waiting: collections.deque[tuple[asyncio.Future[Any], int]] = collections.deque()
        self._task: asyncio.Task[None] | None = None
        self.batches = 0  # fetches made, for tests and statistics

    def get(self) -> asyncio.Future[Timestamp]:
        """A future resolved with one timestamp of the next batch."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Timestamp] = loop.create_future()
        self._waiting.append((future, 1))
        if self._task is None:
            self._task = loop.create_task(self._drain())
        return future

    def get_range(self, count: int) -> asyncio.Future[TimestampRange]:
        """A future resolved with ``count`` consecutive timestamps of the next batch."""
        if count < 1:
            raise ValueError(f"count must be at least 1, got {count}")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[TimestampRange] = loop.create_future()
        # A count of one still answers with a range: the future's type is the caller's choice.
        self._waiting.append((future, -count if count == 1 else count))
        if self._task is None:
            self._task = loop.create_task(self._drain())
        return future

    def _take(self) -> tuple[list[tuple[asyncio.Future[Any], int]], int]:
        waiting = self._waiting
        batch = [waiting.popleft()]
        total = abs(batch[0][1])
        while waiting and total + abs(waiting[0][1]) <= self._max_batch:
            item = waiting.popleft()
            batch.append(item)
            total += abs(item[1])
        return batch, total

    async def _drain(self) -> None:
        try:
            while self._waiting:
                batch, total = self._take()
                await self._send(batch, total)
        finally:
            self._task = None

    async def _send(self, batch: list[tuple[asyncio.Future[Any], int]], total: int) -> None:
        self.batches += 1
        try:
            timestamps = await self._fetch(total)
        except OracleError as err:
            if err.code == grpc.StatusCode.RESOURCE_EXHAUSTED and len(batch) > 1:
                for item in batch:
                    await self._send([item], abs(item[1]))
                return
            self._fail(batch, err)
            return
        except asyncio.CancelledError as err:
            self._fail(batch, err)
            raise
        except Exception as err:  # every request of the batch must hear about it
            self._fail(batch, err)
            return
        if len(timestamps) != total:
            self._fail(
                batch,
                OracleError(
                    grpc.StatusCode.INTERNAL,
                    f"asked for {total} timestamps, the server answered {len(timestamps)}",
                ),
            )
            return
        offset = 0
        for future, count in batch:
            if count == 1:
                value: Any = timestamps[offset]
            else:
                count = abs(count)
                value = TimestampRange(timestamps[offset], count)
            offset += count
            if not future.done():  # a cancelled caller's timestamps are simply unused
                future.set_result(value)

    @staticmethod
    def _fail(batch: list[tuple[asyncio.Future[Any], int]], err: BaseException) -> None:
        for future, _ in batch:
            if not future.done():
                future.set_exception(err)

    async def close(self) -> None:
        task = self._task
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        error = OracleError(grpc.StatusCode.CANCELLED, "client closed")
        while self._waiting:
            future, _ = self._waiting.popleft()
            if not future.done():
                future.set_exception(error)


class PipelinedStream(Generic[Answer]):
    """One bidirectional call carrying pipelined request messages. The server answers in request
    order, so answers match requests FIFO. The call is opened on first use and reopened after it
    fails; a failure fails every request still waiting on that call.
    """

    def __init__(self, method: Callable[[], Any], decode: Callable[[Any], Answer]) -> None:
        self._method = method
        self._decode = decode
        self._call: Any = None
        self._reader: asyncio.Task[None] | None = None
        self._pending: collections.deque[asyncio.Future[Answer]] = collections.deque()
        self._write_lock = asyncio.Lock()

    async def request(self, message: Any, timeout: float) -> Answer:
        if self._call is None:
            self._call = self._method()
            self._reader = asyncio.get_running_loop().create_task(self._read(self._call))
        call = self._call
        future: asyncio.Future[Answer] = asyncio.get_running_loop().create_future()
        try:
            # One write at a time on a call (grpc.aio refuses overlapping writes); the answer
            # order is the write order, so the future joins the queue under the same lock.
            async with self._write_lock:
                self._pending.append(future)
                await call.write(message)
        except grpc.RpcError as err:
            self._fail(call, err)
        except asyncio.InvalidStateError:
            self._fail(call, OracleUnavailableError(grpc.StatusCode.UNAVAILABLE, "stream closed"))
        try:
            return await asyncio.wait_for(future, timeout)
        except TimeoutError:
            # The stream's answers can no longer be matched to callers: start a new one.
            error = OracleTimeoutError(
                grpc.StatusCode.DEADLINE_EXCEEDED, f"no answer within {timeout} s"
            )
            self._fail(call, error)
            raise error from None

    async def _read(self, call: Any) -> None:
        try:
            while True:
                response = await call.read()
                if response is grpc.aio.EOF:
                    raise OracleUnavailableError(
                        grpc.StatusCode.UNAVAILABLE, "the server closed the stream"
                    )
                if not self._pending:
                    raise OracleError(
                        grpc.StatusCode.INTERNAL, "the server answered a request never sent"
                    )
                future = self._pending.popleft()
                if not future.done():
                    try:
                        future.set_result(self._decode(response))
                    except ValueError as err:
                        future.set_exception(OracleError(grpc.StatusCode.INTERNAL, str(err)))
        except (grpc.RpcError, OracleError) as err:
            self._fail(call, err)
        except asyncio.CancelledError:
            self._fail(call, OracleUnavailableError(grpc.StatusCode.CANCELLED, "stream closed"))
            raise

    def _fail(self, call: Any, err: BaseException) -> None:
        if call is not self._call:
            return
        error = error_from_rpc(err) if isinstance(err, grpc.RpcError) else err
        self._call = None
        call.cancel()
        reader, self._reader = self._reader, None
        if reader is not None and reader is not asyncio.current_task():
            reader.cancel()
        pending, self._pending = self._pending, collections.deque()
        for future in pending:
            if not future.done():
                future.set_exception(error)

    async def close(self) -> None:
        call = self._call
        if call is not None:
            self._fail(call, OracleUnavailableError(grpc.StatusCode.CANCELLED, "client closed"))


def timestamp_stream(channel: grpc.aio.Channel) -> PipelinedStream[TimestampRange]:
    """``StreamTimestamps``: each request message asks for ``count`` timestamps."""
    method = channel.stream_stream(
        _SERVICE + "StreamTimestamps",
        request_serializer=pb.GetTimestampsRequest.SerializeToString,
        response_deserializer=pb.GetTimestampsResponse.FromString,
    )
    return PipelinedStream(method, range_from_wire)


# ---- transactions ----------------------------------------------------------------------------


def transaction_to_wire(txn: Transaction) -> pb.Transaction:
    return pb.Transaction(
        txn_id=txn.txn_id,
        start_ts=timestamp_to_wire(txn.start_ts),
        read_set=txn.read_set,
        write_set=txn.write_set,
    )


_CODES = {code.value[0]: code for code in grpc.StatusCode}

#: One result of a CommitStream message: the decision, or ``(txn_id, grpc code, message)``.
CommitAnswer = Committed | Aborted | tuple[int, int, str]


def outcome_from_wire(result: pb.CommitResult) -> Committed | Aborted:
    """A ``CommitResult`` as the in-process answer; a refused request raises its error."""
    outcome = result.WhichOneof("outcome")
    if outcome == "commit_ts":
        return Committed(result.txn_id, timestamp_from_wire(result.commit_ts))
    if outcome == "aborted":
        aborted = result.aborted
        if not aborted.HasField("conflict"):
            return Aborted(result.txn_id, aborted.reason)
        conflict = aborted.conflict
        return Aborted.from_conflict(
            result.txn_id,
            conflict.kind,
            conflict.key if conflict.HasField("key") else None,
            timestamp_from_wire(conflict.commit_ts) if conflict.HasField("commit_ts") else None,
            conflict.winner_txn_id or None,
        )
    code = _CODES.get(result.error.code, grpc.StatusCode.UNKNOWN)
    raise _result_error(code, result.error.message)


def _result_error(code: grpc.StatusCode, message: str) -> OracleError:
    """The error of a refused transaction in a ``CommitResult``: the oracle sent it itself."""
    if code is grpc.StatusCode.UNAVAILABLE:
        return OracleNotServingError(code, message, REFUSAL_NOT_SERVING)
    return OracleError(code, message)


def commit_stream(channel: grpc.aio.Channel) -> PipelinedStream[list[CommitAnswer]]:
    """``CommitStream``: each request message carries a group of transactions. Messages are
    encoded and decoded in Rust (``encode_commit_request`` / ``decode_commit_results``), so the
    channel carries the bytes as they are."""
    return PipelinedStream(
        channel.stream_stream(_TRANSACTIONS + "CommitStream"), decode_commit_results
    )


class CommitBatcher:
    """Merges concurrent :meth:`submit` calls into ``CommitStream`` messages.

    Callers that arrive while ``max_in_flight`` messages are in flight queue; as soon as one
    returns, all queued callers (up to ``max_batch``) go out in the next message, which the
    server's group commit then decides together. Each caller gets the result of its own
    transaction; a failed message fails every caller in it. Resending is safe: a decided id gets
    its first decision back.
    """

    def __init__(
        self,
        send: Callable[[list[Transaction]], Awaitable[list[CommitAnswer]]],
        max_batch: int = 512,
        max_in_flight: int = 2,
    ) -> None:
        if max_batch < 1 or max_in_flight < 1:
            raise ValueError(
                f"max_batch and max_in_flight must be at least 1, got {max_batch}, {max_in_flight}"
            )
        self._send = send
        self._max_batch = max_batch
        self._max_in_flight = max_in_flight
        self._waiting: collections.deque[tuple[Transaction, asyncio.Future[CommitAnswer]]] = (
            collections.deque()
        )
        self._in_flight: set[asyncio.Task[None]] = set()
        self.batches = 0  # messages sent, for tests and statistics
        self._closed = False

    def submit(self, transaction: Transaction) -> asyncio.Future[CommitAnswer]:
        future: asyncio.Future[CommitAnswer] = asyncio.get_running_loop().create_future()
        self._waiting.append((transaction, future))
        self._dispatch()
        return future

    def _dispatch(self) -> None:
        loop = asyncio.get_running_loop()
        while self._waiting and len(self._in_flight) < self._max_in_flight:
            size = min(len(self._waiting), self._max_batch)
            batch = [self._waiting.popleft() for _ in range(size)]
            self.batches += 1
            task = loop.create_task(self._run(batch))
            self._in_flight.add(task)

    async def _run(self, batch: list[tuple[Transaction, asyncio.Future[CommitAnswer]]]) -> None:
        try:
            results = await self._send([transaction for transaction, _ in batch])
        except BaseException as err:  # every caller of the message must hear about it
            for _, future in batch:
                if not future.done():
                    future.set_exception(err)
            if isinstance(err, asyncio.CancelledError):
                raise
        else:
            if len(results) != len(batch):
                error = OracleError(
                    grpc.StatusCode.INTERNAL,
                    f"the server answered {len(results)} results for {len(batch)} transactions",
                )
                for _, future in batch:
                    if not future.done():
                        future.set_exception(error)
                return
            for (_, future), result in zip(batch, results, strict=True):
                if not future.done():
                    future.set_result(result)
        finally:
            self._in_flight.discard(asyncio.current_task())
            if not self._closed:
                self._dispatch()

    async def close(self) -> None:
        self._closed = True
        for task in list(self._in_flight):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        error = OracleUnavailableError(grpc.StatusCode.CANCELLED, "client closed")
        while self._waiting:
            _, future = self._waiting.popleft()
            if not future.done():
                future.set_exception(error)


def channel_credentials(
    root_certificates: Path | bytes | None,
    private_key: Path | bytes | None = None,
    certificate_chain: Path | bytes | None = None,
) -> grpc.ChannelCredentials:
    """TLS credentials from PEM files or bytes (key and chain for mutual TLS).

    ``root_certificates`` None trusts the system's CAs. ``private_key`` and ``certificate_chain``
    go together (gRPC's C core would abort the process on one without the other): ``ValueError``
    when only one is given, ``OSError`` naming the file when one cannot be read,
    :class:`~hlc_oracle.tls.PemError` (a ``ValueError``) naming it when it is not PEM.
    """
    if (private_key is None) != (certificate_chain is None):
        missing = "certificate_chain" if certificate_chain is None else "private_key"
        raise ValueError(
            f"mutual TLS needs private_key and certificate_chain: {missing} is missing"
        )
    return grpc.ssl_channel_credentials(
        read_pem(root_certificates, "certificate", "CA bundle")
        if root_certificates is not None
        else None,
        read_pem(private_key, "private key", "client key") if private_key is not None else None,
        read_pem(certificate_chain, "certificate", "client certificate")
        if certificate_chain is not None
        else None,
    )


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
        if credentials is None:
            self._channel = grpc.aio.insecure_channel(target, options=options)
        else:
            self._channel = grpc.aio.secure_channel(target, credentials, options=options)
        self._get_timestamps = self._channel.unary_unary(
            _SERVICE + "GetTimestamps",
            request_serializer=pb.GetTimestampsRequest.SerializeToString,
            response_deserializer=pb.GetTimestampsResponse.FromString,
        )
        self._observe = self._channel.unary_unary(
            _SERVICE + "Observe",
            request_serializer=pb.ObserveRequest.SerializeToString,
            response_deserializer=pb.ObserveResponse.FromString,
        )
        self._status = self._channel.unary_unary(
            _SERVICE + "GetStatus",
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
            _TRANSACTIONS + "Commit",
            request_serializer=pb.CommitRequest.SerializeToString,
            response_deserializer=pb.CommitResult.FromString,
        )
        self._abort = self._channel.unary_unary(
            _TRANSACTIONS + "Abort",
            request_serializer=pb.AbortRequest.SerializeToString,
            response_deserializer=pb.CommitResult.FromString,
        )
        self._transaction_status = self._channel.unary_unary(
            _TRANSACTIONS + "GetTransactionStatus",
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
            return await with_retries(policy, call)

    async def _fetch_for_batch(self, count: int) -> TimestampRange:
        return await with_retries(
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
        return await with_retries(
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
            raise _result_error(_CODES.get(code_number, grpc.StatusCode.UNKNOWN), message)
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


class OracleClient:
    """Blocking client; safe to share between threads. ``with OracleClient(target) as client:``.

    It drives an :class:`AsyncOracleClient` on its own event-loop thread, so concurrent
    ``get_timestamp()`` calls from many threads are merged in the same way. Arguments are those of
    :class:`AsyncOracleClient`.
    """

    def __init__(self, target: str = DEFAULT_TARGET, **kwargs: Any) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="hlc-oracle-client", daemon=True
        )
        self._thread.start()
        self._closed = False

        async def build() -> AsyncOracleClient:
            return AsyncOracleClient(target, **kwargs)

        try:
            self._client = self._run(build())
        except BaseException:
            self._stop_loop()
            raise

    def _run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        if self._closed:
            coroutine.close()
            raise OracleError(grpc.StatusCode.CANCELLED, "client closed")
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result()

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

    @property
    def batches(self) -> int:
        return self._client.batches

    def commit(self, txn: Transaction) -> Committed | Aborted:
        return self._run(self._client.commit(txn))

    def commit_unary(self, txn: Transaction) -> Committed | Aborted:
        return self._run(self._client.commit_unary(txn))

    def abort(self, txn_id: int) -> Committed | Aborted:
        return self._run(self._client.abort(txn_id))

    def transaction_status(self, txn_id: int) -> Committed | Aborted | None:
        return self._run(self._client.transaction_status(txn_id))

    def _stop_loop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)
        self._loop.close()

    def close(self) -> None:
        if self._closed:
            return
        self._run(self._client.close())
        self._closed = True
        self._stop_loop()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()
