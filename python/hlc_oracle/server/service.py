"""The ``hlc_oracle.v1.TimestampOracle`` handlers: parse, check the gate, call the core, answer.

Handlers take and return raw bytes (the method handlers have no deserializers) so that a request
that does not parse gets ``INVALID_ARGUMENT`` with the parser's message instead of grpcio's generic
``INTERNAL``, and so that what the parser would silently truncate or drop (an integer too wide for
its field, a field with the wrong wire type; see :mod:`hlc_oracle.server.wire`) is refused too.
All allocation logic is in the Rust ``Clock``; nothing here can move it backwards.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc

from hlc_oracle import CeilingReachedError, Clock, ClockSkewError, HlcError, Timestamp
from hlc_oracle.node.gate import ServingGate
from hlc_oracle.node.metrics import ServerMetrics
from hlc_oracle.node.window import TimestampWindow, WindowSaveError
from hlc_oracle.proto import REFUSAL_OVER_LIMIT
from hlc_oracle.proto import oracle_pb2 as pb
from hlc_oracle.server.handler_frame import (
    RequestError,
    admit,
    check_gate,
    current_call,
    fail,
    invalid,
    parse_request,
    service_handler,
    stopping_refusal,
    unary_rpc,
)
from hlc_oracle.server.open_streams import OpenStreams, StreamEndedError

SERVICE_NAME: str = pb.DESCRIPTOR.services_by_name["TimestampOracle"].full_name

# A request that reaches the ceiling waits for a window save and retries; a few rounds in which
# the ceiling did not rise mean saving cannot keep up: the caller is better served by UNAVAILABLE.
CEILING_RETRIES = 3


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
        count = parse_request(raw, pb.GetTimestampsRequest).count
        if count < 1:
            raise invalid(f"count must be at least 1, got {count}")
        if count > self.max_count:
            raise RequestError(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"count {count} is above the server's limit max_count={self.max_count}",
                refusal=REFUSAL_OVER_LIMIT,
            )
        return count

    def _grant(self, count: int) -> bytes:
        check_gate(self.gate)
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
        request = parse_request(raw, pb.ObserveRequest)
        if not request.HasField("remote"):
            raise invalid("ObserveRequest.remote is required")
        remote = request.remote
        try:
            return Timestamp(remote.physical, remote.logical, remote.node)
        except ValueError as err:
            raise invalid(f"malformed remote timestamp: {err}") from err

    def _observe(self, remote: Timestamp) -> bytes:
        check_gate(self.gate)
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

    async def _timestamps(self, raw: bytes) -> bytes:
        count = self._parse_count(raw)
        if self.gate.settling:
            await admit(self.gate)  # held through a failover's transition
        try:
            return self._grant(count)
        except CeilingReachedError:
            return await self._after_extending(lambda: self._grant(count))

    # --- handlers ---

    # The same work as one StreamTimestamps message, framed as the unary call.
    get_timestamps = unary_rpc("GetTimestamps")(_timestamps)

    async def stream_timestamps(
        self, requests: AsyncIterator[bytes], context: Any
    ) -> AsyncIterator[bytes]:
        current_call.set(context)  # the bound of a message held at the gate (admit)
        iterator = aiter(requests)
        while True:
            try:
                raw = await self.streams.next_request(iterator)
            except StreamEndedError:
                await fail(
                    self.metrics,
                    "StreamTimestamps",
                    stopping_refusal(self.gate),
                    time.perf_counter(),
                    context,
                )
            if raw is None:
                return
            started = time.perf_counter()
            try:
                response = await self._timestamps(raw)
            except RequestError as err:
                await fail(self.metrics, "StreamTimestamps", err, started, context)
            self.metrics.observe("StreamTimestamps", "OK", started)
            yield response

    @unary_rpc("Observe")
    async def observe(self, raw: bytes) -> bytes:
        remote = self._parse_remote(raw)
        if self.gate.settling:
            await admit(self.gate)
        try:
            return self._observe(remote)
        except CeilingReachedError:
            return await self._after_extending(
                lambda: self._observe(remote), at_least_us=remote.physical
            )

    @unary_rpc("GetStatus")
    async def get_status(self, raw: bytes) -> bytes:
        parse_request(raw, pb.GetStatusRequest, check_wire=False)
        return self._status().SerializeToString()

    @unary_rpc("GetPeerClock")
    async def get_peer_clock(self, raw: bytes) -> bytes:
        """The physical clock, for a peer's offset measurement: no gate (followers answer too)."""
        parse_request(raw, pb.GetPeerClockRequest, check_wire=False)
        return pb.GetPeerClockResponse(
            node_id=self.clock.node, physical_now_us=self.clock.physical_now()
        ).SerializeToString()

    def handler(self) -> grpc.GenericRpcHandler:
        return service_handler(
            SERVICE_NAME,
            {
                "GetTimestamps": self.get_timestamps,
                "Observe": self.observe,
                "GetStatus": self.get_status,
                "GetPeerClock": self.get_peer_clock,
            },
            {"StreamTimestamps": self.stream_timestamps},
        )
