"""Pipelined bidirectional streams (:class:`PipelinedStream`): many request messages in flight on
one call, answers matched to requests in order; the two streams the client uses.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Callable
from typing import Any, Generic, TypeVar

import grpc

from hlc_oracle import TimestampRange
from hlc_oracle._core import decode_commit_results
from hlc_oracle.client.errors import (
    OracleError,
    OracleTimeoutError,
    OracleUnavailableError,
    error_from_rpc,
)
from hlc_oracle.client.wire import (
    TIMESTAMP_ORACLE_METHODS,
    TRANSACTIONS_METHODS,
    CommitAnswer,
    range_from_wire,
)
from hlc_oracle.proto import oracle_pb2 as pb

Answer = TypeVar("Answer")


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
        TIMESTAMP_ORACLE_METHODS + "StreamTimestamps",
        request_serializer=pb.GetTimestampsRequest.SerializeToString,
        response_deserializer=pb.GetTimestampsResponse.FromString,
    )
    return PipelinedStream(method, range_from_wire)


def commit_stream(channel: grpc.aio.Channel) -> PipelinedStream[list[CommitAnswer]]:
    """``CommitStream``: each request message carries a group of transactions. Messages are
    encoded and decoded in Rust (``encode_commit_request`` / ``decode_commit_results``), so the
    channel carries the bytes as they are."""
    return PipelinedStream(
        channel.stream_stream(TRANSACTIONS_METHODS + "CommitStream"), decode_commit_results
    )
