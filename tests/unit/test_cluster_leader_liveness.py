"""hlc_oracle.cluster.leader_liveness on real loopback sockets: what proves a leader's process
gone (a refusal after a connection) and what does not (an address never reached, a listener
that accepts nothing, as a paused process's kernel still completes handshakes)."""

from __future__ import annotations

import asyncio
import socket

import pytest
from hlc_oracle.addresses import split_host_port
from hlc_oracle.cluster.leader_liveness import (
    MIN_CONNECT_INTERVAL_S,
    wait_until_refused,
)
from hlc_oracle.local_cluster import free_port

#: Long enough for the watcher to connect and probe many times on loopback.
SETTLE_S = 0.5


@pytest.mark.parametrize(
    ("address", "parsed"),
    [
        ("127.0.0.1:50051", ("127.0.0.1", 50051)),
        ("[::1]:7", ("::1", 7)),
        ("oracle-1.example.net:1", ("oracle-1.example.net", 1)),
        ("", None),
        ("127.0.0.1", None),
        ("127.0.0.1:0", None),
        ("127.0.0.1:70000", None),
        (":50051", None),
    ],
)
def test_split_host_port(address: str, parsed: tuple[str, int] | None) -> None:
    assert split_host_port(address) == parsed


def test_a_malformed_address_is_named() -> None:
    with pytest.raises(ValueError, match=r"leader address '127\.0\.0\.1' is not host:port"):
        asyncio.run(wait_until_refused("127.0.0.1"))


def test_a_closed_listener_after_a_connection_is_proof() -> None:
    async def main() -> list[bool]:
        accepted: list[asyncio.StreamWriter] = []

        async def accept(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            accepted.append(writer)

        server = await asyncio.start_server(accept, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        events: list[bool] = []
        watch = asyncio.ensure_future(
            wait_until_refused(f"127.0.0.1:{port}", on_connected=events.append)
        )
        while not accepted:
            await asyncio.sleep(0.01)
        await asyncio.sleep(SETTLE_S)
        assert not watch.done() and events == [True]
        # What the kernel does for a killed process: the listener and its connections close.
        server.close()
        for writer in accepted:
            writer.close()
        await asyncio.wait_for(watch, 5)
        return events

    assert asyncio.run(main()) == [True, False]


def test_an_address_never_reached_proves_nothing() -> None:
    async def main() -> None:
        watch = asyncio.ensure_future(
            wait_until_refused(f"127.0.0.1:{free_port()}", retry_pause_s=0.01)
        )
        await asyncio.sleep(SETTLE_S)
        assert not watch.done()
        watch.cancel()

    asyncio.run(main())


def test_a_listener_that_accepts_nothing_is_alive() -> None:
    """A stopped (SIGSTOP) process: its kernel completes the handshakes, nobody accepts."""

    async def main() -> list[bool]:
        with socket.socket() as listener:
            listener.bind(("127.0.0.1", 0))
            listener.listen(16)
            events: list[bool] = []
            address = f"127.0.0.1:{listener.getsockname()[1]}"
            watch = asyncio.ensure_future(wait_until_refused(address, on_connected=events.append))
            await asyncio.sleep(SETTLE_S)
            assert not watch.done()
            watch.cancel()
            await asyncio.gather(watch, return_exceptions=True)
        return events

    assert asyncio.run(main()) == [True, False]


def test_a_listener_that_closes_every_connection_at_once_does_not_make_it_spin() -> None:
    async def main() -> int:
        accepted = 0

        async def accept(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            nonlocal accepted
            accepted += 1
            writer.close()

        server = await asyncio.start_server(accept, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        watch = asyncio.ensure_future(wait_until_refused(f"127.0.0.1:{port}"))
        await asyncio.sleep(SETTLE_S)
        assert not watch.done()
        watch.cancel()
        await asyncio.gather(watch, return_exceptions=True)
        server.close()
        return accepted

    # One connect per MIN_CONNECT_INTERVAL_S at most, but for the one right after the first
    # connection that ended at once (and at least a few on an idle loopback).
    assert 3 <= asyncio.run(main()) <= SETTLE_S / MIN_CONNECT_INTERVAL_S + 2


def test_a_listener_that_goes_right_after_a_last_connection_is_seen_refused_at_once() -> None:
    """A killed process's listener can complete one last handshake while the process exits: that
    connection ends at once, and the next connect is made at once too, so the refusal is seen
    without waiting out MIN_CONNECT_INTERVAL_S."""

    async def main() -> list[bool]:
        listener = socket.socket()
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        port = listener.getsockname()[1]
        events: list[bool] = []
        closed = asyncio.Event()

        def on_connected(connected: bool) -> None:
            events.append(connected)
            if connected and len(events) == 3:
                # The second connection: its process "exits" (the listener and the pending
                # connection go at once).
                listener.close()
                closed.set()

        async with asyncio.timeout(10):
            # A first connection lives long (the leader alive), then ends; the second is the last.
            first = asyncio.ensure_future(
                wait_until_refused(f"127.0.0.1:{port}", on_connected=on_connected)
            )
            while not events:
                await asyncio.sleep(0.01)
            await asyncio.sleep(MIN_CONNECT_INTERVAL_S * 2)
            accepted, _ = listener.accept()
            accepted.close()  # the first connection ends: the watch connects again at once
            await closed.wait()
            await first  # refused: returns
        return events

    assert asyncio.run(main()) == [True, False, True, False]
