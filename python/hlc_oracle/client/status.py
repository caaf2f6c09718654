"""An oracle's ``GetStatus`` answer as one flat, typed value (:class:`OracleStatus`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from hlc_oracle import Timestamp
from hlc_oracle.client.wire import timestamp_from_wire
from hlc_oracle.proto import oracle_pb2 as pb


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
    # The peers check (clustered): "ok", "far", "no-majority" or "off", why (naming the
    # offsets), the threshold, and each peer's offset (peer - local) and bound as dicts.
    peers_state: str
    peers_message: str
    peers_threshold_us: int
    peers: list[dict[str, Any]]
    # Clustered mode: the leader this node knows (address "" and epoch 0 when none), the time
    # left of this node's lease, and a leader's decision retention in force (shortened by the
    # capacity guard when etcd's database nears its quota; 0 otherwise); zero values when
    # standalone.
    leader_address: str
    leader_node_id: int
    epoch: int
    lease_remaining_s: float
    decision_retention_s: float
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
            peers_state=clock.peers_state,
            peers_message=clock.peers_message,
            peers_threshold_us=clock.peers_threshold_us,
            peers=[_peer(peer) for peer in clock.peers],
            leader_address=message.leader_address,
            leader_node_id=message.leader_node_id,
            epoch=message.epoch,
            lease_remaining_s=message.lease_remaining_s,
            decision_retention_s=message.decision_retention_s,
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


def _peer(peer: pb.PeerClockStatus) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "node_id": peer.node_id,
        "address": peer.address,
        "good_samples": peer.good_samples,
        "failed_samples": peer.failed_samples,
        "last_error": peer.last_error,
    }
    if peer.measured:
        entry.update(offset_us=peer.offset_us, bound_us=peer.bound_us, far=peer.far)
    return entry
