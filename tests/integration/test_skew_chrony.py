"""SkewMonitor against a real chronyd on loopback (beside the NTP responder), and the
``hlc-oracle skew`` command; the monitor's other behaviour, against the responder
alone, is in ``tests/unit/test_skew.py``."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator

import pytest
from hlc_oracle.skew import GuardState, SkewConfig, SkewMonitor, SkewStatus

from tests.support.commands import run_cli
from tests.support.ntp.chrony import ChronyServer
from tests.support.ntp.responder import Behaviour, NtpResponder
from tests.support.ntp.servers import ntp, offset_named
from tests.support.waiting import wait_for

POLL_S = 0.2


@pytest.fixture(scope="module")
def chrony() -> Iterator[ChronyServer]:
    with ChronyServer() as server:
        yield server


def test_chrony_offset_within_one_millisecond(chrony: ChronyServer) -> None:
    # A burst keeps the answer with the shortest round trip: the least asymmetry on a busy machine.
    config = SkewConfig(servers=ntp(chrony.address), burst=4)
    status = SkewMonitor(config, max_offset_us=500_000).poll_once()
    assert status.state is GuardState.OK and status.serving
    assert status.estimate is not None
    assert abs(status.estimate.offset_us) <= 1_000
    assert 0 < status.estimate.bound_us < 1_000_000
    (server,) = status.servers
    assert server.last_good is not None and server.last_good.stratum == 8
    assert server.last_good.delay_us is not None and server.last_good.delay_us >= 0


def test_monitor_refuses_past_limit_and_recovers(
    chrony: ChronyServer, responder: NtpResponder
) -> None:
    responder.set(offset_s=2.0)
    config = SkewConfig(servers=ntp(responder.address), poll_interval_s=POLL_S, recovery_hold_s=0.5)
    seen: list[SkewStatus] = []
    with SkewMonitor(config, max_offset_us=500_000) as monitor:
        monitor.add_listener(seen.append)
        took = wait_for(lambda: monitor.status().state is GuardState.UNSAFE, 5, pause_s=0.01)
        assert took <= 2 * POLL_S + config.timeout_s
        status = monitor.status()
        assert not status.serving and "past the serving limit" in status.message
        assert abs(offset_named(status.message) - 2_000_000) < 50_000
        responder.set(offset_s=0.0)
        wait_for(lambda: monitor.status().recovering, 5, pause_s=0.01)
        held = wait_for(lambda: monitor.status().state is GuardState.OK, 5, pause_s=0.01)
        assert held >= 0.5 - 2 * POLL_S
        assert monitor.status().serving
    assert not monitor.running
    states = [s.state for s in seen]
    assert states.index(GuardState.UNSAFE) < len(states) - 1 - states[::-1].index(GuardState.OK)
    assert all(h.offset_us is not None for h in monitor.status().history)


def test_falseticker_among_chrony(chrony: ChronyServer, responder: NtpResponder) -> None:
    responder.set(offset_s=2.0)
    same_chrony = chrony.address.replace("127.0.0.1", "localhost")
    config = SkewConfig(servers=ntp(chrony.address, responder.address, same_chrony))
    status = SkewMonitor(config).poll_once()
    assert status.state is GuardState.OK
    assert status.estimate is not None and status.estimate.falsetickers == (responder.address,)


# ---------------------------------------------------------------------------------- command


def run_command(*args: str) -> subprocess.CompletedProcess[str]:
    return run_cli("skew", *args, timeout_s=30)


def test_command_ok_against_chrony(chrony: ChronyServer) -> None:
    result = run_command("--server", chrony.address, "--burst", "3")
    assert result.returncode == 0, result.stderr
    assert "ok: clock offset" in result.stdout and chrony.address in result.stdout


def test_command_exit_codes(responder: NtpResponder) -> None:
    responder.set(offset_s=2.0)
    past = run_command("--server", responder.address, "--json")
    assert past.returncode == 1
    assert json.loads(past.stdout)["state"] == "unsafe"
    responder.set(behaviour=Behaviour.SILENT)
    assert run_command("--server", responder.address, "--timeout", "0.1").returncode == 3
    bad_arguments = run_command("--server", "host:0")
    assert bad_arguments.returncode == 2 and "port" in bad_arguments.stderr
