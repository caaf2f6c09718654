"""How the client's channel connects and reconnects: its gRPC options, and whether it is ready.

gRPC's defaults suit a client of many servers, not one waiting for its oracle: after a failed
connection attempt it waits 1 s, then 1.6 times longer after every further failure (up to 120 s),
and it gives one attempt up to 20 s. A client that kept calling through a restart got its first
answer up to 5 s after the node was serving again; a new client shared that backoff through
gRPC's process-wide subchannel pool. The defaults here (``CHANNEL_OPTIONS``; a client's
``options`` override them one by one):

- ``grpc.initial_reconnect_backoff_ms`` 20 and ``grpc.max_reconnect_backoff_ms`` 40: while the
  node is down, a connection attempt every 40 ms (20% jitter), however long the outage lasts, so
  the channel is ready again within about 50 ms of the node listening. A refused attempt costs a
  SYN and a RST on the network.
- ``grpc.min_reconnect_backoff_ms`` 1000: in grpc-core this is also the shortest time one attempt
  is given (the connect timeout). A stopped node that accepts TCP but never answers holds an
  attempt for 1 s instead of 20 s. Raise it for a link whose connection setup (TCP and TLS
  handshakes) can take longer.
- ``grpc.use_local_subchannel_pool`` 1: every channel owns its connections, so a new client never
  inherits another client's backoff or broken connection.

Calls are made with wait-for-ready (see :mod:`hlc_oracle.client.retry`): during an outage a call
waits, within its deadline, for the channel to connect, and goes out as soon as it does.
"""

from __future__ import annotations

from typing import Any

import grpc

CHANNEL_OPTIONS: tuple[tuple[str, Any], ...] = (
    ("grpc.initial_reconnect_backoff_ms", 20),
    ("grpc.max_reconnect_backoff_ms", 40),
    ("grpc.min_reconnect_backoff_ms", 1000),
    ("grpc.use_local_subchannel_pool", 1),
)


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
