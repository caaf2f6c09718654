"""How the client's channel connects and reconnects: :class:`NodeChannel`, its gRPC options, and
the connect probe that brings it back within milliseconds of a node listening again.

gRPC's defaults suit a client of many servers, not one waiting for its oracle: after a failed
connection attempt it waits 1 s, then 1.6 times longer after every further failure (up to 120 s),
and it gives one attempt up to 20 s. A client that kept calling through a restart got its first
answer up to 5 s after the node was serving again; a new client shared that backoff through
gRPC's process-wide subchannel pool. And grpc-core never waits less than 100 ms between two
attempts, whatever the options say (``ParseArgsForBackoffValues`` in its ``subchannel.cc`` clamps
every backoff to at least 100 ms; measured here: attempts 83 to 123 ms apart with every backoff
set to 5 ms), so a node back from an outage waited up to 120 ms for its clients.

What the client does instead:

- while a call waits for a node whose channel is down, :class:`NodeChannel` tries a plain TCP
  connection to the node's address every ``PROBE_INTERVAL_S`` (20 ms, with 20% jitter; a refused
  attempt costs a SYN and a RST, and nothing is probed while no call waits). When the node
  accepts one and the channel is still down, the channel is replaced by a new one, whose first
  connection attempt starts at once (no backoff). A node answering TCP but failing gRPC's
  connection (a TLS mismatch, a process stopped with SIGSTOP) gets a new channel at most every
  ``MIN_REPLACE_INTERVAL_S`` (100 ms, gRPC's own floor);
- the channel options (``CHANNEL_OPTIONS``; a client's ``options`` override them one by one):
  ``grpc.initial_reconnect_backoff_ms`` 100 and ``grpc.max_reconnect_backoff_ms`` 100, the
  shortest grpc-core allows, for the reconnects that happen without a waiting call;
  ``grpc.min_reconnect_backoff_ms`` 1000, in grpc-core also the shortest time one attempt is
  given (the connect timeout: a stopped node that accepts TCP but never answers holds an attempt
  for 1 s instead of 20 s; raise it for a link whose TCP and TLS handshakes take longer); and
  ``grpc.use_local_subchannel_pool`` 1: every channel owns its connections, so a new client never
  inherits another client's backoff or broken connection.

Calls are made with wait-for-ready (see :mod:`hlc_oracle.client.retry`): during an outage a call
waits, within its deadline, for the channel to connect, and goes out as soon as it does.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Callable
from typing import Any

import grpc

from hlc_oracle.addresses import split_host_port

CHANNEL_OPTIONS: tuple[tuple[str, Any], ...] = (
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 1000),
    ("grpc.use_local_subchannel_pool", 1),
)
#: How often a node whose channel is down is probed while calls wait for it.
PROBE_INTERVAL_S = 0.02
#: The shortest time between two replacements of one node's channel.
MIN_REPLACE_INTERVAL_S = 0.1
#: How long one TCP probe may take: on a link slower than this, gRPC's own reconnects remain.
PROBE_TIMEOUT_S = 0.25


def channel_options(overrides: list[tuple[str, Any]] | None) -> list[tuple[str, Any]]:
    """``CHANNEL_OPTIONS`` with the caller's options replacing the same names, and added."""
    merged = dict(CHANNEL_OPTIONS)
    merged.update(overrides or ())
    return list(merged.items())


def open_channel(
    target: str,
    credentials: grpc.ChannelCredentials | None,
    options: list[tuple[str, Any]] | None,
) -> grpc.aio.Channel:
    """An asyncio channel to ``target`` (TLS when ``credentials`` are given) with these options."""
    merged = channel_options(options)
    if credentials is None:
        return grpc.aio.insecure_channel(target, options=merged)
    return grpc.aio.secure_channel(target, credentials, options=merged)


def is_ready(channel: grpc.aio.Channel) -> bool:
    """Whether the channel has a connection now (no attempt is started by asking)."""
    return channel.get_state(try_to_connect=False) is grpc.ChannelConnectivity.READY


async def is_listening(target: str, timeout: float = PROBE_TIMEOUT_S) -> bool:
    """Whether ``target`` accepts a TCP connection within ``timeout`` (the connection is closed at
    once: gRPC servers drop it without a word)."""
    address = split_host_port(target)
    if address is None:
        return False  # not host:port: gRPC's own reconnects remain
    host, port = address
    try:
        async with asyncio.timeout(timeout):
            _, writer = await asyncio.open_connection(host, port)
    except (OSError, TimeoutError):
        return False
    writer.close()
    # A reset while closing changes nothing: the node listened, which is all this asks.
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return True


