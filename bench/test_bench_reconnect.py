"""How soon a client that kept calling through an outage is answered after the node is back.

The reconnect figure: kill -9 the oracle, keep it down for 1, 3 and 10 s, restart it on the same
port, and measure the time from the restarted node's SERVING to the first answer of a client
that kept calling the whole time. Two such clients call through the same outages, in the same
process and run:

- ``grpc_default_channel`` (the baseline): a grpc.aio channel with gRPC's default options
  (reconnect backoff 1 s growing 1.6x, process-wide subchannel pool), calls failing fast and
  retried every 50 ms, as the client did before its prompt reconnects;
- ``oracle_client``: an ``AsyncOracleClient`` with its defaults (``hlc_oracle.client.channel``:
  a connect probe every 20 ms while calls wait, a new channel as soon as the node listens, its
  own subchannels, calls waiting for a ready channel).

SERVING is when the restarted node opened its gate: the wall-clock time of its own log record
"serving" (millisecond resolution), which it writes as its gRPC server has started and nothing
blocks it any more. Earlier runs took the send time of the first health check answered SERVING;
that was wrong by up to the check's timeout, because a restarted node listens (and the kernel
accepts connections) before its gRPC server starts, so the check that succeeded had waited in
the accept queue since before the node served, and every gap came out about 100 ms too long.

The same node restarting hides gRPC's own reconnect cadence: a connection attempt that reaches
the bound port waits in the accept queue, and completes as the server starts. A node that
becomes reachable while it serves (a network outage ends) shows it: grpc-core never retries
sooner than 100 ms (see ``hlc_oracle.client.channel``). ``test_first_answer_after_partition``
measures that case through a TCP proxy in front of the node (``tests/support/tcp_proxy.py``):
the proxy refuses connections and cuts every one for 1 and 3 s, then listens again; the gap is
from that moment to the first answer.

Each outage group runs ``HLC_RECONNECT_ROUNDS`` rounds (10 by default; one round of the 1 s
outage in a smoke run) and records, in ``extra_info``, the gaps in milliseconds of both clients
(``oracle_client_gaps_ms``, ``grpc_default_gaps_ms``), their maximum and median, and
``baseline_over_client`` (the ratio of the maxima). The log's times are truncated to the
millisecond, so a gap may read up to 1 ms long.
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import grpc
import pytest
from hlc_oracle.client import AsyncOracleClient, OracleError
from hlc_oracle.local_cluster import free_port
from hlc_oracle.proto import oracle_pb2 as pb

from tests.support.oracle_process import OracleProcess
from tests.support.tcp_proxy import TcpProxy

OUTAGES_S = (1.0, 3.0, 10.0)
#: Network outages (the node keeps serving): the client's connect probe against gRPC's floor.
PARTITIONS_S = (1.0, 3.0)
#: How long a round waits for a client's first answer after SERVING before giving up on it.
ANSWER_WAIT_S = 15.0


def _serving_time(log_text: str) -> float:
    """The wall-clock time (seconds) of the last "serving" record in a node's JSON log."""
    records = [json.loads(line) for line in log_text.splitlines() if line.startswith("{")]
    serving = [record["ts"] for record in records if record.get("message") == "serving"]
    assert serving, "the restarted node never logged 'serving'"
    return datetime.fromisoformat(serving[-1]).timestamp()


class _Caller:
    """Calls the oracle in a loop; remembers the time of every answer after ``arm()``."""

    def __init__(self) -> None:
        self.first_answer: float | None = None
        self._armed = False

    def arm(self) -> None:
        self.first_answer, self._armed = None, True

    def answered(self) -> None:
        if self._armed and self.first_answer is None:
            self.first_answer = time.time()


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


class _Restart:
    """The node's process is killed (kill -9) and started again on the same port; it is back at
    its "serving" record."""

    def __init__(self, server: OracleProcess) -> None:
        self.server = server
        self.target = server.target

    def down(self) -> None:
        self.server.kill()

    async def up(self) -> float:
        logged_before = len(self.server.log_text())
        await asyncio.to_thread(self.server.start)
        return _serving_time(self.server.log_text()[logged_before:])


class _Partition:
    """The node keeps serving but cannot be reached: its address (a proxy) refuses connections
    and every connection is cut; it is back once the address listens again."""

    def __init__(self, proxy: TcpProxy) -> None:
        self.proxy = proxy
        self.target = proxy.target

    def down(self) -> None:
        self.proxy.unplug()

    async def up(self) -> float:
        self.proxy.plug()
        return time.time()


async def _rounds(outage: _Restart | _Partition, outage_s: float, rounds: int) -> dict[str, Any]:
    ours, default = _Caller(), _Caller()
    stop = asyncio.Event()
    workers = [
        asyncio.create_task(_keep_calling_client(outage.target, ours, stop)),
        asyncio.create_task(_keep_calling_default_channel(outage.target, default, stop)),
    ]
    gaps: dict[str, list[float | None]] = {"oracle_client": [], "grpc_default": []}
    try:
        await asyncio.sleep(0.5)  # both connected and answering
        for _ in range(rounds):
            outage.down()
            await asyncio.sleep(0.1)  # answers already on their way before the outage are read
            ours.arm()
            default.arm()
            await asyncio.sleep(outage_s - 0.1)
            back = await outage.up()
            deadline = time.monotonic() + ANSWER_WAIT_S
            while (ours.first_answer is None or default.first_answer is None) and (
                time.monotonic() < deadline
            ):
                await asyncio.sleep(0.01)
            for name, caller in (("oracle_client", ours), ("grpc_default", default)):
                first = caller.first_answer
                gaps[name].append(None if first is None else round((first - back) * 1e3, 1))
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
    with OracleProcess(Path(data), "--listen", f"127.0.0.1:{free_port()}") as server:
        yield server


def _measure(benchmark: Any, outage: _Restart | _Partition, outage_s: float, kind: str) -> None:
    smoke = bool(getattr(benchmark, "disabled", False))
    if smoke and outage_s != OUTAGES_S[0]:
        pytest.skip("smoke run: one round of the shortest outage")
    rounds = 1 if smoke else int(os.environ.get("HLC_RECONNECT_ROUNDS", "10"))
    benchmark.group = f"reconnect after a {outage_s:g} s {kind}"
    results: dict[str, Any] = {}

    def measure() -> None:
        results.update(asyncio.run(_rounds(outage, outage_s, rounds)))

    benchmark.pedantic(measure, rounds=1, iterations=1)
    benchmark.extra_info.update(results)
    assert results["oracle_client_unanswered_rounds"] == 0, results


@pytest.mark.parametrize("outage_s", OUTAGES_S)
def test_first_answer_after_restart(
    benchmark: Any, restartable: OracleProcess, outage_s: float
) -> None:
    _measure(benchmark, _Restart(restartable), outage_s, "restart")


@pytest.mark.parametrize("outage_s", PARTITIONS_S)
def test_first_answer_after_partition(
    benchmark: Any, restartable: OracleProcess, outage_s: float
) -> None:
    with TcpProxy(restartable.target) as proxy:
        _measure(benchmark, _Partition(proxy), outage_s, "partition")
