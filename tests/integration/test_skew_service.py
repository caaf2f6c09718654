"""The skew guard end to end: a real ``hlc-oracle serve`` process polling real NTP servers on
loopback (chronyd, and the scriptable responder), seen through gRPC health, the timestamp RPCs,
GetStatus, ``hlc-oracle status`` and /metrics."""

from __future__ import annotations

import json
import re
import subprocess
import time
import urllib.request
from collections.abc import Callable
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2
from hlc_oracle import Timestamp
from hlc_oracle.client import (
    OracleClient,
    OracleNotServingError,
    OracleUnavailableError,
    RetryPolicy,
)
from hlc_oracle.proto import oracle_pb2 as pb

from tests.support.commands import CLI
from tests.support.ntp.chrony import ChronyServer
from tests.support.ntp.responder import Behaviour, NtpResponder
from tests.support.ntp.servers import offset_named
from tests.support.oracle_process import NTP_POLL_S, NTP_TIMEOUT_S, OracleProcess, ntp_args
from tests.support.raw_calls import health
from tests.support.waiting import wait_for

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING

StartOracle = Callable[..., OracleProcess]


def test_serves_with_chrony_and_reports_the_offset(start_oracle: StartOracle) -> None:
    with ChronyServer() as chrony:
        # A burst of 4 keeps the shortest round trip: the server's own threads compete for the
        # GIL with the monitor while the test polls GetStatus.
        oracle = start_oracle(*ntp_args(chrony.address, burst="4"), "--metrics-port", "0")
        with OracleClient(oracle.target) as client:
            wait_for(lambda: client.status().ntp_offset_us is not None, 5)
            status = client.status()
            client.get_timestamp()
        assert status.serving and status.skew_state == "ok"
        assert status.ntp_offset_us is not None and abs(status.ntp_offset_us) <= 1_000
        assert status.ntp_offset_bound_us is not None and status.ntp_offset_bound_us > 0
        (server,) = status.ntp_servers
        assert server["server"] == chrony.address and server["stratum"] == 8
        assert health(oracle.target) == SERVING

        shown = oracle.cli("status", timeout=30)
        assert shown.returncode == 0, shown.stderr
        assert re.search(r"skew_state\s+ok", shown.stdout)
        # Signed like an offset ("+3 us" ahead, "-2 us" behind, "0 us"), thousands grouped.
        assert re.search(r"ntp_offset_us\s+[+-]?\d[\d,]* us\b", shown.stdout), shown.stdout
        assert f"ntp {chrony.address}" in shown.stdout and "stratum 8" in shown.stdout

        assert oracle.metrics_port is not None
        url = f"http://127.0.0.1:{oracle.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as page:
            metrics = page.read().decode()
        assert 'hlc_oracle_clock_skew_state{state="ok"} 1.0' in metrics
        assert "hlc_oracle_clock_offset_bound_seconds" in metrics
        assert f'hlc_oracle_ntp_samples_total{{result="good",server="{chrony.address}"}}' in metrics


def test_refuse_past_the_limit_then_serve_after_recovery(
    start_oracle: StartOracle, responder: NtpResponder
) -> None:
    oracle = start_oracle(*ntp_args(responder.address))
    with OracleClient(oracle.target) as client:
        client.get_timestamp()
        responder.set(offset_s=2.0)
        took = wait_for(lambda: health(oracle.target) == NOT_SERVING, 5)
        # Two poll intervals, each possibly ending with one query timeout.
        assert took <= 2 * (NTP_POLL_S + NTP_TIMEOUT_S) + 0.2
        with pytest.raises(OracleUnavailableError) as refused:
            client.get_timestamps(10)
        assert refused.value.code is grpc.StatusCode.UNAVAILABLE
        assert "past the serving limit 400000 us" in str(refused.value)
        assert abs(offset_named(str(refused.value)) - 2_000_000) < 50_000
        status = client.status()
        assert not status.serving and status.skew_state == "unsafe"
        assert "clock-skew" in status.not_serving_reason

        responder.set(offset_s=0.0)
        back = wait_for(lambda: health(oracle.target) == SERVING, 10)
        assert back >= 0.6 - NTP_POLL_S  # the recovery hold
        assert client.get_timestamp() is not None
        assert client.status().skew_state == "ok"


def test_warn_policy_keeps_serving(start_oracle: StartOracle, responder: NtpResponder) -> None:
    responder.set(offset_s=-2.0)
    oracle = start_oracle(*ntp_args(responder.address, policy="warn"))
    with OracleClient(oracle.target) as client:
        wait_for(lambda: client.status().skew_state == "unsafe", 5)
        assert client.get_timestamp() is not None
        status = client.status()
    assert status.serving and abs(offset_named(status.skew_message) + 2_000_000) < 50_000
    assert health(oracle.target) == SERVING


