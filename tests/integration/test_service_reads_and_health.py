"""Reads stay open while the node refuses, and health tells the truth about a disabled service:
a real ``hlc-oracle serve`` process, its skew guard fed by a real NTP responder on loopback."""

from __future__ import annotations

import urllib.request
from collections.abc import Callable
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2
from hlc_oracle import Committed, Transaction
from hlc_oracle.cli import EXIT_DISABLED
from hlc_oracle.client import OracleClient, OracleDisabledError, OracleUnavailableError
from hlc_oracle.proto import (
    REFUSAL_DISABLED,
    REFUSAL_METADATA_KEY,
    REFUSAL_NOT_SERVING,
)
from hlc_oracle.proto import oracle_pb2 as pb

from tests.support.ntp.responder import Behaviour, NtpResponder
from tests.support.oracle_process import OracleProcess, ntp_args
from tests.support.raw_calls import call, health, refusal_of
from tests.support.waiting import wait_for

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
TIMESTAMPS = "hlc_oracle.v1.TimestampOracle"
TRANSACTIONS = "hlc_oracle.v1.Transactions"


def transaction_status(oracle: OracleProcess, txn_id: int) -> pb.TransactionStatusResponse:
    raw = call(
        oracle.target,
        f"{TRANSACTIONS}/GetTransactionStatus",
        pb.TransactionStatusRequest(txn_id=txn_id),
    )
    return pb.TransactionStatusResponse.FromString(raw)


def test_decisions_and_status_are_readable_while_the_skew_guard_refuses(
    start_oracle: Callable[..., OracleProcess], responder: NtpResponder
) -> None:
    oracle = start_oracle(*ntp_args(responder.address, unknown_policy="refuse"))
    with OracleClient(oracle.target) as client:
        start = client.get_timestamp()
        committed = client.commit(Transaction(1, start, [], ["k"]))
        assert isinstance(committed, Committed)
        client.abort(2)

    def refusing() -> bool:
        return health(oracle.target) == NOT_SERVING

    # NTP goes silent: under unknown_policy=refuse the node stops handing out timestamps.
    responder.set(behaviour=Behaviour.SILENT)
    wait_for(refusing, 10)
    for restarted in (False, True):
        # The decisions are read from the scheduler, replayed from the commit log after a restart.
        first = transaction_status(oracle, 1)
        assert first.known and first.result.commit_ts.physical == committed.commit_ts.physical
        assert transaction_status(oracle, 2).result.WhichOneof("outcome") == "aborted"
        assert not transaction_status(oracle, 3).known
        status = pb.GetStatusResponse.FromString(
            call(oracle.target, f"{TIMESTAMPS}/GetStatus", pb.GetStatusRequest())
        )
        assert not status.serving and "clock offset unknown" in status.not_serving_reason
        # What hands out a timestamp or decides stays refused, retryably.
        for method, request in (
            (f"{TIMESTAMPS}/GetTimestamps", pb.GetTimestampsRequest(count=1)),
            (f"{TRANSACTIONS}/Abort", pb.AbortRequest(txn_id=4)),
            (
                f"{TRANSACTIONS}/Commit",
                pb.CommitRequest(
                    transaction=pb.Transaction(txn_id=5, start_ts=status.last_timestamp)
                ),
            ),
        ):
            refusal = refusal_of(oracle.target, method, request)
            assert (refusal.code, refusal.mark) == (
                grpc.StatusCode.UNAVAILABLE,
                REFUSAL_NOT_SERVING,
            ), method
            assert "clock offset unknown" in refusal.details, method
        # The participant's tool: `hlc-oracle txn status` answers (exit 0: committed).
        shown = oracle.cli("txn", "status", "1")
        assert shown.returncode == 0, shown.stderr
        if not restarted:
            # kill -9 and restart while NTP is still silent: it never serves, yet reads answer.
            oracle.wait_healthy = False
            oracle.restart()
            wait_for(refusing, 10)


def test_a_disabled_transactions_service_is_not_serving_and_refuses_for_good(
    start_oracle: Callable[..., OracleProcess],
) -> None:
    oracle = start_oracle("--set", "commit.enabled=false", "--metrics-port", "0")
    assert health(oracle.target) == SERVING
    assert health(oracle.target, TIMESTAMPS) == SERVING
    assert health(oracle.target, TRANSACTIONS) == NOT_SERVING
    with OracleClient(oracle.target) as client:
        assert client.get_timestamp() < client.get_timestamp()
        start = client.get_timestamp()
    for method, request in (
        (
            "Commit",
            pb.CommitRequest(
                transaction=pb.Transaction(txn_id=1, start_ts=pb.Timestamp(physical=start.physical))
            ),
        ),
        ("Abort", pb.AbortRequest(txn_id=1)),
        ("GetTransactionStatus", pb.TransactionStatusRequest(txn_id=1)),
    ):
        refusal = refusal_of(oracle.target, f"{TRANSACTIONS}/{method}", request)
        assert (refusal.code, refusal.mark) == (grpc.StatusCode.UNIMPLEMENTED, REFUSAL_DISABLED)
        assert "commit.enabled = false" in refusal.details, method
    with grpc.insecure_channel(oracle.target) as channel:
        stream = channel.stream_stream(f"/{TRANSACTIONS}/CommitStream")
        with pytest.raises(grpc.RpcError) as raised:
            next(stream(iter([pb.CommitStreamRequest().SerializeToString()]), timeout=5))
        error: Any = raised.value
        assert error.code() == grpc.StatusCode.UNIMPLEMENTED
        assert (REFUSAL_METADATA_KEY, REFUSAL_DISABLED) in error.trailing_metadata()
    # Health stays NOT_SERVING for the disabled service whatever the gate does.
    assert health(oracle.target, TRANSACTIONS) == NOT_SERVING
    # The client takes the refusal as final: its own error, no retry, exit code 6.
    with OracleClient(oracle.target) as client:  # the default policy: 5 attempts
        for call in (
            lambda: client.transaction_status(1),
            lambda: client.commit(Transaction(2, client.get_timestamp(), [], ["k"])),
            lambda: client.abort(3),
        ):
            with pytest.raises(OracleDisabledError, match=r"commit\.enabled = false") as refused:
                call()
            assert not isinstance(refused.value, OracleUnavailableError)
            assert refused.value.refusal == REFUSAL_DISABLED
    refusals = unimplemented_calls(oracle)
    assert refusals["GetTransactionStatus"] == 2  # one above, one now: never retried
    assert refusals["Abort"] == 2
    shown = oracle.cli("txn", "status", "1")
    assert shown.returncode == EXIT_DISABLED, shown.stderr
    assert f"{oracle.target} refused for good: " in shown.stderr
    assert "commit.enabled = false" in shown.stderr
    assert unimplemented_calls(oracle)["GetTransactionStatus"] == 3


def unimplemented_calls(oracle: OracleProcess) -> dict[str, float]:
    """Calls answered UNIMPLEMENTED, by method, from the server's /metrics."""
    url = f"http://127.0.0.1:{oracle.metrics_port}/metrics"
    with urllib.request.urlopen(url, timeout=5) as response:
        text = response.read().decode()
    counts = {}
    for line in text.splitlines():
        if line.startswith('hlc_oracle_requests_total{code="UNIMPLEMENTED"'):
            method = line.split('method="', 1)[1].split('"', 1)[0]
            counts[method] = float(line.rsplit(" ", 1)[1])
    return counts
