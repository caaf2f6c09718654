"""The gRPC service beside an empty grpcio echo service (``bench/echo_server.py``), same run.

Both servers run as separate processes on loopback; the client side is the same code for both.
Groups (the echo service is each group's baseline):

- ``service unary latency c=1``: one ``GetTimestamps(1)`` at a time (p50 and p99 in extra_info);
- ``service unary throughput c=16``: 16 concurrent callers, one round = 16 x 25 calls;
- ``service stream messages``: 1000 pipelined ``count=1`` messages on one stream per round;
- ``service client merging 256 callers``: ``AsyncOracleClient.get_timestamp()`` from 256 callers,
  one round = 256 x 100 timestamps;
- ``service count=1000``: ``GetTimestamps(1000)`` from 16 callers, one round = 16 x 10 calls.

``extra_info`` holds each benchmark's rate (calls, messages or timestamps per second, from the
median round) so ``bench/README.md`` can quote them.
"""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from hlc_oracle.client import AsyncOracleClient
from hlc_oracle.proto import oracle_pb2 as pb

from tests.integration.oracle_process import OracleProcess

GET = "/hlc_oracle.v1.TimestampOracle/GetTimestamps"
STREAM = "/hlc_oracle.v1.TimestampOracle/StreamTimestamps"
ONE = pb.GetTimestampsRequest(count=1).SerializeToString()
THOUSAND = pb.GetTimestampsRequest(count=1000).SerializeToString()


def _start_echo(directory: Path) -> tuple[subprocess.Popen[bytes], str]:
    port_file = directory / "echo-port.json"
    script = Path(__file__).with_name("echo_server.py")
    process = subprocess.Popen([sys.executable, str(script), str(port_file)])
    deadline = time.monotonic() + 30
    while not port_file.exists():
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            raise RuntimeError("echo server did not start")
        time.sleep(0.02)
    return process, f"127.0.0.1:{json.loads(port_file.read_text())['port']}"


