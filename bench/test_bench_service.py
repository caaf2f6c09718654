"""The gRPC service beside an empty grpcio echo service (``bench/echo_server.py``), same run.

Both servers run as separate processes on loopback; the client side is the same code for both.
Groups (the echo service is each group's baseline):

- ``service unary latency c=1``: one ``GetTimestamps(1)`` at a time (p50 and p99 in extra_info);
- ``service unary throughput c=16``: 16 concurrent callers, one round = 16 x 25 calls;
- ``service stream messages``: 1000 pipelined ``count=1`` messages on one stream per round;
- ``service client merging 256 callers``: ``AsyncOracleClient.get_timestamp()`` from 256 callers,
  one round = 256 x 100 timestamps;
- ``service count=1000 unary c=16``: raw ``GetTimestamps(1000)`` calls (no merging) from 16
  callers, one round = 16 x 10 calls;
- ``service count=1000 client c=16``: ``AsyncOracleClient.get_timestamps(1000)`` from 16 callers
  (the client merges concurrent requests and cuts the range back), one round = 16 x 50 calls.

``extra_info`` holds each benchmark's rate (calls, messages or timestamps per second, from the
median round). The machine is shared, and load that comes and goes between the echo benchmark and
the oracle's (run one after the other) moves their ratio by tens of percent either way; so the
oracle's benchmark also runs ``INTERLEAVED_PAIRS`` rounds alternating echo, oracle, echo, ... and
records ``interleaved_ratio`` (median of oracle/echo per pair of rounds; for latency, of p50s).
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from hlc_oracle.client import AsyncOracleClient
from hlc_oracle.proto import oracle_pb2 as pb

from bench.support import (
    GET,
    INTERLEAVED_PAIRS,
    ONE,
    UNARY_CALLERS,
    UNARY_CALLS,
    aio_channel,
    bench_for,
    concurrent_unary,
    echo_server,
    handler_rounds,
    interleaved_pairs,
    record_median_rate,
    record_us_per_call,
)
from tests.support.oracle_process import OracleProcess

STREAM = "/hlc_oracle.v1.TimestampOracle/StreamTimestamps"
THOUSAND = pb.GetTimestampsRequest(count=1000).SerializeToString()
SERVERS = ["echo", "oracle"]
#: Every benchmark here closes the channels it made when it ends.
pytestmark = pytest.mark.usefixtures("close_channels")


@pytest.fixture(scope="module")
def targets(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    directory = tmp_path_factory.mktemp("service-bench")
    with OracleProcess(directory / "data") as oracle, echo_server(directory) as (_, echo_target):
        yield {"echo": echo_target, "oracle": oracle.target}


@dataclass(frozen=True)
class Side:
    """One member of a group: its benchmark fixture (the echo service's is the group's baseline),
    which server it measures, both servers' targets, and the module's event loop."""

    bench: Any
    server: str
    targets: dict[str, str]
    loop: asyncio.AbstractEventLoop


@pytest.fixture(params=SERVERS)
def side(
    request: pytest.FixtureRequest, targets: dict[str, str], loop: asyncio.AbstractEventLoop
) -> Side:
    server: str = request.param
    return Side(bench_for(request, server == "echo"), server, targets, loop)


def _record(
    side: Side,
    run: Callable[[], None],
    make_echo: Callable[[], Callable[[], None]],
    rate_name: str,
    per_round: int,
) -> None:
    """The rate from the median round and, for the oracle, the interleaved comparison."""
    bench = side.bench
    if not record_median_rate(bench, rate_name, per_round) or side.server != "oracle":
        return
    pairs = interleaved_pairs(make_echo(), run)
    bench.extra_info["interleaved_ratio"] = round(statistics.median(o / e for e, o in pairs), 3)
    bench.extra_info[f"interleaved_echo_{rate_name}"] = round(
        per_round / statistics.median(e for e, _ in pairs)
    )
    bench.extra_info[f"interleaved_oracle_{rate_name}"] = round(
        per_round / statistics.median(o for _, o in pairs)
    )


def _percentiles(seconds: list[float]) -> tuple[float, float]:
    data = sorted(seconds)
    return data[len(data) // 2] * 1e6, data[int(len(data) * 0.99)] * 1e6


def test_unary_latency(side: Side) -> None:
    bench, server = side.bench, side.server
    bench.group = "service unary latency c=1"
    channels = {name: grpc.insecure_channel(target) for name, target in side.targets.items()}
    try:
        calls = {name: channel.unary_unary(GET) for name, channel in channels.items()}
        for call in calls.values():
            for _ in range(200):  # connect and warm up outside the timing
                call(ONE, timeout=5)
        call = calls[server]
        bench.pedantic(lambda: call(ONE, timeout=5), rounds=3000, iterations=1)
        stats = getattr(bench, "stats", None)
        if stats is None:
            return
        p50, p99 = _percentiles(stats.stats.data)
        bench.extra_info["p50_us"] = round(p50, 1)
        bench.extra_info["p99_us"] = round(p99, 1)
        if server == "oracle":
            samples: dict[str, list[float]] = {"echo": [], "oracle": []}
            for _ in range(INTERLEAVED_PAIRS):
                for name in ("echo", "oracle"):
                    for _ in range(200):
                        started = time.perf_counter()
                        calls[name](ONE, timeout=5)
                        samples[name].append(time.perf_counter() - started)
            (echo_p50, echo_p99), (oracle_p50, oracle_p99) = (
                _percentiles(samples["echo"]),
                _percentiles(samples["oracle"]),
            )
            bench.extra_info["interleaved_ratio"] = round(oracle_p50 / echo_p50, 3)
            bench.extra_info["interleaved_echo_p50_p99_us"] = [round(echo_p50), round(echo_p99)]
            bench.extra_info["interleaved_oracle_p50_p99_us"] = [
                round(oracle_p50),
                round(oracle_p99),
            ]
    finally:
        for channel in channels.values():
            channel.close()


def _unary_group(side: Side, group: str, payload: bytes, calls: int, rate: tuple[str, int]) -> None:
    """30 rounds of :func:`concurrent_unary` (``UNARY_CALLERS`` callers, ``calls`` each);
    ``rate``: the figure's name and what one round counts."""
    side.bench.group = group

    def make(name: str) -> Callable[[], None]:
        return concurrent_unary(side.loop, side.targets[name], payload, UNARY_CALLERS, calls)

    run = make(side.server)
    side.bench.pedantic(run, rounds=30, iterations=1)
    _record(side, run, lambda: make("echo"), *rate)


