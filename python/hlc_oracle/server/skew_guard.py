"""The skew guard inside the server: a :class:`~hlc_oracle.skew.SkewMonitor` plugged into the
serving gate (gRPC health and ``UNAVAILABLE``), the metrics registry and ``GetStatus``.

While the guard says the node must not serve (``unsafe`` under the ``refuse`` policy, or
``unknown`` under ``unknown_policy = refuse``) the gate is blocked under the key ``clock-skew``
with the guard's message, which names the measured offset and the limit; it is unblocked when
the guard lets the node serve again (after the recovery hold).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from prometheus_client import CollectorRegistry

from hlc_oracle.proto import oracle_pb2 as pb
from hlc_oracle.server.gate import ServingGate
from hlc_oracle.skew import (
    PhysicalClock,
    ServerState,
    SkewConfig,
    SkewMetricsCollector,
    SkewMonitor,
    SkewStatus,
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

    last_key: list[tuple[object, ...] | None] = [None]

    def follow(status: SkewStatus) -> None:
        if status.serving:
            last_key[0] = None
            gate.unblock(GATE_KEY)
            return
        # Every block() re-announces health and logs: refresh the message when the state or
        # the reason changes, or the offset moved by 1% of the max offset, not on every poll.
        estimate = status.estimate
        step = max(1, max_offset_us // 100)
        detail: object = status.message if estimate is None else estimate.offset_us // step
        key = (status.state, status.recovering, detail)
        if key != last_key[0]:
            last_key[0] = key
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
