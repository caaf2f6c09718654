"""The skew guard inside the server: a :class:`~hlc_oracle.skew.SkewMonitor` plugged into the
serving gate (gRPC health and ``UNAVAILABLE``), the metrics registry and ``GetStatus``.

While the guard says the node must not serve (``unsafe`` under the ``refuse`` policy, or
``unknown`` under ``unknown_policy = refuse``) the gate is blocked under the key ``clock-skew``
with the guard's message, which names the measured offset and the limit; it is unblocked when
the guard lets the node serve again (after the recovery hold).

Clustered, the peers check's gRPC side is here too (:mod:`hlc_oracle.skew.peers`; the server
builds the monitor): its transport (``GetPeerClock`` over gRPC), the channel credentials and its
``GetStatus`` fields. It does not touch the gate: its verdict keeps the node from campaigning or
leading (the election asks it).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
from prometheus_client import CollectorRegistry

from hlc_oracle.config import TlsSection
from hlc_oracle.node.gate import ServingGate
from hlc_oracle.proto import oracle_pb2 as pb
from hlc_oracle.skew import (
    PhysicalClock,
    ServerState,
    SkewConfig,
    SkewMetricsCollector,
    SkewMonitor,
    SkewStatus,
)
from hlc_oracle.skew.peers import (
    PeersState,
    PeerState,
    PeersVerdict,
)

GATE_KEY = "clock-skew"
JUMP_GATE_KEY = "clock-jump"


def build_skew_monitor(
    config: SkewConfig,
    max_offset_us: int,
    gate: ServingGate,
    registry: CollectorRegistry,
    on_fatal_jump: Callable[[str], None] | None = None,
    wall_clock: PhysicalClock | None = None,
) -> SkewMonitor:
    """A monitor whose verdicts drive ``gate`` and whose figures are in ``registry``.

    A fatal forward jump (``fatal_forward_jump``) blocks the gate at once, then calls
    ``on_fatal_jump`` (the server shuts down and exits non-zero). Jumps are
    looked for on ``wall_clock``: the physical clock the HLC reads (default the system clock).
    """

    def fatal(reason: str) -> None:
        gate.block(JUMP_GATE_KEY, reason)
        if on_fatal_jump is not None:
            on_fatal_jump(reason)

    monitor = SkewMonitor(
        config, max_offset_us=max_offset_us, wall_clock=wall_clock, on_fatal_jump=fatal
    )

    # What was announced last: (state, recovering, message without an estimate) and the offset.
    announced: list[tuple[tuple[object, ...], int | None] | None] = [None]
    step = max(1, max_offset_us // 100)

    def follow(status: SkewStatus) -> None:
        if status.serving:
            announced[0] = None
            gate.unblock(GATE_KEY)
            return
        # Every block() re-announces health and logs: refresh the message when the state or
        # the reason changes, or the offset moved by 1% of the max offset since the message
        # last announced, not on every poll. Measured against the announced offset (not fixed
        # buckets of 1%), so measurement noise smaller than the step never re-announces.
        estimate = status.estimate
        offset = None if estimate is None else estimate.offset_us
        key = (status.state, status.recovering, status.message if offset is None else None)
        last = announced[0]
        if (
            last is None
            or last[0] != key
            or (offset is not None and last[1] is not None and abs(offset - last[1]) >= step)
        ):
            announced[0] = (key, offset)
            gate.block(GATE_KEY, status.message)

    follow(monitor.status())  # ``unknown`` before the first poll may already refuse
    monitor.add_listener(follow)
    registry.register(SkewMetricsCollector(monitor))
    return monitor


def clock_status_fields(status: SkewStatus) -> dict[str, Any]:
    """The skew fields of ``pb.ClockStatus``."""
    estimate = status.estimate
    return {
        "skew_state": status.state.value,
        "skew_message": status.message,
        "ntp_offset_known": estimate is not None,
        "ntp_offset_us": estimate.offset_us if estimate else 0,
        "ntp_offset_bound_us": estimate.bound_us if estimate else 0,
        "skew_warning_level_us": status.warning_level_us,
        "skew_serving_level_us": status.serving_level_us,
        "wall_forward_jumps": status.forward_jumps,
        "wall_backward_jumps": status.backward_jumps,
        "ntp_polls": status.polls,
        "ntp_servers": [_server_to_wire(server) for server in status.servers],
    }


def _server_to_wire(server: ServerState) -> pb.NtpServerStatus:
    last, good = server.last_sample, server.last_good
    message = pb.NtpServerStatus(
        server=server.server,
        last_status=last.status.value if last else "",
        last_detail=last.detail if last else "not polled yet",
        has_good_answer=good is not None,
        good_samples=server.good_samples,
        unhealthy_samples=server.bad_samples,
    )
    if good is not None:
        message.offset_us = good.offset_us or 0
        message.delay_us = good.delay_us or 0
        message.stratum = good.stratum or 0
        message.leap = good.leap or 0
        message.last_good_unix_s = good.wall_s
    return message


# --- the peers check (clustered) ---


class GrpcPeerTransport:
    """``GetPeerClock`` over one gRPC channel per peer address, on the monitor's own loop."""

    def __init__(self, credentials: grpc.ChannelCredentials | None) -> None:
        self.credentials = credentials
        self._channels: dict[str, grpc.aio.Channel] = {}

    async def call(self, address: str, timeout_s: float) -> tuple[int, int]:
        channel = self._channels.get(address)
        if channel is None:
            channel = self._channels[address] = (
                grpc.aio.insecure_channel(address)
                if self.credentials is None
                else grpc.aio.secure_channel(address, self.credentials)
            )
        method = channel.unary_unary(
            PEER_CLOCK_METHOD,
            request_serializer=pb.GetPeerClockRequest.SerializeToString,
            response_deserializer=pb.GetPeerClockResponse.FromString,
        )
        try:
            reply = await method(pb.GetPeerClockRequest(), timeout=timeout_s)
        except grpc.aio.AioRpcError as err:
            raise PeerCallError(f"{err.code().name}: {err.details()}") from None
        return int(reply.node_id), int(reply.physical_now_us)

    async def close(self) -> None:
        channels, self._channels = self._channels, {}
        for channel in channels.values():
            await channel.close()