@pytest.fixture(scope="module")
def targets(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    directory = tmp_path_factory.mktemp("service-bench")
    with OracleProcess(directory / "data") as oracle:
        echo, echo_target = _start_echo(directory)
        try:
            yield {"echo": echo_target, "oracle": oracle.target}
        finally:
            echo.send_signal(signal.SIGTERM)
            try:
                echo.wait(10)
            finally:
                echo.kill()
                echo.wait()


CHANNELS: list[Any] = []


@pytest.fixture(scope="module")
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    event_loop = asyncio.new_event_loop()
    yield event_loop
    event_loop.close()


@pytest.fixture(autouse=True)
def close_channels(loop: asyncio.AbstractEventLoop) -> Iterator[None]:
    """Closes each test's channels when it ends. With them left open until the module ended,
    whichever server ran second measured about 1.4x slower, in both orders."""
    yield
    for channel in CHANNELS:
        loop.run_until_complete(channel.close())
    CHANNELS.clear()


def _bench(request: pytest.FixtureRequest, server: str) -> Any:
    """The group's baseline fixture for the echo service, the plain one for the oracle."""
    return request.getfixturevalue("baseline" if server == "echo" else "benchmark")


def _record_rate(benchmark: Any, name: str, per_round: int) -> None:
    stats = getattr(benchmark, "stats", None)
    if stats is not None and stats.stats.median > 0:
        benchmark.extra_info[name] = round(per_round / stats.stats.median)


SERVERS = ["echo", "oracle"]


@pytest.mark.parametrize("server", SERVERS)
def test_unary_latency(
    request: pytest.FixtureRequest, targets: dict[str, str], server: str
) -> None:
    bench = _bench(request, server)
    bench.group = "service unary latency c=1"
    with grpc.insecure_channel(targets[server]) as channel:
        call = channel.unary_unary(GET)
        for _ in range(200):  # connect and warm up outside the timing
            call(ONE, timeout=5)
        bench.pedantic(lambda: call(ONE, timeout=5), rounds=3000, iterations=1)
    stats = getattr(bench, "stats", None)
    if stats is not None:
        data = sorted(stats.stats.data)
        bench.extra_info["p50_us"] = round(data[len(data) // 2] * 1e6, 1)
        bench.extra_info["p99_us"] = round(data[int(len(data) * 0.99)] * 1e6, 1)


def _aio_channel(loop: asyncio.AbstractEventLoop, target: str) -> Any:
    """A grpc.aio channel bound to ``loop`` (it must be made while that loop runs)."""

    async def make() -> Any:
        return grpc.aio.insecure_channel(target)

    channel = loop.run_until_complete(make())
    CHANNELS.append(channel)
    return channel


def _concurrent_unary(
    loop: asyncio.AbstractEventLoop, target: str, payload: bytes, callers: int, calls: int
) -> Callable[[], None]:
    channel = _aio_channel(loop, target)
    call = channel.unary_unary(GET)

    async def caller() -> None:
        for _ in range(calls):
            await call(payload, timeout=10)

    async def burst() -> None:
        await asyncio.gather(*(caller() for _ in range(callers)))

    loop.run_until_complete(burst())  # connect and warm up
    return lambda: loop.run_until_complete(burst())


@pytest.mark.parametrize("server", SERVERS)
def test_unary_throughput(
    request: pytest.FixtureRequest,
    targets: dict[str, str],
    loop: asyncio.AbstractEventLoop,
    server: str,
) -> None:
    bench = _bench(request, server)
    bench.group = "service unary throughput c=16"
    run = _concurrent_unary(loop, targets[server], ONE, callers=16, calls=25)
    bench.pedantic(run, rounds=40, iterations=1)
    _record_rate(bench, "calls_per_second", 16 * 25)


@pytest.mark.parametrize("server", SERVERS)
def test_count_1000(
    request: pytest.FixtureRequest,
    targets: dict[str, str],
    loop: asyncio.AbstractEventLoop,
    server: str,
) -> None:
    bench = _bench(request, server)
    bench.group = "service count=1000"
    run = _concurrent_unary(loop, targets[server], THOUSAND, callers=16, calls=10)
    bench.pedantic(run, rounds=40, iterations=1)
    _record_rate(bench, "timestamps_per_second", 16 * 10 * 1000)


@pytest.mark.parametrize("server", SERVERS)
def test_stream_messages(
    request: pytest.FixtureRequest,
    targets: dict[str, str],
    loop: asyncio.AbstractEventLoop,
    server: str,
) -> None:
    bench = _bench(request, server)
    bench.group = "service stream messages"
    messages = 1000
    channel = _aio_channel(loop, targets[server])
    method = channel.stream_stream(STREAM)

    async def pipelined() -> None:
        call = method(timeout=30)

        async def write() -> None:
            for _ in range(messages):
                await call.write(ONE)
            await call.done_writing()

        writer = asyncio.ensure_future(write())
        received = 0
        async for _ in call:
            received += 1
        await writer
        assert received == messages

    loop.run_until_complete(pipelined())
    bench.pedantic(lambda: loop.run_until_complete(pipelined()), rounds=20, iterations=1)
    _record_rate(bench, "messages_per_second", messages)


@pytest.mark.parametrize("server", SERVERS)
def test_client_merging(
    request: pytest.FixtureRequest,
    targets: dict[str, str],
    loop: asyncio.AbstractEventLoop,
    server: str,
) -> None:
    bench = _bench(request, server)
    bench.group = "service client merging 256 callers"
    callers, calls = 256, 100

    async def make() -> AsyncOracleClient:
        return AsyncOracleClient(targets[server])

    client = loop.run_until_complete(make())

    async def caller() -> None:
        for _ in range(calls):
            await client.get_timestamp()

    async def burst() -> None:
        await asyncio.gather(*(caller() for _ in range(callers)))

    try:
        loop.run_until_complete(burst())
        bench.pedantic(lambda: loop.run_until_complete(burst()), rounds=15, iterations=1)
        _record_rate(bench, "timestamps_per_second", callers * calls)
    finally:
        loop.run_until_complete(client.close())
