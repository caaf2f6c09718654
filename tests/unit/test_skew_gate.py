"""The skew guard's glue to the serving gate and the metrics registry (server/skew_guard.py),
driven by the scriptable NTP responder on loopback and a manual wall clock."""

from __future__ import annotations

import time

from hlc_oracle import ManualClock
from hlc_oracle.node.gate import ServingGate
from hlc_oracle.server.skew_guard import build_skew_monitor, clock_status_fields
from hlc_oracle.skew import NtpServer, SkewConfig
from prometheus_client import CollectorRegistry, generate_latest

from tests.support.ntp.responder import Behaviour, NtpResponder


def test_guard_blocks_and_unblocks_the_gate(responder: NtpResponder) -> None:
    gate = ServingGate()
    changes: list[tuple[bool, str | None]] = []
    gate.add_listener(lambda serving, message: changes.append((serving, message)))
    config = SkewConfig(servers=(NtpServer.parse(responder.address),), recovery_hold_s=0)
    registry = CollectorRegistry()
    # A 5 s max offset: the message is refreshed when the offset moves by 1% of it (50 ms), far
    # more than the loopback measurement's noise (a few ms under load).
    monitor = build_skew_monitor(config, 5_000_000, gate, registry)
    assert gate.serving  # unknown before the first poll, and unknown_policy is warn

    responder.set(offset_s=20.0)
    monitor.poll_once()
    refusal = gate.refusal()
    assert refusal is not None and refusal.startswith("clock-skew: clock offset +")
    monitor.poll_once()  # the same verdict does not re-announce
    assert sum(1 for serving, _ in changes if not serving) == 1

    fields = clock_status_fields(monitor.status())
    assert fields["skew_state"] == "unsafe" and fields["ntp_offset_known"]
    assert fields["ntp_servers"][0].server == responder.address
    assert b'hlc_oracle_clock_skew_state{state="unsafe"} 1.0' in generate_latest(registry)

    responder.set(offset_s=0.0)
    monitor.poll_once()
    assert gate.serving and changes[-1] == (True, None)


def test_the_message_is_refreshed_when_the_offset_moves_by_a_step(
    responder: NtpResponder,
) -> None:
    gate = ServingGate()
    changes: list[tuple[bool, str | None]] = []
    gate.add_listener(lambda serving, message: changes.append((serving, message)))
    config = SkewConfig(servers=(NtpServer.parse(responder.address),), recovery_hold_s=0)
    monitor = build_skew_monitor(config, 5_000_000, gate, CollectorRegistry())  # step 50 ms

    def announced() -> int:
        return sum(1 for serving, _ in changes if not serving)

    responder.set(offset_s=19.990)
    monitor.poll_once()
    assert announced() == 1
    # 20 ms on, across a multiple of the step but less than a step from what was announced
    responder.set(offset_s=20.010)
    monitor.poll_once()
    assert announced() == 1
    responder.set(offset_s=20.100)  # 110 ms from what was announced: more than a step
    monitor.poll_once()
    assert announced() == 2
    blocked = [message for serving, message in changes if not serving]
    assert blocked[1] != blocked[0] and blocked[1] == gate.refusal()


def test_unknown_refuse_blocks_before_the_first_poll(responder: NtpResponder) -> None:
    responder.set(behaviour=Behaviour.SILENT)
    gate = ServingGate()
    config = SkewConfig(
        servers=(NtpServer.parse(responder.address),), unknown_policy="refuse", timeout_s=0.1
    )  # type: ignore[arg-type]
    monitor = build_skew_monitor(config, 500_000, gate, CollectorRegistry())
    assert gate.refusal() == "clock-skew: clock offset unknown: no NTP measurement yet"
    monitor.poll_once()
    refusal = gate.refusal()
    assert refusal is not None and "timeout" in refusal


def test_fatal_forward_jump_blocks_then_calls_back(responder: NtpResponder) -> None:
    gate = ServingGate()
    wall = ManualClock(time.time_ns() // 1000)
    fatal: list[str] = []
    config = SkewConfig(servers=(NtpServer.parse(responder.address),), fatal_forward_jump=True)
    monitor = build_skew_monitor(
        config, 500_000, gate, CollectorRegistry(), on_fatal_jump=fatal.append, wall_clock=wall
    )
    wall.advance(2_000_000)
    monitor.poll_once()
    assert len(fatal) == 1
    refusal = gate.refusal()
    assert refusal is not None and refusal.startswith("clock-jump: wall clock jumped forward")
    assert clock_status_fields(monitor.status())["wall_forward_jumps"] == 1