def test_unary_throughput(side: Side) -> None:
    rate = ("calls_per_second", UNARY_CALLERS * UNARY_CALLS)
    _unary_group(side, "service unary throughput c=16", ONE, UNARY_CALLS, rate)


def test_count_1000(side: Side) -> None:
    rate = ("timestamps_per_second", UNARY_CALLERS * 10 * 1000)
    _unary_group(side, "service count=1000 unary c=16", THOUSAND, 10, rate)


MESSAGES = 1000


def _pipelined_stream(loop: asyncio.AbstractEventLoop, target: str) -> Callable[[], None]:
    method = aio_channel(loop, target).stream_stream(STREAM)

    async def pipelined() -> None:
        call = method(timeout=30)

        async def write() -> None:
            for _ in range(MESSAGES):
                await call.write(ONE)
            await call.done_writing()

        writer = asyncio.ensure_future(write())
        received = 0
        async for _ in call:
            received += 1
        await writer
        assert received == MESSAGES

    loop.run_until_complete(pipelined())  # connect and warm up
    return lambda: loop.run_until_complete(pipelined())


def test_stream_messages(side: Side) -> None:
    side.bench.group = "service stream messages"
    run = _pipelined_stream(side.loop, side.targets[side.server])
    side.bench.pedantic(run, rounds=20, iterations=1)
    echo = side.targets["echo"]
    _record(side, run, lambda: _pipelined_stream(side.loop, echo), "messages_per_second", MESSAGES)


