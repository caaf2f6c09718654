"""Pipelined bidirectional streams (:class:`PipelinedStream`): many request messages in flight on
one call, answers matched to requests in order; a few of them to one node (:class:`StreamPool`),
so that a message the node holds does not hold the answers behind it; the streams the client
uses.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Callable
from typing import Any, Generic, TypeVar, cast

import grpc

from hlc_oracle import TimestampRange
from hlc_oracle._core import CommitResults
from hlc_oracle.client.errors import (
    OracleError,
    OracleTimeoutError,
    connection_lost,
    error_from_rpc,
    no_answer_within,
)
from hlc_oracle.client.wire import (
    TIMESTAMP_ORACLE_METHODS,
    TRANSACTIONS_METHODS,
    CommitAnswers,
    range_from_wire,
)
from hlc_oracle.proto import oracle_pb2 as pb

Answer = TypeVar("Answer")


class PipelinedStream(Generic[Answer]):
    """One bidirectional call carrying pipelined request messages. The server answers in request
    order, so answers match requests FIFO. The call is opened on first use and reopened after it
    fails; a failure fails every request still waiting on that call.
    """

    def __init__(
        self,
        channel: grpc.aio.Channel,
        method_of: Callable[[grpc.aio.Channel], Any],
        decode: Callable[[Any], Answer],
        wait_for_ready: bool = True,
    ) -> None:
        self._method_of = method_of
        self._method = method_of(channel)
        self._wait_for_ready = wait_for_ready
        self._decode = decode
        self._call: Any = None
        # The call whose first write went through (its later writes cannot wait for it to start).
        self._started: Any = None
        self._reader: asyncio.Task[None] | None = None
        self._pending: collections.deque[asyncio.Future[Answer]] = collections.deque()
        self._write_lock = asyncio.Lock()
        # Reader tasks of ended calls and writes that never went through, cancelled but maybe not
        # finished: close() waits for them.
        self._stopping: set[asyncio.Task[None]] = set()
        #: Requests in progress (waiting to be written or for their answer).
        self.outstanding = 0
        #: Loop time of the last answer, or of the request that found the stream idle: a stream
        #: with requests outstanding and no progress for long is held up by the node.
        self.progressed = 0.0

    def _open(self) -> Any:
        if self._call is None:
            # wait_for_ready: while the node is down, the call waits for the channel to connect
            # (request() bounds the wait) instead of failing at once.
            self._call = self._method(wait_for_ready=self._wait_for_ready)
            self._reader = asyncio.get_running_loop().create_task(self._read(self._call))
        return self._call

    def move_to(self, channel: grpc.aio.Channel) -> None:
        """The next call opens on ``channel`` (a new connection to the same node); the current
        one, on the old connection, fails what still waits on it."""
        self._method = self._method_of(channel)
        if self._call is not None:
            self._fail(self._call, connection_lost("the connection was replaced by a new one"))

    async def request(self, message: Any, timeout: float) -> Answer:
        """Sends ``message`` and returns its answer, all within ``timeout`` seconds: opening the
        call and waiting for a connection included. A call that breaks fails its requests with
        :class:`~hlc_oracle.client.errors.ConnectionLostError`; a timeout ends the call too
        (its answers could no longer be matched to requests), and the next request opens a new
        one."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Answer] = loop.create_future()
        if not self.outstanding:
            self.progressed = loop.time()
        self.outstanding += 1
        call = self._open()
        written = False
        try:
            async with asyncio.timeout(timeout):
                # One write at a time on a call (grpc.aio refuses overlapping writes); the answer
                # order is the write order, so the future joins the queue under the same lock.
                async with self._write_lock:
                    call = self._open()  # the call may have failed while this request waited
                    self._pending.append(future)
                    if call is self._started:
                        await self._write(call, message)
                        written = True
                    else:
                        # The first write waits for the call to start. A call failed before it
                        # started (its channel replaced) never ends that wait: the failed answer
                        # ends it instead.
                        writing = loop.create_task(self._write(call, message))
                        try:
                            await asyncio.wait(
                                (writing, future), return_when=asyncio.FIRST_COMPLETED
                            )
                        finally:
                            # Not written (the call failed first, or this request timed out or
                            # was cancelled meanwhile): the write must not outlive the request.
                            # Waiting for a call that never starts, it is referenced by nothing
                            # but the call; close() waits for it to end.
                            if not writing.done():
                                writing.cancel()
                                self._stop_later(writing)
                        if writing.done():
                            self._started = call
                            written = True
                return await future
        except TimeoutError:
            future.cancel()  # a future nobody awaits must not hold an exception
            error = OracleTimeoutError(grpc.StatusCode.DEADLINE_EXCEEDED, no_answer_within(timeout))
            self._fail(call, error)
            raise error from None
        except BaseException:
            future.cancel()  # cancelled: nobody will await the answer
            if not written and future in self._pending:
                # Cancelled while writing: the node may or may not get the message, so the
                # answers after it could no longer be matched to their requests. End the call.
                self._fail(call, connection_lost("a request was cancelled while being written"))
            raise
        finally:
            self.outstanding -= 1

    async def _write(self, call: Any, message: Any) -> None:
        try:
            await call.write(message)
        except grpc.RpcError as err:
            self._fail(call, error_from_rpc(err))
        except asyncio.InvalidStateError:
            self._fail(call, connection_lost("the stream had ended"))

    async def _read(self, call: Any) -> None:
        try:
            while True:
                response = await call.read()
                if response is grpc.aio.EOF:
                    raise connection_lost("the server closed the stream")
                if not self._pending:
                    raise OracleError(
                        grpc.StatusCode.INTERNAL, "the server answered a request never sent"
                    )
                future = self._pending.popleft()
                self.progressed = asyncio.get_running_loop().time()
                if not future.done():
                    try:
                        future.set_result(self._decode(response))
                    except ValueError as err:
                        future.set_exception(OracleError(grpc.StatusCode.INTERNAL, str(err)))
        except grpc.RpcError as err:
            self._fail(call, error_from_rpc(err))
        except OracleError as err:
            self._fail(call, err)

    def _fail(self, call: Any, error: OracleError) -> None:
        """Ends ``call`` (if it is still the current one) and fails every request waiting on it."""
        if call is not self._call:
            return
        self._call = None
        call.cancel()
        reader, self._reader = self._reader, None
        if reader is not None and reader is not asyncio.current_task():
            reader.cancel()
            self._stop_later(reader)
        pending, self._pending = self._pending, collections.deque()
        for future in pending:
            if not future.done():
                future.set_exception(error)

    def _stop_later(self, task: asyncio.Task[None]) -> None:
        """Keeps ``task`` (cancelled, maybe not finished) until it ends; close() waits for it."""
        self._stopping.add(task)
        task.add_done_callback(self._stopping.discard)

    async def close(self) -> None:
        """Ends the call, fails what waits on it, and waits for its reader and write tasks to
        finish."""
        call = self._call
        if call is not None:
            self._fail(call, OracleError(grpc.StatusCode.CANCELLED, "client closed"))
        stopping = list(self._stopping)
        if stopping:
            await asyncio.gather(*stopping, return_exceptions=True)