PEER_CLOCK_METHOD = "/hlc_oracle.v1.TimestampOracle/GetPeerClock"


class PeerCallError(Exception):
    """A peer did not answer ``GetPeerClock`` (its gRPC status and details)."""


def peer_channel_credentials(
    tls: TlsSection, ca_file: Path | None = None
) -> grpc.ChannelCredentials | None:
    """How a node reaches its peers: in the clear when it serves in the clear. Under TLS it
    trusts ``ca_file`` (``peers.ca_file``), else ``tls.client_ca_file`` (the cluster's CA, which
    mutual TLS already names), else the system's CAs; and presents its own certificate when
    mutual TLS is on (its peers ask for one)."""
    if tls.cert_file is None or tls.key_file is None:
        return None
    roots_file = ca_file or tls.client_ca_file
    roots = roots_file.read_bytes() if roots_file is not None else None
    if tls.client_ca_file is None:
        return grpc.ssl_channel_credentials(root_certificates=roots)
    return grpc.ssl_channel_credentials(
        root_certificates=roots,
        private_key=tls.key_file.read_bytes(),
        certificate_chain=tls.cert_file.read_bytes(),
    )


def peers_status_fields(verdict: PeersVerdict | None, off_reason: str) -> dict[str, Any]:
    """The peers fields of ``pb.ClockStatus``; ``verdict`` ``None``: off, for ``off_reason``."""
    if verdict is None:
        return {"peers_state": PeersState.OFF.value, "peers_message": f"off: {off_reason}"}
    return {
        "peers_state": verdict.state.value,
        "peers_message": verdict.message,
        "peers_threshold_us": verdict.threshold_us,
        "peers": [_peer_to_wire(peer) for peer in verdict.peers],
    }


def _peer_to_wire(peer: PeerState) -> pb.PeerClockStatus:
    message = pb.PeerClockStatus(
        node_id=peer.node_id,
        address=peer.address,
        measured=peer.estimate is not None,
        far=bool(peer.far),
        good_samples=peer.good_samples,
        failed_samples=peer.failed_samples,
        last_error=peer.last_error,
    )
    if peer.estimate is not None:
        message.offset_us = peer.estimate.offset_us
        message.bound_us = peer.estimate.bound_us
    return message
