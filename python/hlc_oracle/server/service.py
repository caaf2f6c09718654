"""The ``hlc_oracle.v1.TimestampOracle`` handlers: parse, check the gate, call the core, answer.

Handlers take and return raw bytes (the method handlers have no deserializers) so that a request
that does not parse gets ``INVALID_ARGUMENT`` with the parser's message instead of grpcio's generic
``INTERNAL``, and so that what the parser would silently truncate or drop (an integer too wide for
its field, a field with the wrong wire type; see :mod:`hlc_oracle.server.wire`) is refused too.
All allocation logic is in the Rust ``Clock``; nothing here can move it backwards.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, NoReturn

import grpc
from google.protobuf.message import DecodeError

from hlc_oracle import CeilingReachedError, Clock, ClockSkewError, HlcError, Timestamp
from hlc_oracle.node.gate import ServingGate
from hlc_oracle.node.metrics import ServerMetrics
from hlc_oracle.node.window import TimestampWindow, WindowSaveError
from hlc_oracle.proto import (
    LEADER_METADATA_KEY,
    NOT_SERVING_PREFIX,
    REFUSAL_METADATA_KEY,
    REFUSAL_NOT_LEADER,
    REFUSAL_NOT_SERVING,
    REFUSAL_OVER_LIMIT,
)
from hlc_oracle.proto import oracle_pb2 as pb
from hlc_oracle.server.open_streams import OpenStreams, StreamEndedError
from hlc_oracle.server.wire import WireCheckError, check_wire

SERVICE_NAME: str = pb.DESCRIPTOR.services_by_name["TimestampOracle"].full_name

# A request that reaches the ceiling waits for a window save and retries; a few rounds in which
# the ceiling did not rise mean saving cannot keep up: the caller is better served by UNAVAILABLE.
CEILING_RETRIES = 3


class RequestError(Exception):
    """A request answered with a non-OK status."""

    def __init__(
        self,
        code: grpc.StatusCode,
        message: str,
        refusal: str | None = None,
        leader: str | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.refusal = refusal or (
            REFUSAL_NOT_SERVING if code == grpc.StatusCode.UNAVAILABLE else None
        )
        self.leader = leader

    def trailing_metadata(self) -> tuple[tuple[str, str], ...]:
        metadata: tuple[tuple[str, str], ...] = (
            () if self.refusal is None else ((REFUSAL_METADATA_KEY, self.refusal),)
        )
        if self.leader is not None:
            metadata += ((LEADER_METADATA_KEY, self.leader),)
        return metadata


def gate_refusal(gate: ServingGate, reads: bool = False) -> RequestError | None:
    """The ``UNAVAILABLE`` every gated handler answers while ``gate`` blocks (``reads``: the
    read gate of ``GetTransactionStatus``); a clustered node that does not lead marks it
    not-leader and names the leader it knows (or "")."""
    refusal = gate.read_refusal() if reads else gate.refusal()
    if refusal is None:
        return None
    redirect = gate.redirect
    if redirect is not None:
        return RequestError(
            grpc.StatusCode.UNAVAILABLE,
            f"{NOT_SERVING_PREFIX}{refusal}",
            refusal=REFUSAL_NOT_LEADER,
            leader=redirect,
        )
    return RequestError(grpc.StatusCode.UNAVAILABLE, f"{NOT_SERVING_PREFIX}{refusal}")


def stopping_refusal(gate: ServingGate) -> RequestError:
    """What an open stream ends with at a graceful stop (:mod:`.open_streams`): the gate's
    refusal, the gate being blocked by then."""
    return gate_refusal(gate) or RequestError(
        grpc.StatusCode.UNAVAILABLE, "not serving: the server is shutting down"
    )


def _invalid(message: str) -> RequestError:
    return RequestError(grpc.StatusCode.INVALID_ARGUMENT, message)


def check_request_wire(raw: bytes, request: Any) -> None:
    """``INVALID_ARGUMENT`` when the parser truncated or dropped a field of ``raw``. A request that
    serializes back to the same bytes with no unknown fields (what every well-behaved client
    sends) needs no closer look."""
    request.DiscardUnknownFields()
    if request.SerializeToString() == raw:
        return
    try:
        check_wire(raw, request.DESCRIPTOR)
    except WireCheckError as err:
        raise _invalid(str(err)) from err


def wire_timestamp(ts: Timestamp) -> pb.Timestamp:
    return pb.Timestamp(physical=ts.physical, logical=ts.logical, node=ts.node)


class TimestampOracleService:
    def __init__(
        self,
        clock: Clock,
        window: TimestampWindow,
        gate: ServingGate,
        metrics: ServerMetrics,
        max_count: int,
        status: Callable[[], pb.GetStatusResponse],
    ) -> None:
        self.clock = clock
        self.window = window
        self.gate = gate
        self.metrics = metrics
        self.max_count = max_count
        self._status = status
        #: Open ``StreamTimestamps`` calls, ended by a graceful stop.
        self.streams = OpenStreams()

    # --- the core calls (synchronous; CeilingReachedError propagates for the async retry) ---

    def _parse_count(self, raw: bytes) -> int:
        try:
            request = pb.GetTimestampsRequest.FromString(raw)
        except DecodeError as err:
            raise _invalid(f"malformed GetTimestampsRequest: {err}") from err
        check_request_wire(raw, request)
        count = request.count
        if count < 1:
            raise _invalid(f"count must be at least 1, got {count}")
        if count > self.max_count:
            raise RequestError(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"count {count} is above the server's limit max_count={self.max_count}",
                refusal=REFUSAL_OVER_LIMIT,
            )
        return count

    def _check_gate(self) -> None:
        refused = gate_refusal(self.gate)
        if refused is not None:
            raise refused

    def _grant(self, count: int) -> bytes:
        self._check_gate()
        try:
            first = self.clock.reserve(count).first
        except CeilingReachedError:
            raise
        except HlcError as err:
            raise RequestError(grpc.StatusCode.INTERNAL, str(err)) from err
        self.metrics.timestamps.inc(count)
        return pb.GetTimestampsResponse(
            first=wire_timestamp(first), count=count
        ).SerializeToString()

    def _parse_remote(self, raw: bytes) -> Timestamp:
        try:
            request = pb.ObserveRequest.FromString(raw)
        except DecodeError as err:
            raise _invalid(f"malformed ObserveRequest: {err}") from err
        check_request_wire(raw, request)
        if not request.HasField("remote"):
            raise _invalid("ObserveRequest.remote is required")
        remote = request.remote
        try:
            return Timestamp(remote.physical, remote.logical, remote.node)
        except ValueError as err:
            raise _invalid(f"malformed remote timestamp: {err}") from err

    def _observe(self, remote: Timestamp) -> bytes:
        self._check_gate()
        try:
            ts = self.clock.update(remote)
        except ClockSkewError as err:
            raise RequestError(grpc.StatusCode.OUT_OF_RANGE, str(err)) from err
        except CeilingReachedError:
            raise
        except HlcError as err:
            raise RequestError(grpc.StatusCode.INTERNAL, str(err)) from err
        return pb.ObserveResponse(timestamp=wire_timestamp(ts)).SerializeToString()

    async def _after_extending(self, attempt: Callable[[], bytes], at_least_us: int = 0) -> bytes:
        # A round counts against CEILING_RETRIES only when the ceiling did not rise: while the
        # window keeps being saved, the request waits however long a paused or loaded process
        # takes (a save leaves about half the 200 ms window as margin). Group commit's writer
        # follows the same rule (GroupCommitScheduler._retry_after_ceiling).
        self.metrics.ceiling_waits.labels("timestamps").inc()
        stalled = 0
        while stalled < CEILING_RETRIES:
            ceiling_before = self.clock.ceiling_physical
            try:
                await self.window.extend(at_least_us)
            except WindowSaveError as err:
                raise RequestError(
                    grpc.StatusCode.UNAVAILABLE, f"cannot extend the timestamp window: {err}"
                ) from err
            try:
                return attempt()
            except CeilingReachedError:
                if self.clock.ceiling_physical == ceiling_before:
                    stalled += 1
        raise RequestError(
            grpc.StatusCode.UNAVAILABLE,
            "the persisted timestamp window could not be extended fast enough; retry",
        )

    # --- handlers ---

    async def _fail(self, method: str, err: RequestError, started: float, context: Any) -> NoReturn:
        self.metrics.observe(method, err.code.name, started)
        await context.abort(err.code, err.message, err.trailing_metadata())
        raise AssertionError("context.abort returned")  # pragma: no cover

    async def get_timestamps(self, raw: bytes, context: Any) -> bytes:
        started = time.perf_counter()
        try:
            count = self._parse_count(raw)
            try:
                response = self._grant(count)
            except CeilingReachedError:
                response = await self._after_extending(lambda: self._grant(count))
        except RequestError as err:
            await self._fail("GetTimestamps", err, started, context)
        self.metrics.observe("GetTimestamps", "OK", started)
        return response

    async def stream_timestamps(
        self, requests: AsyncIterator[bytes], context: Any
    ) -> AsyncIterator[bytes]:
        iterator = aiter(requests)
        while True:
            try:
                raw = await self.streams.next_request(iterator)
            except StreamEndedError:
                await self._fail(
                    "StreamTimestamps", stopping_refusal(self.gate), time.perf_counter(), context
                )
            if raw is None:
                return
            started = time.perf_counter()
            try:
                count = self._parse_count(raw)
                try:
                    response = self._grant(count)
                except CeilingReachedError:
                    response = await self._after_extending(lambda: self._grant(count))  # noqa: B023
            except RequestError as err:
                await self._fail("StreamTimestamps", err, started, context)
            self.metrics.observe("StreamTimestamps", "OK", started)
            yield response

    async def observe(self, raw: bytes, context: Any) -> bytes:
        started = time.perf_counter()
        try:
            remote = self._parse_remote(raw)
            try:
                response = self._observe(remote)
            except CeilingReachedError:
                response = await self._after_extending(
                    lambda: self._observe(remote), at_least_us=remote.physical
                )
        except RequestError as err:
            await self._fail("Observe", err, started, context)
        self.metrics.observe("Observe", "OK", started)
        return response

    async def get_status(self, raw: bytes, context: Any) -> bytes:
        started = time.perf_counter()
        try:
            pb.GetStatusRequest.FromString(raw)
        except DecodeError as err:
            await self._fail(
                "GetStatus", _invalid(f"malformed GetStatusRequest: {err}"), started, context
            )
        response = self._status().SerializeToString()
        self.metrics.observe("GetStatus", "OK", started)
        return response

    async def get_peer_clock(self, raw: bytes, context: Any) -> bytes:
        """The physical clock, for a peer's offset measurement: no gate (followers answer too)."""
        started = time.perf_counter()
        try:
            pb.GetPeerClockRequest.FromString(raw)
        except DecodeError as err:
            await self._fail(
                "GetPeerClock", _invalid(f"malformed GetPeerClockRequest: {err}"), started, context
            )
        response = pb.GetPeerClockResponse(
            node_id=self.clock.node, physical_now_us=self.clock.physical_now()
        ).SerializeToString()
        self.metrics.observe("GetPeerClock", "OK", started)
        return response

    def handler(self) -> grpc.GenericRpcHandler:
        unary: Callable[[Callable[[bytes, Any], Awaitable[bytes]]], Any] = (
            grpc.unary_unary_rpc_method_handler
        )
        return grpc.method_handlers_generic_handler(
            SERVICE_NAME,
            {
                "GetTimestamps": unary(self.get_timestamps),
                "StreamTimestamps": grpc.stream_stream_rpc_method_handler(self.stream_timestamps),
                "Observe": unary(self.observe),
                "GetStatus": unary(self.get_status),
                "GetPeerClock": unary(self.get_peer_clock),
            },
        )