class StreamPool(Generic[Answer]):
    """Up to ``size`` :class:`PipelinedStream` calls to one node, opened as they are needed, for
    requests a node may hold for a while. A node answers each stream in request order, so a
    request it holds (a new leader holding a resubmitted transaction until its decision history
    has loaded) holds every answer behind it on that stream. A request therefore goes on a
    stream with nothing outstanding; when every stream is busy, a new one opens, up to ``size``;
    past that, it goes on the stream that answered last (the one least likely held up)."""

    def __init__(
        self,
        channel: grpc.aio.Channel,
        make: Callable[[grpc.aio.Channel], PipelinedStream[Answer]],
        size: int,
    ) -> None:
        if size < 1:
            raise ValueError(f"a stream pool needs at least one stream, got {size}")
        self._channel = channel
        self._make = make
        self._size = size
        self.streams: list[PipelinedStream[Answer]] = []

    def pick(self) -> PipelinedStream[Answer]:
        """The stream the next request goes on (see the class)."""
        for stream in self.streams:
            if not stream.outstanding:
                return stream
        if len(self.streams) < self._size:
            stream = self._make(self._channel)
            self.streams.append(stream)
            return stream
        return max(self.streams, key=lambda stream: stream.progressed)

    async def request(self, message: Any, timeout: float) -> Answer:
        """:meth:`PipelinedStream.request` on the stream :meth:`pick` chooses."""
        return await self.pick().request(message, timeout)

    def move_to(self, channel: grpc.aio.Channel) -> None:
        """Every stream's next call opens on ``channel`` (see :meth:`PipelinedStream.move_to`)."""
        self._channel = channel
        for stream in self.streams:
            stream.move_to(channel)

    async def close(self) -> None:
        for stream in self.streams:
            await stream.close()


def timestamp_stream(
    channel: grpc.aio.Channel, wait_for_ready: bool = True
) -> PipelinedStream[TimestampRange]:
    """``StreamTimestamps``: each request message asks for ``count`` timestamps."""

    def method_of(on: grpc.aio.Channel) -> Any:
        return on.stream_stream(
            TIMESTAMP_ORACLE_METHODS + "StreamTimestamps",
            request_serializer=pb.GetTimestampsRequest.SerializeToString,
            response_deserializer=pb.GetTimestampsResponse.FromString,
        )

    return PipelinedStream(channel, method_of, range_from_wire, wait_for_ready)


def commit_stream(
    channel: grpc.aio.Channel, wait_for_ready: bool = True
) -> PipelinedStream[CommitAnswers]:
    """``CommitStream``: each request message carries a group of transactions. Messages are
    encoded in Rust (``encode_commit_request``) and answered as :class:`CommitResults`, which
    decodes each answer when it is asked for, so the channel carries the bytes as they are."""
    # The results hold decisions and refusals only; the client adds its own errors.
    decode = cast(Callable[[bytes], CommitAnswers], CommitResults)

    def method_of(on: grpc.aio.Channel) -> Any:
        return on.stream_stream(TRANSACTIONS_METHODS + "CommitStream")

    return PipelinedStream(channel, method_of, decode, wait_for_ready)


#: ``CommitStream`` calls a client opens to one node at most: the merged ``commit()`` messages
#: in flight (first attempts and retries, four of each by default) each on a stream of its own.
COMMIT_STREAMS = 8


def commit_streams(
    channel: grpc.aio.Channel, wait_for_ready: bool = True, size: int = COMMIT_STREAMS
) -> StreamPool[CommitAnswers]:
    """Up to ``size`` :func:`commit_stream` calls to one node, as a :class:`StreamPool`."""
    return StreamPool(channel, lambda on: commit_stream(on, wait_for_ready), size)