CALLERS, CALLS = 256, 100
RANGE_CALLERS, RANGE_CALLS = 16, 50


def _merged_callers(
    loop: asyncio.AbstractEventLoop,
    target: str,
    clients: list[AsyncOracleClient],
    count: int = 1,
) -> Callable[[], None]:
    """``CALLERS`` x ``CALLS`` ``get_timestamp()`` calls, or ``RANGE_CALLERS`` x ``RANGE_CALLS``
    ``get_timestamps(count)`` calls, through one client."""

    async def make() -> AsyncOracleClient:
        return AsyncOracleClient(target)

    client = loop.run_until_complete(make())
    clients.append(client)

    async def caller() -> None:
        for _ in range(CALLS):
            await client.get_timestamp()

    async def range_caller() -> None:
        for _ in range(RANGE_CALLS):
            await client.get_timestamps(count)

    async def burst() -> None:
        if count == 1:
            await asyncio.gather(*(caller() for _ in range(CALLERS)))
        else:
            await asyncio.gather(*(range_caller() for _ in range(RANGE_CALLERS)))

    loop.run_until_complete(burst())  # connect and warm up
    return lambda: loop.run_until_complete(burst())


def _client_group(side: Side, group: str, count: int, rounds: int, per_round: int) -> None:
    """``rounds`` rounds of :func:`_merged_callers` (``count`` timestamps a call); the clients are
    closed at the end."""
    side.bench.group = group
    loop, targets = side.loop, side.targets
    clients: list[AsyncOracleClient] = []
    try:
        run = _merged_callers(loop, targets[side.server], clients, count)
        side.bench.pedantic(run, rounds=rounds, iterations=1)
        _record(
            side,
            run,
            lambda: _merged_callers(loop, targets["echo"], clients, count),
            "timestamps_per_second",
            per_round,
        )
    finally:
        for client in clients:
            loop.run_until_complete(client.close())


def test_client_merging(side: Side) -> None:
    _client_group(side, "service client merging 256 callers", 1, 15, CALLERS * CALLS)


def test_client_count_1000(side: Side) -> None:
    per_round = RANGE_CALLERS * RANGE_CALLS * 1000
    _client_group(side, "service count=1000 client c=16", 1000, 20, per_round)


@pytest.fixture(scope="module")
def in_process_oracle(
    tmp_path_factory: pytest.TempPathFactory, loop: asyncio.AbstractEventLoop
) -> Iterator[Any]:
    """The oracle's node (clock, window, gate, metrics, handlers) without the transport."""
    from hlc_oracle.config import OracleConfig
    from hlc_oracle.server.app import OracleServer

    config = OracleConfig()
    config.server.data_dir = tmp_path_factory.mktemp("in-process") / "data"
    server = OracleServer(config)
    loop.run_until_complete(server.window.start())
    server.gate.unblock("starting")
    yield server
    loop.run_until_complete(server.window.stop())


@pytest.mark.parametrize("server", SERVERS)
def test_handler_cost(
    request: pytest.FixtureRequest,
    loop: asyncio.AbstractEventLoop,
    in_process_oracle: Any,
    server: str,
) -> None:
    """One ``GetTimestamps(1)`` handler call in-process, no network: what the oracle adds per
    request over the echo handler (parse, gate, clock, metrics, serialize). Quiet, unlike the
    transport figures."""
    import importlib.util

    bench = bench_for(request, server == "echo")
    bench.group = "service handler in-process"
    if server == "echo":
        spec = importlib.util.spec_from_file_location(
            "echo_server", Path(__file__).with_name("echo_server.py")
        )
        assert spec is not None and spec.loader is not None
        echo = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(echo)
        handler = echo.get_timestamps
    else:
        handler = in_process_oracle.service.get_timestamps

    bench.pedantic(handler_rounds(loop, handler), rounds=50, iterations=1)
    record_us_per_call(bench)
