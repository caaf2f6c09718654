"""SkewMonitor, the guard and the jump detector, against an NTP responder on loopback in this
process (``responder``); against a real chronyd, and the ``hlc-oracle skew`` command:
``tests/integration/test_skew_chrony.py``."""

from __future__ import annotations

import json
import logging
import threading
import time

import pytest
from hlc_oracle import ManualClock
from hlc_oracle.config import ConfigError, load
from hlc_oracle.skew import (
    GuardPolicy,
    GuardState,
    JumpDetector,
    JumpEvent,
    NtpSample,
    NtpServer,
    OffsetEstimate,
    SampleStatus,
    SkewConfig,
    SkewGuard,
    SkewMetricsCollector,
    SkewMonitor,
    SkewStatus,
    combine_samples,
    query_server,
)
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from tests.support.ntp.responder import Behaviour, NtpResponder
from tests.support.ntp.servers import ntp, offset_named
from tests.support.repository import DEPLOY

# ---------------------------------------------------------------------------------- servers


@pytest.mark.parametrize(
    ("text", "host", "port"),
    [
        ("pool.ntp.org", "pool.ntp.org", 123),
        ("127.0.0.1:1123", "127.0.0.1", 1123),
        ("[::1]:1123", "::1", 1123),
        ("[::1]", "::1", 123),
        ("::1", "::1", 123),
    ],
)
def test_server_parse(text: str, host: str, port: int) -> None:
    server = NtpServer.parse(text)
    assert (server.host, server.port) == (host, port)
    assert NtpServer.parse(str(server)) == server


@pytest.mark.parametrize("text", ["", "host:0", "host:65536", "host:abc", "[::1", "[::1]x", "a b"])
def test_server_parse_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="ntp server"):
        NtpServer.parse(text)