class NodeChannel:
    """The channel to one node, replaced by a new one when the node listens again while gRPC
    still backs off (see the module docstring). ``on_replace`` is told every new channel, so
    whatever was made from the old one (methods, streams) is made again."""

    def __init__(
        self,
        target: str,
        credentials: grpc.ChannelCredentials | None,
        options: list[tuple[str, Any]] | None,
        on_replace: Callable[[grpc.aio.Channel], None],
    ) -> None:
        self.target = target
        self._credentials = credentials
        self._options = options
        self._on_replace = on_replace
        self.channel = open_channel(target, credentials, options)
        self.replacements = 0
        self._replaced_at = float("-inf")
        # One probing task per node, shared by the calls waiting for it; it ends when they do.
        self._connecting: asyncio.Task[Any] | None = None
        self._waiters = 0
        self._closing: set[asyncio.Task[Any]] = set()

    def ready(self) -> bool:
        return is_ready(self.channel)

    async def connect(self, deadline: float, wait: bool) -> None:
        """Returns at once when the channel is ready. Otherwise, with ``wait``: when it is ready,
        or at ``deadline`` (loop time), whichever comes first (the call then fails on its own).
        Without ``wait`` (a client of several nodes, which moves on from one that is down): one
        probe, and a new channel if the node listens again, then returns."""
        if self.ready():
            return
        if not wait:
            self._probe_in_background()
            return
        if self._connecting is None or self._connecting.done():
            self._connecting = asyncio.get_running_loop().create_task(self._until_ready())
        connecting = self._connecting
        self._waiters += 1
        try:
            remaining = deadline - asyncio.get_running_loop().time()
            await asyncio.wait_for(asyncio.shield(connecting), max(remaining, 0.0))
        except TimeoutError:
            pass
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise  # this call is cancelled
            # The probing stopped under it (the client is closing): the call fails on its own.
        finally:
            self._waiters -= 1
            if self._waiters == 0 and not connecting.done():
                connecting.cancel()  # nobody waits: stop probing a node that is down
                self._track(connecting)
                self._connecting = None

    def _probe_in_background(self) -> None:
        """For a call that does not wait: it fails fast on a channel that is down, and the next
        call finds a new channel if the probe found the node listening."""
        state = self.channel.get_state(try_to_connect=True)
        if state is not grpc.ChannelConnectivity.TRANSIENT_FAILURE:
            return
        if self._connecting is None or self._connecting.done():
            self._connecting = asyncio.get_running_loop().create_task(self._step())
            self._track(self._connecting)

    async def _until_ready(self) -> None:
        while not await self._step():
            state = self.channel.get_state(try_to_connect=False)
            if state is grpc.ChannelConnectivity.READY:
                return
            interval = PROBE_INTERVAL_S * random.uniform(0.8, 1.2)
            try:
                async with asyncio.timeout(interval):
                    await self.channel.wait_for_state_change(state)
            except TimeoutError:
                pass

    async def _step(self) -> bool:
        """Starts a connection attempt if none runs; replaces a failed channel when the node
        listens again. True when the channel is ready."""
        state = self.channel.get_state(try_to_connect=True)
        if state is grpc.ChannelConnectivity.READY:
            return True
        if state is not grpc.ChannelConnectivity.TRANSIENT_FAILURE:
            return False  # connecting: its attempt is not over yet
        loop = asyncio.get_running_loop()
        if loop.time() - self._replaced_at < MIN_REPLACE_INTERVAL_S:
            return False
        listening = await is_listening(self.target)
        # Only a channel still failed: one that went back to connecting meanwhile may hold calls
        # that its own attempt will carry.
        if listening and self.channel.get_state() is grpc.ChannelConnectivity.TRANSIENT_FAILURE:
            self._replace()
        return False

    def _replace(self) -> None:
        old = self.channel
        self.channel = open_channel(self.target, self._credentials, self._options)
        self.channel.get_state(try_to_connect=True)
        self._replaced_at = asyncio.get_running_loop().time()
        self.replacements += 1
        self._on_replace(self.channel)
        # Its calls are over (the node was down) or failed by on_replace; close() cancels the rest.
        self._track(asyncio.get_running_loop().create_task(old.close()))

    def _track(self, task: asyncio.Task[Any]) -> None:
        self._closing.add(task)
        task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[Any]) -> None:
        self._closing.discard(task)
        if not task.cancelled():
            task.exception()  # retrieved: a probe or an old channel's close has nobody to tell

    async def close(self) -> None:
        """Stops probing and closes the channel and every channel it replaced."""
        if self._connecting is not None and not self._connecting.done():
            self._connecting.cancel()
            self._track(self._connecting)
        await self.channel.close()
        if self._closing:
            await asyncio.gather(*list(self._closing), return_exceptions=True)
