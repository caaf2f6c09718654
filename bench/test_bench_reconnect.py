"""How soon a client that kept calling through an outage is answered after the node is back.

Issue 14's figure: kill -9 the oracle, keep it down for 1, 3 and 10 s, restart it on the same
port, and measure the time from the restarted node's SERVING to the first answer of a client
that kept calling the whole time. Two such clients call through the same outages, in the same
process and run:

- ``grpc_default_channel`` (the baseline): a grpc.aio channel with gRPC's default options
  (reconnect backoff 1 s growing 1.6x, process-wide subchannel pool), calls failing fast and
  retried every 50 ms, as the client did before issue 14;
- ``oracle_client``: an ``AsyncOracleClient`` with its defaults (``hlc_oracle.client.channel``:
  reconnect every 40 ms at most, its own subchannels, calls waiting for a ready channel).

SERVING is when the restarted node first answers a gRPC health check SERVING: a thread checks
every 2 ms, each time on a new channel, and takes the time the successful check was sent (the
node was not serving when the check before it was sent, a few milliseconds earlier).

Each outage group runs ``HLC_RECONNECT_ROUNDS`` rounds (10 by default; one round of the 1 s
outage in a smoke run) and records, in ``extra_info``, the gaps in milliseconds of both clients
(``oracle_client_gaps_ms``, ``grpc_default_gaps_ms``), their maximum and median, and
``baseline_over_client`` (the ratio of the maxima). A gap can be slightly negative: the health
check and the client's call race.
"""

from __future__ import annotations

import asyncio
import os
import socket
import statistics
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hlc_oracle.client import AsyncOracleClient, OracleError
from hlc_oracle.proto import oracle_pb2 as pb

from tests.integration.oracle_process import OracleProcess

OUTAGES_S = (1.0, 3.0, 10.0)
#: How long a round waits for a client's first answer after SERVING before giving up on it.
ANSWER_WAIT_S = 15.0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _serving_since(target: str, stop: threading.Event) -> float | None:
    """Asks gRPC health, each time on a new channel (no backoff carried over), until the node says
    SERVING; returns the monotonic time that successful check was sent."""
    request = health_pb2.HealthCheckRequest(service="")
    while not stop.is_set():
        sent = time.monotonic()
        with grpc.insecure_channel(target, options=[("grpc.use_local_subchannel_pool", 1)]) as ch:
            try:
                answer = health_pb2_grpc.HealthStub(ch).Check(request, timeout=0.2)
                if answer.status == health_pb2.HealthCheckResponse.SERVING:
                    return sent
            except grpc.RpcError:
                pass
        time.sleep(0.002)
    return None


class _Caller:
    """Calls the oracle in a loop; remembers the time of every answer after ``arm()``."""

    def __init__(self) -> None:
        self.first_answer: float | None = None
        self._armed = False

    def arm(self) -> None:
        self.first_answer, self._armed = None, True

    def answered(self) -> None:
        if self._armed and self.first_answer is None:
            self.first_answer = time.monotonic()


async def _keep_calling_client(target: str, caller: _Caller, stop: asyncio.Event) -> None:
    async with AsyncOracleClient(target, timeout=2.0) as client:
        while not stop.is_set():
            try:
                await client.get_timestamp()
                caller.answered()
            except OracleError:
                pass


async def _keep_calling_default_channel(target: str, caller: _Caller, stop: asyncio.Event) -> None:
    async with grpc.aio.insecure_channel(target) as channel:
        get = channel.unary_unary(
            "/hlc_oracle.v1.TimestampOracle/GetTimestamps",
            request_serializer=pb.GetTimestampsRequest.SerializeToString,
            response_deserializer=pb.GetTimestampsResponse.FromString,
        )
        while not stop.is_set():
            try:
                await get(pb.GetTimestampsRequest(count=1), timeout=2.0)
                caller.answered()
            except grpc.RpcError:
                await asyncio.sleep(0.05)


async def _rounds(server: OracleProcess, outage_s: float, rounds: int) -> dict[str, Any]:
    ours, default = _Caller(), _Caller()
    stop = asyncio.Event()
    workers = [
        asyncio.create_task(_keep_calling_client(server.target, ours, stop)),
        asyncio.create_task(_keep_calling_default_channel(server.target, default, stop)),
    ]
    gaps: dict[str, list[float | None]] = {"oracle_client": [], "grpc_default": []}
    try:
        await asyncio.sleep(0.5)  # both connected and answering
        for _ in range(rounds):
            server.kill()
            await asyncio.sleep(0.1)  # answers already on their way before the kill are read
            ours.arm()
            default.arm()
            await asyncio.sleep(outage_s - 0.1)
            poll_stop = threading.Event()
            polling = asyncio.create_task(
                asyncio.to_thread(_serving_since, server.target, poll_stop)
            )
            try:
                await asyncio.to_thread(server.start)
                serving = await asyncio.wait_for(polling, 30)
            finally:
                poll_stop.set()
            assert serving is not None
            deadline = time.monotonic() + ANSWER_WAIT_S
            while (ours.first_answer is None or default.first_answer is None) and (
                time.monotonic() < deadline
            ):
                await asyncio.sleep(0.01)
            for name, caller in (("oracle_client", ours), ("grpc_default", default)):
                first = caller.first_answer
                gaps[name].append(None if first is None else round((first - serving) * 1e3, 1))
    finally:
        stop.set()
        await asyncio.gather(*workers, return_exceptions=True)
    return _summary(gaps)


def _summary(gaps: dict[str, list[float | None]]) -> dict[str, Any]:
    info: dict[str, Any] = {}
    for name, values in gaps.items():
        # A client that never answered within ANSWER_WAIT_S counts as that long.
        counted = [ANSWER_WAIT_S * 1e3 if value is None else value for value in values]
        info[f"{name}_gaps_ms"] = values
        info[f"{name}_max_ms"] = max(counted)
        info[f"{name}_median_ms"] = statistics.median(counted)
        info[f"{name}_unanswered_rounds"] = values.count(None)
    info["baseline_over_client"] = round(
        info["grpc_default_max_ms"] / max(info["oracle_client_max_ms"], 1.0), 1
    )
    return info


@pytest.fixture(scope="module")
def restartable(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OracleProcess]:
    data = tmp_path_factory.mktemp("reconnect-bench") / "data"
    with OracleProcess(Path(data), "--listen", f"127.0.0.1:{_free_port()}") as server:
        yield server


@pytest.mark.parametrize("outage_s", OUTAGES_S)
def test_first_answer_after_restart(
    benchmark: Any, restartable: OracleProcess, outage_s: float
) -> None:
    server = restartable
    smoke = bool(getattr(benchmark, "disabled", False))
    if smoke and outage_s != OUTAGES_S[0]:
        pytest.skip("smoke run: one round of the shortest outage")
    rounds = 1 if smoke else int(os.environ.get("HLC_RECONNECT_ROUNDS", "10"))
    benchmark.group = f"reconnect after a {outage_s:g} s outage"
    results: dict[str, Any] = {}

    def measure() -> None:
        results.update(asyncio.run(_rounds(server, outage_s, rounds)))

    benchmark.pedantic(measure, rounds=1, iterations=1)
    benchmark.extra_info.update(results)
    assert results["oracle_client_unanswered_rounds"] == 0, results