def test_server_parse_type() -> None:
    with pytest.raises(TypeError, match="ntp server"):
        NtpServer.parse(123)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------- config


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"poll_interval_s": 0}, ValueError, "poll_interval_s"),
        ({"poll_interval_s": float("nan")}, ValueError, "poll_interval_s"),
        ({"poll_interval_s": "1"}, TypeError, "poll_interval_s"),
        ({"timeout_s": -1}, ValueError, "timeout_s"),
        ({"serving_fraction": 1.5}, ValueError, "serving_fraction"),
        ({"warning_fraction": 0.9}, ValueError, "warning_fraction"),
        ({"policy": "kill"}, ValueError, "policy"),
        ({"unknown_policy": 1}, TypeError, "unknown_policy"),
        ({"history_size": 0}, ValueError, "history_size"),
        ({"burst": 17}, ValueError, "burst"),
        ({"jump_threshold_us": True}, TypeError, "jump_threshold_us"),
        ({"fatal_forward_jump": "yes"}, TypeError, "fatal_forward_jump"),
        ({"servers": 42}, TypeError, "servers"),
        ({"servers": ["host:99999"]}, ValueError, "port"),
    ],
)
def test_config_rejects(kwargs: dict[str, object], error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        SkewConfig(**kwargs)  # type: ignore[arg-type]


def test_config_comma_separated_servers() -> None:
    # The form an environment variable or a command-line flag gives.
    config = SkewConfig(servers="a:1, [::1]:2,b")  # type: ignore[arg-type]
    assert config.servers == (NtpServer("a", 1), NtpServer("::1", 2), NtpServer("b"))


def test_config_validates_after_field_changes() -> None:
    config = SkewConfig()
    config.poll_interval_s = -1
    with pytest.raises(ValueError, match="poll_interval_s"):
        SkewMonitor(config)


def test_config_coerces_strings() -> None:
    config = SkewConfig(servers=["a:1", "b"], policy="warn", unknown_policy="refuse")  # type: ignore[arg-type]
    assert config.servers == (NtpServer("a", 1), NtpServer("b"))
    assert config.policy is GuardPolicy.WARN
    assert config.unknown_policy is GuardPolicy.REFUSE


def test_example_config_ntp_section() -> None:
    config = load(DEPLOY / "oracle.example.toml", environ={})
    assert [str(server) for server in config.ntp.servers] == [
        f"{n}.debian.pool.ntp.org" for n in range(3)
    ]
    config.ntp.servers = ()
    assert config.ntp == SkewConfig()  # every other field shows its default


def test_ntp_section_from_environment() -> None:
    config = load(
        environ={
            "HLC_ORACLE_NTP_SERVERS": "127.0.0.1:1123,[::1]:1124",
            "HLC_ORACLE_NTP_POLICY": "warn",
            "HLC_ORACLE_NTP_POLL_INTERVAL_S": "2.5",
        }
    )
    assert config.ntp.servers == (NtpServer("127.0.0.1", 1123), NtpServer("::1", 1124))
    assert config.ntp.policy is GuardPolicy.WARN and config.ntp.poll_interval_s == 2.5
    with pytest.raises(ConfigError, match=r"ntp\.recovery_hold_s must be float"):
        load(environ={"HLC_ORACLE_NTP_RECOVERY_HOLD_S": "soon"})


# ---------------------------------------------------------------------------------- combine


def sample(server: str, offset_us: int, delay_us: int = 200) -> NtpSample:
    return NtpSample(server, SampleStatus.OK, "ok", 0.0, 0.0, offset_us, delay_us, 0, 2, 0)


def bad(server: str) -> NtpSample:
    return NtpSample(server, SampleStatus.TIMEOUT, "no answer", 0.0, 0.0)


@pytest.mark.parametrize(
    ("samples", "offset", "bound", "used", "falsetickers", "agreement"),
    [
        # one server: its offset +- delay/2
        ([sample("a", 50, 200)], 50, 100, ("a",), (), True),
        # three agreeing: the median; the bound covers every interval
        ([sample("a", 10), sample("b", 30), sample("c", 20)], 20, 110, ("a", "b", "c"), (), True),
        # one falseticker 2 s ahead is dropped
        (
            [sample("a", 10), sample("b", 2_000_000), sample("c", 30)],
            20,
            110,
            ("a", "c"),
            ("b",),
            True,
        ),
        # two disagreeing servers: no majority, both used, a wide bound
        ([sample("a", 0), sample("b", 1_000)], 500, 600, ("a", "b"), (), False),
        # unhealthy samples do not count
        ([bad("x"), sample("a", -7, 20)], -7, 10, ("a",), (), True),
    ],
)
def test_combine(
    samples: list[NtpSample],
    offset: int,
    bound: int,
    used: tuple[str, ...],
    falsetickers: tuple[str, ...],
    agreement: bool,
) -> None:
    estimate = combine_samples(samples)
    assert estimate is not None
    assert (estimate.offset_us, estimate.bound_us) == (offset, bound)
    assert (estimate.servers, estimate.falsetickers, estimate.agreement) == (
        used,
        falsetickers,
        agreement,
    )


def test_combine_nothing_usable() -> None:
    assert combine_samples([]) is None
    assert combine_samples([bad("a"), bad("b")]) is None


# ---------------------------------------------------------------------------------- guard


def estimate(offset_us: int) -> OffsetEstimate:
    return OffsetEstimate(offset_us, 100, ("a",), (), True, 0.0)


U, W, R = GuardState.UNSAFE, GuardState.WARNING, GuardPolicy.REFUSE

# (monotonic time s, offset us or None, expected state, expected serving) with max offset
# 500 ms: warning at 250 ms, serving level at 400 ms, recovery hold 10 s.
GUARD_SCENARIOS: dict[str, list[tuple[float, int | None, GuardState, bool]]] = {
    "in sync": [(0, 20, GuardState.OK, True), (1, -30, GuardState.OK, True)],
    "warning both signs": [
        (0, 260_000, W, True),
        (1, -300_000, W, True),
        (2, 0, GuardState.OK, True),
    ],
    "unsafe then held, then recovered": [
        (0, 2_000_000, U, False),
        (1, 1_000, U, False),  # under the level: the hold starts
        (10.5, 1_000, U, False),
        (11, 300_000, GuardState.WARNING, True),  # held 10 s: serving again, still a warning
    ],
    "relapse restarts the hold": [
        (0, -450_000, U, False),
        (1, 0, U, False),
        (5, 420_000, U, False),
        (6, 0, U, False),
        (15, 0, U, False),
        (16, 0, GuardState.OK, True),
    ],
    "silence keeps unsafe and breaks the hold": [
        (0, None, GuardState.UNKNOWN, True),
        (1, 500_000, U, False),
        (2, 0, U, False),
        (3, None, U, False),
        (4, 0, U, False),
        (13, 0, U, False),
        (14, 0, GuardState.OK, True),
    ],
}


@pytest.mark.parametrize("name", list(GUARD_SCENARIOS))
def test_guard_scenarios(name: str) -> None:
    guard = SkewGuard(SkewConfig(recovery_hold_s=10), max_offset_us=500_000)
    assert guard.decision.state is GuardState.UNKNOWN
    for now, offset, state, serving in GUARD_SCENARIOS[name]:
        decision = guard.observe(now, None if offset is None else estimate(offset))
        assert (decision.state, decision.serving) == (state, serving), (now, offset, decision)


def test_guard_policies() -> None:
    config = SkewConfig(policy=GuardPolicy.WARN, unknown_policy=R, recovery_hold_s=0)
    guard = SkewGuard(config, max_offset_us=1_000)
    assert not guard.decision.serving  # unknown before the first poll, refused by policy
    assert guard.observe(0, estimate(900)).serving  # unsafe, but the policy only warns
    assert guard.observe(1, estimate(0)).state is GuardState.OK  # no hold configured
    assert not guard.observe(2, None, "all down").serving
    assert guard.decision.message == "clock offset unknown: all down"


def test_guard_message_names_offset_and_limit() -> None:
    decision = SkewGuard(SkewConfig()).observe(0, estimate(2_000_000))
    assert "+2000000 us" in decision.message
    assert "400000 us" in decision.message and "80%" in decision.message


# ---------------------------------------------------------------------------------- jumps


def test_jump_detector_counts_wall_steps() -> None:
    wall = ManualClock(1_000_000_000)
    monotonic = [0]
    detector = JumpDetector(1_000, wall, lambda: monotonic[0])

    def step(wall_us: int, monotonic_us: int) -> JumpEvent | None:
        wall.advance(wall_us)
        monotonic[0] += monotonic_us * 1000
        return detector.check()

    assert step(500, 0) is None  # under the threshold
    forward = step(2_000_000, 10)
    assert forward is not None and forward.forward and forward.size_us == 1_999_990
    backward = step(-5_000, 0)
    assert backward is not None and not backward.forward and backward.size_us == 5_000
    assert step(10_000, 10_000) is None  # both moved together
    assert (detector.forward_jumps, detector.backward_jumps) == (1, 1)


def test_monitor_fatal_forward_jump(responder: NtpResponder) -> None:
    wall = ManualClock(time.time_ns() // 1000)
    fatal: list[str] = []
    config = SkewConfig(servers=ntp(responder.address), fatal_forward_jump=True)
    monitor = SkewMonitor(
        config, max_offset_us=500_000, wall_clock=wall, on_fatal_jump=fatal.append
    )
    wall.advance(3_000_000)
    status = monitor.poll_once()
    assert status.forward_jumps == 1 and status.backward_jumps == 0
    assert len(fatal) == 1 and "forward by" in fatal[0] and "threshold 250000 us" in fatal[0]


# ---------------------------------------------------------------------------------- one query


@pytest.mark.parametrize(
    ("behaviour", "status"),
    [
        (Behaviour.SILENT, SampleStatus.TIMEOUT),
        (Behaviour.KISS_OF_DEATH, SampleStatus.KISS_OF_DEATH),
        (Behaviour.GARBAGE, SampleStatus.GARBAGE),
        (Behaviour.LEAP_ALARM, SampleStatus.LEAP_ALARM),
        (Behaviour.BAD_STRATUM, SampleStatus.BAD_STRATUM),
        (Behaviour.WRONG_ORIGIN, SampleStatus.BAD_ORIGIN),
        (Behaviour.CLIENT_MODE, SampleStatus.GARBAGE),
    ],
)
def test_bad_answers_are_unhealthy_samples(
    responder: NtpResponder, behaviour: Behaviour, status: SampleStatus
) -> None:
    responder.set(behaviour=behaviour)
    result = query_server(NtpServer.parse(responder.address), timeout_s=0.2)
    assert result.status is status and not result.healthy
    assert result.offset_us is None
    if behaviour is Behaviour.KISS_OF_DEATH:
        assert "RATE" in result.detail


def test_unresolvable_name_is_an_unhealthy_sample() -> None:
    result = query_server(NtpServer("no-such-host.invalid"), timeout_s=0.2)
    assert result.status is SampleStatus.UNRESOLVABLE
    assert "no-such-host.invalid" in result.detail


def test_responder_offset_is_measured(responder: NtpResponder) -> None:
    responder.set(offset_s=2.0)
    result = query_server(NtpServer.parse(responder.address), timeout_s=1)
    assert result.healthy and result.offset_us is not None and result.delay_us is not None
    # Within the exchange's own error bound (half its round trip, as in NTP), plus 1 ms: a loaded
    # host stretches the round trip, and the offset's error with it.
    assert abs(result.offset_us - 2_000_000) < result.delay_us / 2 + 1_000
    assert result.stratum == 2 and result.leap == 0


# ---------------------------------------------------------------------------------- monitor


def test_monitor_warn_policy_keeps_serving(responder: NtpResponder) -> None:
    responder.set(offset_s=-2.0)
    config = SkewConfig(servers=ntp(responder.address), policy=GuardPolicy.WARN)
    status = SkewMonitor(config, max_offset_us=500_000).poll_once()
    assert status.state is GuardState.UNSAFE and status.serving
    assert abs(offset_named(status.message) + 2_000_000) < 50_000


@pytest.mark.parametrize("policy", [GuardPolicy.WARN, GuardPolicy.REFUSE])
def test_unreachable_servers_are_unknown(responder: NtpResponder, policy: GuardPolicy) -> None:
    responder.set(behaviour=Behaviour.SILENT)
    config = SkewConfig(
        servers=ntp(responder.address, "no-such-host.invalid"),
        timeout_s=0.1,
        unknown_policy=policy,
    )
    monitor = SkewMonitor(config, max_offset_us=500_000)
    for _ in range(2):
        status = monitor.poll_once()
    assert status.state is GuardState.UNKNOWN
    assert status.serving is (policy is GuardPolicy.WARN)
    assert "timeout" in status.message and "unresolvable" in status.message
    assert all(s.consecutive_failures == 2 and s.good_samples == 0 for s in status.servers)


def test_a_failing_server_is_warned_about_once_and_no_servers_make_no_polls(
    responder: NtpResponder, caplog: pytest.LogCaptureFixture
) -> None:
    # Offline, the example config's three pool servers used to log three warnings every poll.
    responder.set(behaviour=Behaviour.SILENT)
    monitor = SkewMonitor(SkewConfig(servers=ntp(responder.address), timeout_s=0.1))
    with caplog.at_level(logging.DEBUG, logger="hlc_oracle.skew"):
        for _ in range(3):
            status = monitor.poll_once()
    about_server = [r for r in caplog.records if responder.address in r.getMessage()]
    assert [r.levelno for r in about_server] == [logging.WARNING, logging.DEBUG, logging.DEBUG]
    assert status.polls == 3
    # A monitor without servers polls nothing: GetStatus's ntp_polls reads 0, not 1.
    assert SkewMonitor(SkewConfig()).poll_once().polls == 0


def test_burst_keeps_the_shortest_round_trip(responder: NtpResponder) -> None:
    status = SkewMonitor(SkewConfig(servers=ntp(responder.address), burst=5)).poll_once()
    assert responder.queries == 5
    (server,) = status.servers
    assert server.good_samples == 1 and server.last_good is not None
    responder.set(behaviour=Behaviour.KISS_OF_DEATH)
    status = SkewMonitor(SkewConfig(servers=ntp(responder.address), burst=2)).poll_once()
    assert status.servers[0].last_sample is not None
    assert status.servers[0].last_sample.status is SampleStatus.KISS_OF_DEATH


def test_stale_answers_expire_to_unknown(responder: NtpResponder) -> None:
    config = SkewConfig(servers=ntp(responder.address), timeout_s=0.1, sample_max_age_s=0.3)
    monitor = SkewMonitor(config)
    assert monitor.poll_once().state is GuardState.OK
    responder.set(behaviour=Behaviour.SILENT)
    assert monitor.poll_once().state is GuardState.OK  # the last good answer still counts
    time.sleep(0.3)
    assert monitor.poll_once().state is GuardState.UNKNOWN


def test_listener_errors_do_not_stop_the_monitor(responder: NtpResponder) -> None:
    calls = threading.Semaphore(0)

    def broken(status: SkewStatus) -> None:
        calls.release()
        raise RuntimeError("listener bug")

    config = SkewConfig(servers=ntp(responder.address), poll_interval_s=0.05)
    with SkewMonitor(config) as monitor:
        monitor.add_listener(broken)
        for _ in range(3):
            assert calls.acquire(timeout=5)
        assert monitor.running


def test_prometheus_metrics(responder: NtpResponder) -> None:
    responder.set(offset_s=2.0)
    monitor = SkewMonitor(SkewConfig(servers=ntp(responder.address, "no-such-host.invalid")))
    monitor.poll_once()
    registry = CollectorRegistry()
    registry.register(SkewMetricsCollector(monitor))
    samples = {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(generate_latest(registry).decode())
        for sample in family.samples
    }
    assert abs(samples[("hlc_oracle_clock_offset_seconds", ())] - 2.0) < 0.05
    assert samples[("hlc_oracle_clock_skew_state", (("state", "unsafe"),))] == 1
    assert samples[("hlc_oracle_clock_skew_serving", ())] == 0
    good = (("result", "good"), ("server", responder.address))
    bad = (("result", "unhealthy"), ("server", "no-such-host.invalid"))
    assert samples[("hlc_oracle_ntp_samples_total", good)] == 1
    assert samples[("hlc_oracle_ntp_samples_total", bad)] == 1
    assert ("hlc_oracle_ntp_server_offset_seconds", (("server", responder.address),)) in samples
    assert samples[("hlc_oracle_clock_wall_jumps_total", (("direction", "forward"),))] == 0


def test_status_is_json(responder: NtpResponder) -> None:
    status = SkewMonitor(SkewConfig(servers=ntp(responder.address))).poll_once()
    data = json.loads(json.dumps(status.to_dict()))
    assert data["state"] == "ok" and data["servers"][0]["last_good"]["status"] == "ok"