@pytest.mark.parametrize("policy", ["warn", "refuse"])
def test_unreachable_servers_are_unknown(
    start_oracle: StartOracle, responder: NtpResponder, policy: str
) -> None:
    responder.set(behaviour=Behaviour.SILENT)
    oracle = start_oracle(
        *ntp_args(responder.address, "no-such-host.invalid", unknown_policy=policy),
        wait_healthy=False,
    )
    expected = SERVING if policy == "warn" else NOT_SERVING

    def settled() -> bool:
        try:
            return health(oracle.target) == expected
        except grpc.RpcError:
            return False

    wait_for(settled, 10)
    with OracleClient(oracle.target) as client:
        wait_for(lambda: client.status().ntp_servers[0]["unhealthy_samples"] >= 2, 5)
        status = client.status()
        assert status.skew_state == "unknown" and status.ntp_offset_us is None
        assert {s["last_status"] for s in status.ntp_servers} == {"timeout", "unresolvable"}
        if policy == "warn":
            assert client.get_timestamp() is not None
        else:
            with pytest.raises(OracleUnavailableError, match="clock offset unknown"):
                client.get_timestamp()
    assert health(oracle.target) == expected


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--set", "ntp.policy=kill"], "ntp.policy must be one of refuse, warn"),
        (["--ntp-servers", "host:99999"], "port must be in 1..65535"),
        (["--set", "ntp.poll_interval_s=0"], "poll_interval_s"),
        (["--set", "ntp.unknown_policy=refuse"], "needs ntp.servers"),
    ],
)
def test_bad_ntp_configuration_exits_2(args: list[str], message: str) -> None:
    done = subprocess.run(
        [*CLI, "serve", "--listen", "127.0.0.1:0", *args],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 2 and message in done.stderr, done.stderr


def test_skew_command(responder: NtpResponder) -> None:
    def skew(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*CLI, "skew", *args],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )

    fine = skew("--server", responder.address)
    assert fine.returncode == 0 and "ok: clock offset" in fine.stdout
    responder.set(offset_s=2.0)
    past = skew("--server", responder.address, "--json")
    assert past.returncode == 1 and json.loads(past.stdout)["state"] == "unsafe"


def test_not_serving_refuses_every_timestamp_rpc_and_the_cli_exits_5(
    start_oracle: StartOracle, responder: NtpResponder
) -> None:
    # No usable NTP answer under unknown_policy=refuse: the node is up but never serving.
    responder.set(behaviour=Behaviour.SILENT)
    oracle = start_oracle(*ntp_args(responder.address, unknown_policy="refuse"), wait_healthy=False)

    def not_serving() -> bool:
        try:
            return health(oracle.target) == NOT_SERVING
        except grpc.RpcError:
            return False

    wait_for(not_serving, 10)
    service = "/hlc_oracle.v1.TimestampOracle/"
    observe = pb.ObserveRequest(remote=pb.Timestamp(physical=int(time.time() * 1e6)))
    with grpc.insecure_channel(oracle.target) as channel:
        for method, payload in (
            ("GetTimestamps", pb.GetTimestampsRequest(count=5).SerializeToString()),
            ("Observe", observe.SerializeToString()),
        ):
            with pytest.raises(grpc.RpcError) as raised:
                channel.unary_unary(service + method)(payload, timeout=5)
            error: Any = raised.value
            assert error.code() == grpc.StatusCode.UNAVAILABLE, method
            assert error.details().startswith("not serving: "), error.details()
            assert ("hlc-oracle-refusal", "not-serving") in error.trailing_metadata()
        stream = channel.stream_stream(service + "StreamTimestamps")
        with pytest.raises(grpc.RpcError) as raised:
            next(stream(iter([pb.GetTimestampsRequest(count=1).SerializeToString()]), timeout=5))
        assert raised.value.code() == grpc.StatusCode.UNAVAILABLE  # type: ignore[attr-defined]

    no_retry = RetryPolicy(attempts=1)
    with OracleClient(oracle.target, retry=no_retry) as client:
        for call in (
            lambda: client.get_timestamps_unary(3),
            lambda: client.get_timestamp(),
            lambda: client.observe(Timestamp(int(time.time() * 1e6), 0, 2)),
        ):
            with pytest.raises(OracleNotServingError, match="clock offset unknown") as refused:
                call()
            assert refused.value.refusal == "not-serving"

    now = oracle.cli("now", "--retries", "1")
    assert now.returncode == 5, now.stderr
    assert f"{oracle.target} refused: not serving: " in now.stderr
    assert "cannot reach" not in now.stderr
    status = oracle.cli("status")
    assert status.returncode == 1, status.stderr
    assert "clock offset unknown" in status.stdout
