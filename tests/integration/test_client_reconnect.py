"""How the client gets back to a node that was unreachable (``hlc_oracle.client.channel``): a
connect probe while calls wait, a new channel once the node listens, and nothing probed while no
call waits. Real servers on loopback; the node is made unreachable by a TCP proxy in front of it
that refuses connections, or by a listener that accepts TCP but never speaks gRPC."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
from collections.abc import Iterator

import pytest
from hlc_oracle.client import AsyncOracleClient, OracleError, OracleUnavailableError
from hlc_oracle.client.channel import MIN_REPLACE_INTERVAL_S, is_listening

from tests.support.oracle_process import OracleProcess
from tests.support.tcp_proxy import TcpProxy


@contextlib.contextmanager
def mute_listener() -> Iterator[str]:
    """A loopback port that accepts TCP connections and closes each one at once, unanswered."""
    listener = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def accept() -> None:
        while not stop.is_set():
            with contextlib.suppress(OSError):
                connection, _ = listener.accept()
                connection.close()

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{listener.getsockname()[1]}"
    finally:
        stop.set()
        with contextlib.suppress(OSError):
            listener.shutdown(socket.SHUT_RDWR)
        listener.close()
        thread.join(5)


def test_the_probe_tells_a_listening_port_from_a_closed_one(oracle: OracleProcess) -> None:
    async def main() -> None:
        assert await is_listening(oracle.target)
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            closed = f"127.0.0.1:{sock.getsockname()[1]}"  # bound, not listening: refused
            assert not await is_listening(closed)

    asyncio.run(main())


def test_a_call_waiting_through_an_outage_goes_out_on_a_new_channel(
    oracle: OracleProcess,
) -> None:
    """The node is unreachable, a call waits for it, the node listens again: the client replaces
    the channel gRPC is backing off on, and the waiting call is answered on the new one. gRPC's
    own backoff is set to 30 s here, so only the replacement can answer the call in time (with
    the defaults, gRPC's own attempt every 100 ms sometimes gets there first)."""
    slow_backoff = [
        ("grpc.initial_reconnect_backoff_ms", 30_000),
        ("grpc.max_reconnect_backoff_ms", 30_000),
    ]

    async def main() -> None:
        with TcpProxy(oracle.target) as proxy:
            async with AsyncOracleClient(
                proxy.target, timeout=20.0, options=slow_backoff
            ) as client:
                before = await client.get_timestamp()
                node = client._nodes.current
                proxy.unplug()
                waiting = asyncio.ensure_future(client.get_timestamp())
                await asyncio.sleep(0.5)  # the call waits; the probe finds nothing listening
                assert not waiting.done()
                assert node.connection.replacements == 0
                proxy.plug()
                after = await asyncio.wait_for(waiting, 10)  # well inside gRPC's 30 s
                assert after > before
                assert node.connection.replacements >= 1
                # Both streams moved to the new channel: commits and timestamps keep working.
                assert await client.get_timestamps(3)

    asyncio.run(main())


def test_nothing_is_probed_while_no_call_waits(oracle: OracleProcess) -> None:
    async def main() -> None:
        with TcpProxy(oracle.target) as proxy:
            client = AsyncOracleClient(proxy.target, timeout=0.3)
            try:
                await client.get_timestamp()
                proxy.unplug()
                with pytest.raises(OracleUnavailableError):
                    await client.get_timestamp()  # unreachable for the whole timeout
                connection = client._nodes.current.connection
                assert connection._connecting is None  # the probing task ended with the call
                proxy.plug()
                await asyncio.sleep(0.3)
                assert connection.replacements == 0  # nobody called: nobody probed
                assert await client.get_timestamp()  # the next call reconnects
            finally:
                await client.close()

    asyncio.run(main())


def test_a_port_that_accepts_but_never_speaks_grpc_fails_the_call_in_time() -> None:
    """TCP connects, gRPC never does: the call fails at its timeout as unavailable, and the
    channel is replaced at most once per MIN_REPLACE_INTERVAL_S meanwhile."""
    timeout = 1.0

    async def main() -> None:
        with mute_listener() as target:
            async with AsyncOracleClient(target, timeout=timeout) as client:
                loop = asyncio.get_running_loop()
                began = loop.time()
                with pytest.raises(OracleUnavailableError):
                    await client.get_timestamp()
                assert loop.time() - began < timeout + 1.5  # the TLS look is bounded too
                replacements = client._nodes.current.connection.replacements
                assert 1 <= replacements <= timeout / MIN_REPLACE_INTERVAL_S + 1

    asyncio.run(main())


@pytest.mark.parametrize("waiting_for", ["the node", "its answer"])
def test_closing_the_client_ends_a_waiting_call_with_an_oracle_error(
    oracle: OracleProcess, waiting_for: str
) -> None:
    """A call waiting when the client closes, for an unreachable node or for the answer of one
    that went silent, fails as an OracleError, not with a CancelledError its caller never asked
    for (grpc.aio ends a call whose channel closes under it that way)."""

    async def main() -> None:
        with TcpProxy(oracle.target) as proxy:
            client = AsyncOracleClient(proxy.target, timeout=10.0)
            await client.get_timestamp()
            if waiting_for == "the node":
                proxy.unplug()
            else:
                proxy.hold_answers()
            waiting = asyncio.ensure_future(client.get_timestamps_unary(1))
            if waiting_for == "its answer":
                assert await asyncio.to_thread(proxy.wait_for_held_answer)
            await asyncio.sleep(0.2)
            await client.close()
            with pytest.raises(OracleError, match="client closed"):
                await asyncio.wait_for(waiting, 10)

    asyncio.run(main())
